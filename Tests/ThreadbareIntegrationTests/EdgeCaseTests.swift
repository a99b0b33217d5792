import Foundation
import Testing

/// Cases an independent review found; each pins the exact input that went wrong.
@Suite("Edge cases of framing, keys, queries and ports")
struct EdgeCaseTests {
    @Test func connectIsAnsweredWithALengthTheClientCanFrame() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let connection = try server.connect()
        // readReply throws when Content-Length is missing; evhttp adds none for CONNECT.
        let reply = try connection.request("CONNECT", "example.com:443")
        #expect((400...499).contains(reply.status))
        #expect(try connection.request("GET", "/health").text == "ok", "the connection must still be in step")
    }

    @Test func canonicallyEquivalentKeysDoNotCrashTheCache() throws {
        let server = try ServerProcess(["--set", "cache.max_bytes=1048576"])
        defer { server.stop() }
        #expect(try server.request("PUT", "/cache/e%CC%81", body: [1]).status == 201)
        #expect(try server.request("PUT", "/cache/%C3%A9", body: [UInt8](repeating: 2, count: 65_534)).status == 201)
        #expect(try server.get("/cache/e%CC%81").body == [1])
        #expect(try server.get("/cache/%C3%A9").body.count == 65_534)
        #expect(try server.json("/cache")["entries"] as? Int == 2)
    }

    @Test func emptyPutKeepsItsContentType() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        #expect(try server.request("PUT", "/cache/k", headers: ["Content-Type": "text/plain"]).status == 201)
        let read = try server.get("/cache/k")
        #expect(read.headers["content-type"] == "text/plain")
        #expect(read.body.isEmpty)
    }

    @Test(arguments: ["/io?ms=5%00junk", "/io?ms%00x=5", "/cpu?work=1%00"])
    func encodedNulInTheQueryIs400(path: String) throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let reply = try server.get(path)
        #expect(reply.status == 400)
        #expect((try reply.json()["error"] as? String)?.contains("NUL") == true)
    }

    @Test func secondServerOnTheSamePortIsRefused() throws {
        let first = try ServerProcess()
        defer { first.stop() }
        let second = try runThreadbare(["serve", "--port", String(first.port)])
        #expect(second.status == 1)
        #expect(second.stderr.contains("cannot bind 127.0.0.1:\(first.port)"), "\(second.stderr)")
    }

    /// A client that leaves with FIN still gets its answer written (and so completed); one that
    /// resets makes that write fail, and only the connection's close settles the request.
    @Test(arguments: [false, true])
    func clientThatLeavesEarlyIsNoLongerInFlight(reset: Bool) throws {
        let server = try ServerProcess()
        defer { server.stop() }
        do {
            let leaving = try server.connect()
            if reset { leaving.resetWhenClosed() }
            try leaving.send(Array("GET /io?ms=200 HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            Thread.sleep(forTimeInterval: 0.05)
        }  // the connection closes here, before its answer
        var inFlight = -1
        for _ in 0..<100 {
            inFlight = try server.json("/stats")["in_flight"] as? Int ?? -1
            if inFlight == 1 { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        #expect(inFlight == 1, "only the /stats request itself")
        #expect(try server.get("/health").text == "ok")
    }
}
