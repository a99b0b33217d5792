import CLibevent
#if canImport(Glibc)
import Glibc
#endif

/// Where the load goes: an http:// or https:// URL taken apart into what a connection and a
/// request need.
public struct Target: Sendable, Equatable {
    public let host: String
    public let port: UInt16
    /// https: every connection speaks TLS.
    public let secure: Bool
    /// Path and query, as sent in the request line.
    public let pathAndQuery: String

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    /// Accepts `http[s]://HOST[:PORT][/PATH][?QUERY]`; HOST may be a name, IPv4 or [IPv6].
    public init(url: String) throws(Invalid) {
        if url.hasPrefix("https://") {
            secure = true
        } else if url.hasPrefix("http://") {
            secure = false
        } else {
            throw Invalid(description: "'\(url)': only http:// and https:// URLs are supported")
        }
        let rest = url.dropFirst(secure ? "https://".count : "http://".count)
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var path = String(rest[authorityEnd...])
        if path.isEmpty || path.first == "?" { path = "/" + path }
        var host = Substring(authority)
        var port: UInt16 = secure ? 443 : 80
        if host.first == "[" {
            guard let close = host.firstIndex(of: "]") else { throw Invalid(description: "'\(url)': unclosed [ in the host") }
            let after = host[host.index(after: close)...]
            host = host[host.index(after: host.startIndex)..<close]
            if !after.isEmpty {
                guard after.first == ":", let parsed = UInt16(after.dropFirst()), parsed > 0 else {
                    throw Invalid(description: "'\(url)': bad port")
                }
                port = parsed
            }
        } else if let colon = host.lastIndex(of: ":") {
            guard let parsed = UInt16(host[host.index(after: colon)...]), parsed > 0 else {
                throw Invalid(description: "'\(url)': bad port")
            }
            port = parsed
            host = host[..<colon]
        }
        guard !host.isEmpty else { throw Invalid(description: "'\(url)': no host") }
        guard !path.contains(where: { $0 == " " || $0.isNewline }) else {
            throw Invalid(description: "'\(url)': the path must be percent-encoded (no spaces or line breaks)")
        }
        self.host = String(host)
        self.port = port
        pathAndQuery = path
    }

    /// The Host header: the port only when it is not the scheme's own.
    var hostHeader: String {
        let name = host.contains(":") ? "[\(host)]" : host
        return port == (secure ? 443 : 80) ? name : "\(name):\(port)"
    }

    /// Scheme, host and port, which a path completes into a URL.
    public var origin: String { (secure ? "https://" : "http://") + hostHeader }
}

/// A target's address, looked up once before a run so connections open without DNS.
struct ResolvedAddress: @unchecked Sendable {
    private var storage = sockaddr_storage()
    let length: socklen_t
    let family: Int32

    init(_ target: Target) throws {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(target.host, String(target.port), &hints, &list)
        guard rc == 0, let info = list else {
            throw LoadError("cannot resolve \(target.host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        family = info.pointee.ai_family
        length = info.pointee.ai_addrlen
        withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: UnsafeRawBufferPointer(start: info.pointee.ai_addr, count: Int(length))) }
    }

    /// A new TCP socket of the address's family; `flags` such as SOCK_NONBLOCK.
    func makeSocket(flags: Int32 = 0) -> Int32 {
        socket(family, Int32(SOCK_STREAM.rawValue) | flags, 0)
    }

    func withSockaddr<Result>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> Result) -> Result {
        withUnsafeBytes(of: storage) { body($0.baseAddress!.assumingMemoryBound(to: sockaddr.self), length) }
    }
}
