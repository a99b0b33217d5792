import CLibevent

/// The client connections one loop has open, by socket number: each one's number, whether its
/// current request is unanswered, and the evhttp connection itself. evhttp offers no
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

    /// Enters a request: its connection's entry is marked unanswered (`tracked` is false only
    /// for a connection without a socket, which has no entry). `isNew` when the connection has
    /// not been seen; `replaced` is an unseen-closed entry it displaced (to settle as closed).
    mutating func admit(_ connection: OpaquePointer) -> (number: Int, tracked: Bool, isNew: Bool, replaced: Entry?) {
        let socket = Self.socket(of: connection)
        guard socket >= 0 else { return (loopIndex, false, false, nil) }
        var address: UnsafeMutablePointer<CChar>?
        var peerPort: UInt16 = 0
        evhttp_connection_get_peer(connection, &address, &peerPort)
        if socket >= entries.count {
            entries += repeatElement(nil, count: socket + 1 - entries.count)
        }
        if let known = entries[socket], known.peerPort == peerPort, known.connection == connection {
            entries[socket]!.unanswered = true
            return (known.number, true, false, nil)
        }
        let replaced = entries[socket]
        let number = numbered * loopCount + loopIndex
        numbered += 1
        entries[socket] = Entry(connection: connection, peerPort: peerPort, number: number, unanswered: true)
        return (number, true, true, replaced)
    }

    /// Marks the connection's request answered; true if it was unanswered.
    mutating func markAnswered(_ connection: OpaquePointer) -> Bool {
        let socket = Self.socket(of: connection)
        guard entries.indices.contains(socket), let entry = entries[socket], entry.connection == connection else { return false }
        entries[socket]!.unanswered = false
        return entry.unanswered
    }

    /// Forgets a closing connection; returns its entry.
    mutating func remove(_ connection: OpaquePointer) -> Entry? {
        let socket = Self.socket(of: connection)
        guard entries.indices.contains(socket), let entry = entries[socket], entry.connection == connection else { return nil }
        entries[socket] = nil
        return entry
    }

    var connections: [OpaquePointer] { entries.compactMap { $0?.connection } }
}
