import Foundation

struct HTTPReply {
    let status: Int
    /// Header names in lower case.
    let headers: [String: String]
    let body: [UInt8]
    /// Status line and headers as received, for what the header dictionary folds together.
    var rawHead = ""

    var text: String { String(decoding: body, as: UTF8.self) }

    func json() throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
            throw HTTPConnection.Failure("body is not a JSON object: \(text)")
        }
        return object
    }

    /// A Server-Timing metric's duration in milliseconds.
    func serverTiming(_ metric: String) -> Double? {
        guard let header = headers["server-timing"] else { return nil }
        for part in header.split(separator: ",") {
            let fields = part.trimmingCharacters(in: .whitespaces).split(separator: ";")
            guard fields.first.map(String.init) == metric else { continue }
            for field in fields.dropFirst() where field.hasPrefix("dur=") {
                return Double(field.dropFirst(4))
            }
        }
        return nil
    }
}

/// A keep-alive HTTP/1.1 connection over a plain socket: what tests need, and nothing that
/// would hide what the server really sends. Every reply must carry Content-Length (Threadbare
/// promises it), except 204 and replies to HEAD, which carry no body.
/// Used by one thread at a time; a test may hand a connection to another thread.
final class HTTPConnection: @unchecked Sendable {
    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    private let fd: Int32
    private var buffer: [UInt8] = []

    /// The descriptor is stored only once connected: a class whose init throws after every
    /// property is set runs its deinit, and a second close(fd) would close whatever socket
    /// another test's thread had opened on that number meanwhile (seen as one test reading
    /// another's reply).
    init(port: Int, timeoutSeconds: Int = 30) throws {
        fd = try Self.connectedSocket(port: port, timeoutSeconds: timeoutSeconds)
    }

    /// A close-on-exec TCP socket connected to 127.0.0.1:`port`, whose reads give up after
    /// `timeoutSeconds`; the caller closes it.
    static func connectedSocket(port: Int, timeoutSeconds: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure("socket failed") }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Foundation.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw Failure("connect to port \(port) failed: \(reason)")
        }
        return fd
    }

    deinit { close(fd) }

    /// Makes closing this connection send a TCP reset instead of an orderly FIN, as a client
    /// that crashes or times out does.
    func resetWhenClosed() {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
    }

    func request(_ method: String, _ path: String, headers: [String: String] = [:], body: [UInt8] = []) throws -> HTTPReply {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if !body.isEmpty || method == "PUT" || method == "POST" { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        try send(Array(head.utf8) + body)
        return try readReply(method: method)
    }

    func send(_ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Foundation.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure("send failed: \(String(cString: strerror(errno)))") }
            sent += n
        }
    }

    func readReply(method: String = "GET") throws -> HTTPReply {
        let headEnd = try readUntilHeadEnd()
        let head = String(decoding: buffer[..<headEnd], as: UTF8.self)
        buffer.removeFirst(headEnd + 4)
        var lines = head.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst().split(separator: " ")
        guard statusLine.count >= 2, let status = Int(statusLine[1]) else { throw Failure("bad status line in: \(head)") }
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        if status == 204 || method == "HEAD" {
            return HTTPReply(status: status, headers: headers, body: [], rawHead: head)
        }
        guard let lengthText = headers["content-length"], let length = Int(lengthText) else {
            throw Failure("reply \(status) has no Content-Length:\n\(head)")
        }
        while buffer.count < length { try fill() }
        let body = Array(buffer[..<length])
        buffer.removeFirst(length)
        return HTTPReply(status: status, headers: headers, body: body, rawHead: head)
    }

    /// True when the server has closed its end (a read returns end-of-file).
    func isClosedByServer() -> Bool {
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, 0) == 0
    }

    private func readUntilHeadEnd() throws -> Int {
        let marker: [UInt8] = [13, 10, 13, 10]
        while true {
            if buffer.count >= 4 {
                for i in 0...(buffer.count - 4) where buffer[i..<i + 4].elementsEqual(marker) { return i }
            }
            try fill()
        }
    }

    private func fill() throws {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &chunk, chunk.count, 0)
        guard n > 0 else { throw Failure(n == 0 ? "connection closed by server" : "recv failed: \(String(cString: strerror(errno)))") }
        buffer += chunk[..<n]
    }
}
