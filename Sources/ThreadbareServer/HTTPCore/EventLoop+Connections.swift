import CLibevent
#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization

/// A loop's connections, from accept to close: counting them (silent ones too), the
/// `max_connections` limit, each request's read deadline, and pausing accepts while accept(2)
/// fails or while the loop holds all the connections it serves at once (`accept_while_busy`). All of it runs on the loop's thread.
extension EventLoop {
    /// The callbacks evhttp and its listener call for a connection; set once, at start.
    func watchConnections(bound: OpaquePointer) {
        let this = Unmanaged.passUnretained(self).toOpaque()
        evhttp_set_bevcb(http, { base, arg in
            Unmanaged<EventLoop>.fromOpaque(arg!).takeUnretainedValue().accepted(base!)
        }, this)
        adoptEvent = event_new(base, -1, 0, { _, _, arg in
            Unmanaged<EventLoop>.fromOpaque(arg!).takeUnretainedValue().adoptNewcomers()
        }, this)
        resumeAcceptingEvent = event_new(base, -1, 0, { _, _, arg in
            Unmanaged<EventLoop>.fromOpaque(arg!).takeUnretainedValue().resumeAccepting()
        }, this)
        // The error callback's argument is evhttp's, not ours: the loop is found by its evhttp.
        Self.byHTTP.withLock { $0[UInt(bitPattern: http)] = LoopReference(loop: self) }
        evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(bound), { _, http in
            let error = errno
            EventLoop.byHTTP.withLock { $0[UInt(bitPattern: http)]?.loop }?.acceptFailed(error)
        })
    }

    /// Unowned, not weak: a weak reference gives the loop a side table, and every retain and
    /// release of it (several per request) then takes Swift's slow path. An entry outlives its
    /// loop, harmlessly: the listener calls back only while its loop turns, and the evhttp it
    /// is keyed by is never freed (the process ends first).
    fileprivate struct LoopReference: @unchecked Sendable { unowned(unsafe) let loop: EventLoop }
    fileprivate static let byHTTP = Mutex<[UInt: LoopReference]>([:])

    /// evhttp's hook for making an accepted connection's bufferevent. The connection it is for
    /// does not exist yet, so it is adopted once this turn's accepting is done.
    fileprivate func accepted(_ base: OpaquePointer) -> OpaquePointer? {
        counters.acceptedConnections.add(1)
        if acceptPausesThisEpisode > 0 {
            logger.notice("accepting connections again", metadata: ["pauses": "\(acceptPausesThisEpisode)"])
            acceptPausesThisEpisode = 0
        }
        guard let bufferevent = bufferevent_socket_new(base, -1, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue)) else { return nil }
        bufferevent_incref(bufferevent)
        newcomers.append(bufferevent)
        if newcomers.count == 1 { event_active(adoptEvent, 0, 0) }
        // The listener accepts until the backlog is empty, unless its callback disables it;
        // this is that callback, so a burst stops at the connection that fills the loop.
        if let acceptsUpTo, !acceptPausedWhileBusy, let boundSocket, heldConnections >= acceptsUpTo {
            evconnlistener_disable(evhttp_bound_socket_get_listener(boundSocket))
            acceptPausedWhileBusy = true
        }
        return bufferevent
    }

    /// Connections open plus those accepted this turn and not yet adopted.
    private var heldConnections: Int { counters.openConnections.current + newcomers.count }

    /// Accepting resumes once the loop holds fewer than `acceptsUpTo` connections. A newcomer
    /// that closed before it was adopted is never counted open, so adoption looks again too.
    private func acceptIfNoLongerBusy() {
        guard acceptPausedWhileBusy, let acceptsUpTo, heldConnections < acceptsUpTo else { return }
        acceptPausedWhileBusy = false
        // A failed accept's retry, if one is pending, enables the listener when it fires.
        guard let boundSocket, event_pending(resumeAcceptingEvent, Int16(EV_TIMEOUT), nil) == 0 else { return }
        evconnlistener_enable(evhttp_bound_socket_get_listener(boundSocket))
    }

    /// evhttp gives no word of a connection before its first request, nor of one that closes
    /// without sending any. By now each newcomer's evhttp connection exists and is its
    /// bufferevent's callback argument, so the loop counts it from here and hears of its close.
    /// A bufferevent whose callbacks are gone was let go already (evhttp clears them as it frees
    /// one); the reference taken at accept kept it valid to look at.
    fileprivate func adoptNewcomers() {
        var arrived = spareNewcomers
        swap(&arrived, &newcomers)
        for bufferevent in arrived {
            var argument: UnsafeMutableRawPointer?
            bufferevent_getcb(bufferevent, nil, nil, nil, &argument)
            if let argument, evhttp_connection_get_bufferevent(OpaquePointer(argument)) == bufferevent {
                let connection = OpaquePointer(argument)
                let admitted = connections.admit(connection, withRequest: false)
                if admitted.isNew { opened(connection, replacing: admitted.replaced) }
            }
            _ = bufferevent_decref(bufferevent)
        }
        arrived.removeAll(keepingCapacity: true)
        spareNewcomers = arrived
        noteAdoptedWhileDraining()
        acceptIfNoLongerBusy()
    }

    /// Counts a connection open and asks to hear of its close. One opened while the process has
    /// `max_connections` open is kept just long enough to refuse its first request with 503
    /// (the orderly refusal), and closed if it stays silent for a second.
    func opened(_ connection: OpaquePointer, replacing replaced: ConnectionTable.Entry?) {
        if let replaced {
            if replaced.unanswered { inFlight.subtract(1) }
            replaced.readDeadline?.abandon()
            replaced.framing?.abandon()
        } else {
            counters.openConnections.add(1)
        }
        evhttp_connection_set_closecb(connection, { connection, arg in
            Unmanaged<EventLoop>.fromOpaque(arg!).takeUnretainedValue().closed(connection!)
        }, Unmanaged.passUnretained(self).toOpaque())
        let overLimit = counters.openConnections.current > maxConnections
        if overLimit {
            connections.markOverLimit(connection)
            counters.refusedConnections.add(1)
        }
        if draining || overLimit { evhttp_connection_set_timeout(connection, Self.drainingIdleSeconds) }
        if let framing = FramingGuard(connection: connection, mostHeadBytes: maxHeaderBytes) {
            connections.setFraming(framing, for: connection)
        }
        if let requestReadTimeout, let deadline = ConnectionReadDeadline(
            connection: connection, base: base, length: requestReadTimeout, expired: { [unowned self] in self.readTimedOut($0) }) {
            connections.setReadDeadline(deadline, for: connection)
        }
    }

    /// The request took too long to arrive: the connection is closed, as nginx does after
    /// `client_header_timeout` (it logs a 408 and sends nothing). Whatever evhttp had read of the
    /// request goes with it; no handler has it.
    fileprivate func readTimedOut(_ deadline: ConnectionReadDeadline) {
        counters.readTimeouts.add(1)
        withExtendedLifetime(deadline) {
            evhttp_connection_free(deadline.connection)
        }
    }

    /// accept(2) failed for a reason other than a retry (most often EMFILE: out of
    /// descriptors). The pending connection stays queued, so a listener left enabled would be
    /// told of it again at once and spin (libevent #363); nginx pauses its accepts too.
    fileprivate func acceptFailed(_ error: Int32) {
        guard let boundSocket else { return }
        evconnlistener_disable(evhttp_bound_socket_get_listener(boundSocket))
        counters.acceptPauses.add(1)
        if acceptPausesThisEpisode == 0 {
            logger.warning("accept failed: \(String(cString: strerror(error))); pausing accepts, retrying every \(Self.acceptRetryMilliseconds) ms",
                           metadata: ["open_connections": "\(counters.openConnections.current)"])
        }
        acceptPausesThisEpisode += 1
        var retry = timeval(tv_sec: 0, tv_usec: Self.acceptRetryMilliseconds * 1_000)
        event_add(resumeAcceptingEvent, &retry)
    }

    static let acceptRetryMilliseconds = 100

    fileprivate func resumeAccepting() {
        guard let boundSocket, !acceptPausedWhileBusy else { return }
        evconnlistener_enable(evhttp_bound_socket_get_listener(boundSocket))
    }

    func answered(_ connection: OpaquePointer) {
        if connections.markAnswered(connection) { inFlight.subtract(1) }
        connections.entry(for: connection)?.readDeadline?.awaitNextRequest()
    }

    func closed(_ connection: OpaquePointer) {
        guard let entry = connections.remove(connection) else { return }
        entry.readDeadline?.cancel()
        entry.framing?.cancel()
        if entry.unanswered { inFlight.subtract(1) }
        counters.openConnections.subtract(1)
        acceptIfNoLongerBusy()
    }
}
