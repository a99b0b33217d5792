import Foundation
import Testing

/// `request_read_timeout`: a request must arrive whole within it from its first byte (or from the
/// connection's opening), however its bytes trickle; an idle keep-alive connection is not
/// hurried by it, only by `timeout`.
@Suite("request_read_timeout closes slow senders, not idle keep-alive connections")
struct RequestReadTimeoutTests {
    static let arguments = ["--set", "request_read_timeout=1", "--set", "timeout=30"]

    @Test func aTricklingHeadIsCutOff() throws {
        let server = try ServerProcess(Self.arguments)
        defer { server.stop() }
        let slow = try HTTPConnection(port: server.port, timeoutSeconds: 30)
        try slow.send(Array("GET /health HTTP/1.1\r\n".utf8))
        // One byte every 0.2 s restarts `timeout` each time; only the read deadline ends it.
        var sent = 0
        let trickle = Array("X-Slow: ".utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: 100)
        while sent < trickle.count, (try? slow.send([trickle[sent]])) != nil {
            sent += 1
            Thread.sleep(forTimeInterval: 0.2)
        }
        #expect(sent < trickle.count, "the server kept a trickling request for \(sent) bytes")
        #expect(slow.isClosedByServer())
        #expect(try server.json("/stats")["read_timeouts"] as? Int == 1)
    }

    @Test func aSilentConnectionIsClosedButAnIdleKeepAliveOneIsNot() throws {
        let server = try ServerProcess(Self.arguments)
        defer { server.stop() }
        let silent = try HTTPConnection(port: server.port, timeoutSeconds: 30)
        let idle = try server.connect()
        #expect(try idle.request("GET", "/health").status == 200)
        Thread.sleep(forTimeInterval: 2.5)
        // Silent since it opened: closed. Idle after an answer: its next request has not begun.
        #expect(silent.isClosedByServer())
        #expect(try idle.request("GET", "/health").status == 200)
        #expect(try server.json("/stats")["read_timeouts"] as? Int == 1)
    }
}
