import CLibevent

/// nginx's `client_header_timeout`, over head and body: once a connection opens, or once the
/// first byte of its next request arrives, the whole request must be in within
/// `request_read_timeout`. `timeout` alone restarts with every byte, so a client trickling a byte
/// at a time (slowloris) would keep its connection for ever.
///
/// evhttp says nothing until a request is complete, so the first byte is seen by a callback on
/// the connection's input buffer, enabled only while the connection waits for a request.
/// Loop-confined; the loop frees the connection when `expired` runs.
final class ConnectionReadDeadline {
    let connection: OpaquePointer
    private let input: OpaquePointer
    private var timer: OpaquePointer?
    private var firstByteWatch: OpaquePointer?
    private let length: UnsafePointer<timeval>

    init?(connection: OpaquePointer, base: OpaquePointer, length: UnsafePointer<timeval>,
          expired: @escaping (ConnectionReadDeadline) -> Void) {
        guard let input = bufferevent_get_input(evhttp_connection_get_bufferevent(connection)) else { return nil }
        self.connection = connection
        self.input = input
        self.length = length
        self.expired = expired
        let this = Unmanaged.passUnretained(self).toOpaque()
        timer = event_new(base, -1, 0, { _, _, arg in
            let deadline = Unmanaged<ConnectionReadDeadline>.fromOpaque(arg!).takeUnretainedValue()
            deadline.expired(deadline)
        }, this)
        firstByteWatch = evbuffer_add_cb(input, { _, info, arg in
            guard let info, info.pointee.n_added > 0 else { return }
            Unmanaged<ConnectionReadDeadline>.fromOpaque(arg!).takeUnretainedValue().arm()
        }, this)
        guard timer != nil, firstByteWatch != nil else { return nil }
        arm()
    }

    private let expired: (ConnectionReadDeadline) -> Void

    /// A request is being read: it must be complete in time.
    private func arm() {
        evbuffer_cb_clear_flags(input, firstByteWatch, UInt32(EVBUFFER_CB_ENABLED))
        event_add(timer, length)
    }

    /// A request has been read whole.
    func requestRead() {
        event_del(timer)
    }

    /// Its answer has gone out: the next request's time starts with its first byte, which may
    /// already be here (pipelined).
    func awaitNextRequest() {
        if evbuffer_get_length(input) > 0 {
            arm()
        } else {
            evbuffer_cb_set_flags(input, firstByteWatch, UInt32(EVBUFFER_CB_ENABLED))
        }
    }

    /// Stops watching, as the connection closes: from its close callback, while evhttp has yet
    /// to let go of its bufferevent, so the input buffer is still there to take the watch off.
    func cancel() {
        if let firstByteWatch { evbuffer_remove_cb_entry(input, firstByteWatch) }
        firstByteWatch = nil
        if let timer { event_free(timer) }
        timer = nil
    }

    /// The connection went without its close being heard, and its input buffer with it (and the
    /// watch, which the buffer owned): only the timer is left to stop.
    func abandon() {
        firstByteWatch = nil
        cancel()
    }

    deinit {
        cancel()
    }
}
