import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A tiny HTTP server inside the test, a thread per connection, whose answers the test
/// writes byte for byte: the cases a real server will not produce on demand (a response cut
/// short, garbage, a stall of a known length).
final class ScriptedServer: @unchecked Sendable {
    /// What to do with one request: send these bytes, then close the connection or not.
    struct Answer {
        var bytes: [UInt8]
        var close = false

        static func status(_ code: Int, body: String = "ok", headers: String = "") -> Answer {
            Answer(bytes: Array("HTTP/1.1 \(code) X\r\nContent-Length: \(body.utf8.count)\r\n\(headers)\r\n\(body)".utf8))
        }
    }

    let port: Int
    private let listener: Int32
    private let answer: @Sendable (_ requestLine: String) -> Answer
    /// Sent on every connection as soon as it is accepted, before any request (then closed).
    private let greeting: [UInt8]?
    private let lock = NSLock()
    private var stopped = false
    private var listenerClosed = false
    private var open: Set<Int32> = []

    init(greeting: [UInt8]? = nil, answer: @escaping @Sendable (_ requestLine: String) -> Answer) throws {
        self.answer = answer
        self.greeting = greeting
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        self.listener = listener
        var on: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &on, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listener, 128) == 0 else {
            close(listener)
            throw POSIXError(.EADDRINUSE)
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = getsockname(listener, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    var url: String { "http://127.0.0.1:\(port)" }

    func stop() {
        // Only shut down here; the accept loop closes the listener when accept fails. Closing
        // it here could let the loop accept on a number another test has reused meanwhile.
        lock.withLock {
            stopped = true
            for fd in open { shutdown(fd, Int32(SHUT_RDWR)) }
            if !listenerClosed { shutdown(listener, Int32(SHUT_RDWR)) }
        }
    }

    private func acceptLoop() {
        defer {
            lock.withLock {
                listenerClosed = true
                close(listener)
            }
        }
        while true {
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { return }
            let admitted = lock.withLock { stopped ? false : open.insert(fd).inserted }
            guard admitted else { close(fd); return }
            Thread.detachNewThread { [self] in serve(fd) }
        }
    }

    private func serve(_ fd: Int32) {
        defer {
            lock.withLock { _ = open.remove(fd) }
            close(fd)
        }
        if let greeting {
            _ = greeting.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            return
        }
        var pending: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            // Requests here have no body: each ends at its blank line.
            while let end = pending.firstRange(of: Array("\r\n\r\n".utf8)) {
                let head = String(decoding: pending[..<end.lowerBound], as: UTF8.self)
                pending.removeSubrange(..<end.upperBound)
                let reply = answer(String(head.prefix { $0 != "\r" }))
                var sent = 0
                while sent < reply.bytes.count {
                    let count = reply.bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    if count <= 0 { return }
                    sent += count
                }
                if reply.close { return }
            }
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { return }
            pending += buffer[..<count]
        }
    }
}

/// Lines the scripted server saw, from its connection threads.
final class LockedLines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []

    func append(_ line: String) { lock.withLock { lines.append(line) } }
    var all: [String] { lock.withLock { lines } }
}
