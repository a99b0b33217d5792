import Foundation
import Testing

@Suite("SIGTERM and SIGINT stop gracefully", .serialized)
struct ShutdownTests {
    /// Sends `request` on a new connection, lets the server start it, then signals the server.
    private func signalDuring(_ request: String, signal: Int32 = SIGTERM, on server: ServerProcess) throws -> HTTPConnection {
        let connection = try server.connect()
        try connection.send(Array(request.utf8))
        Thread.sleep(forTimeInterval: 0.2)
        kill(server.pid, signal)
        return connection
    }

    @Test(arguments: [SIGTERM, SIGINT])
    func inFlightRequestFinishesThenExitZero(signal: Int32) throws {
        let server = try ServerProcess()
        let connection = try signalDuring("GET /io?ms=800 HTTP/1.1\r\nHost: x\r\n\r\n", signal: signal, on: server)
        let reply = try connection.readReply()
        #expect(reply.status == 200)
        #expect(try reply.json()["slept_ms"] as? Int == 800)
        // While draining, the server asks the client to close.
        #expect(reply.headers["connection"] == "close")
        #expect(server.stop() == 0)
    }

    @Test func drainingHTTP10KeepAliveGetsOneConnectionHeader() throws {
        let server = try ServerProcess()
        let connection = try signalDuring("GET /io?ms=600 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", on: server)
        let reply = try connection.readReply()
        #expect(reply.status == 200)
        #expect(reply.headers["content-length"] != nil)
        let connectionHeaders = reply.rawHead.lowercased().components(separatedBy: "\r\n").filter { $0.hasPrefix("connection:") }
        #expect(connectionHeaders == ["connection: close"], "\(reply.rawHead)")
        #expect(server.stop() == 0)
    }

    @Test func stopsAcceptingAtOnce() throws {
        let server = try ServerProcess()
        let busy = try signalDuring("GET /io?ms=1000 HTTP/1.1\r\nHost: x\r\n\r\n", on: server)
        Thread.sleep(forTimeInterval: 0.3)
        #expect(throws: (any Error).self) { try server.get("/health") }
        #expect(try busy.readReply().status == 200)
        #expect(server.stop() == 0)
    }

    @Test func gracefulTimeoutCutsOffSlowRequests() throws {
        let server = try ServerProcess(["--graceful-timeout", "0.3"])
        let connection = try server.connect()
        try connection.send(Array("GET /io?ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        Thread.sleep(forTimeInterval: 0.2)
        let started = Date()
        #expect(server.stop() == 0)
        #expect(Date().timeIntervalSince(started) < 3, "exit should follow the 0.3 s graceful timeout, not the 5 s request")
    }
}
