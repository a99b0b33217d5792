import CLibevent

/// The client connections one loop has open, by socket number: each one's number, whether its
/// current request is unanswered, whether it was opened over the connection limit, and the
/// evhttp connection itself. evhttp offers no
/// per-connection storage and reuses both socket numbers and connection memory, so an entry is
/// matched by socket and the peer's port; a request on a socket whose peer port changed comes
/// from a new connection (the old one's close went unseen). Loop-confined.
struct ConnectionTable {
    struct Entry {
        let connection: OpaquePointer
        let peerPort: UInt16
        /// Connections are numbered in the order the loops first see them.
        let number: Int
        var unanswered = false
        /// Opened while the process had `max_connections` open: its first request is refused.
        var overLimit = false
        var readDeadline: ConnectionReadDeadline?
        var framing: FramingGuard?
    }

    private var entries: [Entry?] = []
    private var numbered = 0
    private let loopIndex: Int
    private let loopCount: Int

    init(loopIndex: Int, loopCount: Int) {
        self.loopIndex = loopIndex
        self.loopCount = loopCount
    }

    static func socket(of connection: OpaquePointer) -> Int {
        Int(bufferevent_getfd(evhttp_connection_get_bufferevent(connection)))
    }

    /// Enters a connection as it opens (`withRequest` false) or as a request arrives on it (true,
    /// marking it unanswered). `entry` is nil only for a connection without a socket, which has
    /// none. `isNew` when the connection has not been seen; `replaced` is an unseen-closed entry
    /// it displaced (to settle as closed).
    mutating func admit(_ connection: OpaquePointer, withRequest: Bool) -> (entry: Entry?, isNew: Bool, replaced: Entry?) {
        let socket = Self.socket(of: connection)
        guard socket >= 0 else { return (nil, false, nil) }
        var address: UnsafeMutablePointer<CChar>?
        var peerPort: UInt16 = 0
        evhttp_connection_get_peer(connection, &address, &peerPort)
        if socket >= entries.count {
            entries += repeatElement(nil, count: socket + 1 - entries.count)
        }
        if let known = entries[socket], known.peerPort == peerPort, known.connection == connection {
            if withRequest { entries[socket]!.unanswered = true }
            return (entries[socket], false, nil)
        }
        let replaced = entries[socket]
        let number = numbered * loopCount + loopIndex
        numbered += 1
        let entry = Entry(connection: connection, peerPort: peerPort, number: number, unanswered: withRequest)
        entries[socket] = entry
        return (entry, true, replaced)
    }

    /// Marks a connection as opened over the connection limit.
    mutating func markOverLimit(_ connection: OpaquePointer) {
        if let socket = slot(of: connection) { entries[socket]!.overLimit = true }
    }

    mutating func setReadDeadline(_ deadline: ConnectionReadDeadline, for connection: OpaquePointer) {
        if let socket = slot(of: connection) { entries[socket]!.readDeadline = deadline }
    }

    mutating func setFraming(_ framing: FramingGuard, for connection: OpaquePointer) {
        if let socket = slot(of: connection) { entries[socket]!.framing = framing }
    }

    func entry(for connection: OpaquePointer) -> Entry? {
        slot(of: connection).flatMap { entries[$0] }
    }

    /// Marks the connection's request answered; true if it was unanswered.
    mutating func markAnswered(_ connection: OpaquePointer) -> Bool {
        guard let socket = slot(of: connection) else { return false }
        defer { entries[socket]!.unanswered = false }
        return entries[socket]!.unanswered
    }

    /// Forgets a closing connection; returns its entry.
    mutating func remove(_ connection: OpaquePointer) -> Entry? {
        guard let socket = slot(of: connection) else { return nil }
        defer { entries[socket] = nil }
        return entries[socket]
    }

    /// The connection's place in `entries`, if it has an entry.
    private func slot(of connection: OpaquePointer) -> Int? {
        let socket = Self.socket(of: connection)
        guard entries.indices.contains(socket), entries[socket]?.connection == connection else { return nil }
        return socket
    }

    var connections: [OpaquePointer] { entries.compactMap { $0?.connection } }
}
