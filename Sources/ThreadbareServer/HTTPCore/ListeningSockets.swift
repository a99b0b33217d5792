#if canImport(Glibc)
import Glibc
#endif

public struct SocketError: Error, CustomStringConvertible {
    public let description: String
}

/// Listening sockets bound to one address.
///
/// Each event loop gets a socket of its own with SO_REUSEPORT, so the kernel spreads new
/// connections across loops. Several event bases polling one shared listening fd would all wake
/// for every connection and, in practice, one of them wins nearly every time (libevent #826).
public struct ListeningSockets: Sendable {
    /// One per event loop.
    public let fds: [Int32]
    public let host: String
    public let port: Int
    /// Passed in (socket activation, or a reload in place) rather than bound here.
    public let inherited: Bool
    /// The first `distinctCount` descriptors are different sockets; any after them are copies
    /// of those for loops that share one.
    let distinctCount: Int

    init(fds: [Int32], host: String, port: Int, inherited: Bool = false, distinctCount: Int? = nil) {
        self.fds = fds
        self.host = host
        self.port = port
        self.inherited = inherited
        self.distinctCount = distinctCount ?? fds.count
    }

    public func close() {
        fds.forEach { _ = Glibc.close($0) }
    }

    /// `http://HOST:PORT`, with brackets around an IPv6 host.
    public var url: String {
        "http://\(host.contains(":") ? "[\(host)]" : host):\(port)"
    }

    /// Binds `count` sockets to `host:port`; with port 0 the first bind picks a free port and the
    /// others join it. `joining` adds sockets to a port this process already listens on.
    public static func bind(host: String, port: Int, count: Int, backlog: Int, joining: Bool = false) throws -> ListeningSockets {
        precondition(count >= 1)
        if port != 0 && !joining { try ensureNotInUse(host: host, port: port) }
        var fds: [Int32] = []
        var boundPort = port
        do {
            for _ in 0..<count {
                let fd = try bindOne(host: host, port: boundPort, reusePort: true)
                fds.append(fd)
                guard listen(fd, Int32(backlog)) == 0 else {
                    throw SocketError(description: "cannot listen on \(host):\(boundPort): \(String(cString: strerror(errno)))")
                }
                if boundPort == 0 { boundPort = localPort(of: fd) }
            }
        } catch {
            fds.forEach { _ = Glibc.close($0) }
            throw error
        }
        return ListeningSockets(fds: fds, host: host, port: boundPort)
    }

    /// SO_REUSEPORT would let this process silently share a port with another server of the
    /// same user (a stale instance, say) and split the traffic with it. A plain socket cannot
    /// bind a port anyone listens on, so trying one first turns that into "address in use".
    private static func ensureNotInUse(host: String, port: Int) throws {
        let probe = try bindOne(host: host, port: port, reusePort: false)
        _ = Glibc.close(probe)
    }

    private static func bindOne(host: String, port: Int, reusePort: Bool) throws -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let info = list else {
            throw SocketError(description: "cannot resolve host '\(host)': \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }

        let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError(description: "socket(): \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if reusePort {
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        guard Glibc.bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            let reason = String(cString: strerror(errno))
            _ = Glibc.close(fd)
            throw SocketError(description: "cannot bind \(host):\(port): \(reason)")
        }
        return fd
    }

    private static func localPort(of fd: Int32) -> Int {
        localAddress(of: fd).port
    }

    /// The numeric address and port a socket is bound to.
    static func localAddress(of fd: Int32) -> (host: String, port: Int) {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(fd, $0, &length) }
        }
        let family = storage.ss_family
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        return withUnsafePointer(to: &storage) { pointer in
            if family == sa_family_t(AF_INET6) {
                return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { address in
                    var raw = address.pointee.sin6_addr
                    inet_ntop(AF_INET6, &raw, &text, socklen_t(text.count))
                    return (text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }, Int(UInt16(bigEndian: address.pointee.sin6_port)))
                }
            }
            return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { address in
                var raw = address.pointee.sin_addr
                inet_ntop(AF_INET, &raw, &text, socklen_t(text.count))
                return (text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }, Int(UInt16(bigEndian: address.pointee.sin_port)))
            }
        }
    }
}
