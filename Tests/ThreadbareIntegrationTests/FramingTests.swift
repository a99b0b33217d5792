import Foundation
import Testing

/// Request smuggling is made of messages whose framing two parsers read differently. Every
/// mode refuses each such message before any handler sees it, with its status and a JSON
/// reason, closes the connection, counts the reason in /stats, and serves the next connection;
/// the valid edge cases next to them are served as before.
@Suite("HTTP/1.1 framing as strict as nginx: each invalid message refused in every mode")
struct FramingTests {
    static let modes: [[String]] = [
        ["--mode", "nogil"], ["--mode", "gil"], ["--mode", "subinterpreters"], ["--mode", "prefork", "--workers", "1"],
        ["--mode", "async"], ["--mode", "prefork-async", "--workers", "1"], ["--mode", "nogil-async"],
    ]

    /// The message, the status it gets, and the reason /stats counts.
    static let invalid: [(message: String, status: Int, reason: String)] = [
        ("PUT /cache/f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400, "content_length"),
        ("PUT /cache/f HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!", 400, "content_length"),
        ("PUT /cache/f HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400, "content_length"),
        ("PUT /cache/f HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400,
         "transfer_encoding"),
        ("PUT /cache/f HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, "transfer_encoding"),
        ("PUT /cache/f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400, "transfer_encoding"),
        ("PUT /cache/f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nhello", 501, "unsupported_transfer_coding"),
        ("PUT /cache/f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 501, "unsupported_transfer_coding"),
        ("PUT /cache/f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400, "field_syntax"),
        ("GET /health HTTP/1.1\r\nHost: a\r\nX-A: b\u{0}c\r\n\r\n", 400, "field_syntax"),
        ("GET /health HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400, "field_syntax"),
        ("GET /health HTTP/1.1\r\nHost: a\r\nNo colon here\r\n\r\n", 400, "field_syntax"),
        ("GET /health HTTP/1.1\r\nHost: a\r\nX-A: b\r\n folded\r\n\r\n", 400, "obsolete_folding"),
        ("GET /health HTTP/1.1\r\n\r\n", 400, "host"),
        ("GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "host"),
        ("GET  /health HTTP/1.1\r\nHost: a\r\n\r\n", 400, "request_line"),
        ("GET /health HTTP/1.1 \r\nHost: a\r\n\r\n", 400, "request_line"),
        ("GET /he alth HTTP/1.1\r\nHost: a\r\n\r\n", 400, "request_line"),
        ("G@T /health HTTP/1.1\r\nHost: a\r\n\r\n", 400, "request_line"),
        ("GET /health HTTP/2.0\r\nHost: a\r\n\r\n", 505, "version"),
        ("PUT /cache/f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n", 400, "chunk"),
        ("PUT /cache/f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400, "chunk"),
        ("PUT /cache/f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400, "chunk"),
    ]

    static func refusedFraming(_ server: ServerProcess) throws -> [String: Int] {
        try #require(try server.json("/stats")["refused_framing"] as? [String: Int])
    }

    @Test(arguments: modes)
    func everyInvalidMessageIsRefusedAndTheNextConnectionServed(mode: [String]) throws {
        let server = try ServerProcess(mode)
        defer { server.stop() }
        for (message, status, reason) in Self.invalid {
            let before = try Self.refusedFraming(server)[reason] ?? 0
            // In two pieces as well as in one: a head split across reads is judged whole.
            for pieces in [1, 2] {
                let connection = try server.connect()
                let bytes = Array(message.utf8)
                let half = bytes.count / 2
                try connection.send(pieces == 1 ? bytes : Array(bytes[..<half]))
                if pieces == 2 {
                    Thread.sleep(forTimeInterval: 0.02)
                    try? connection.send(Array(bytes[half...]))
                }
                let reply = try connection.readReply()
                #expect(reply.status == status, "\(message.debugDescription) in \(pieces): \(reply.status)")
                #expect(reply.headers["connection"] == "close")
                #expect(try reply.json()["error"] is String)
                #expect(connection.isClosedByServer(), "\(message.debugDescription) left its connection open")
            }
            #expect(try Self.refusedFraming(server)[reason] == before + 2, "\(message.debugDescription) counted under \(reason)")
            #expect(try server.get("/health").status == 200)
        }
        // An HTTP/1.0 keep-alive client is told "close" once, with no "keep-alive" beside it.
        let old = try server.connect()
        try old.send(Array("GET /he alth HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".utf8))
        let refused = try old.readReply()
        #expect(refused.status == 400)
        #expect(refused.rawHead.lowercased().components(separatedBy: "\r\n").filter { $0.hasPrefix("connection:") } == ["connection: close"],
                "\(refused.rawHead)")
        #expect(old.isClosedByServer())
        // Nothing refused reached a handler: no key was stored.
        #expect(try server.get("/cache/f").status == 404)
    }

    @Test(arguments: modes)
    func theValidEdgeCasesAreServed(mode: [String]) throws {
        let server = try ServerProcess(mode)
        defer { server.stop() }
        // Pipelined: both answered in order on one connection, which stays open.
        let pipelined = try server.connect()
        try pipelined.send(Array("GET /health HTTP/1.1\r\nHost: a\r\n\r\nGET /cache/none HTTP/1.1\r\nHost: a\r\n\r\n".utf8))
        #expect(try pipelined.readReply().status == 200)
        #expect(try pipelined.readReply().status == 404)
        #expect(try pipelined.request("GET", "/health").status == 200)

        // A valid request pipelined before an invalid one is answered first.
        let mixed = try server.connect()
        try mixed.send(Array("GET /health HTTP/1.1\r\nHost: a\r\n\r\nGET /health HTTP/1.1\r\n\r\n".utf8))
        #expect(try mixed.readReply().status == 200)
        #expect(try mixed.readReply().status == 400)
        #expect(mixed.isClosedByServer())

        // A chunked upload, with an extension and a trailer, in pieces.
        let chunked = try server.connect()
        let upload = Array("PUT /cache/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nhel\r\n2\r\nlo\r\n0\r\nX-T: t\r\n\r\n".utf8)
        for piece in stride(from: 0, to: upload.count, by: 9) {
            try chunked.send(Array(upload[piece..<min(piece + 9, upload.count)]))
            Thread.sleep(forTimeInterval: 0.002)
        }
        #expect([200, 201].contains(try chunked.readReply().status))
        #expect(String(decoding: try chunked.request("GET", "/cache/up").body, as: UTF8.self) == "hello")

        // Repeated identical Content-Length values.
        let repeated = try server.connect()
        try repeated.send(Array("PUT /cache/same HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello".utf8))
        #expect([200, 201].contains(try repeated.readReply().status))

        // HTTP/1.0 keep-alive: two requests on one connection.
        let old = try server.connect()
        for _ in 0..<2 {
            try old.send(Array("GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".utf8))
            #expect(try old.readReply().status == 200)
        }

        // Expect: 100-continue: the body follows the interim answer.
        let expecting = try HTTPConnection.connectedSocket(port: server.port, timeoutSeconds: 10)
        defer { close(expecting) }
        Self.sendAll(expecting, "PUT /cache/continued HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        #expect(Self.read(expecting, until: "\r\n\r\n").hasPrefix("HTTP/1.1 100 Continue"))
        Self.sendAll(expecting, "hello")
        #expect(Self.read(expecting, until: "\"bytes\":5}").contains(" 201 Created"))
        #expect(try Self.refusedFraming(server).values.reduce(0, +) == 1, "only the pipelined request without Host")
    }

    static func sendAll(_ fd: Int32, _ text: String) {
        _ = Array(text.utf8).withUnsafeBytes { Foundation.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// Reads until `marker` has arrived (or the connection ends).
    static func read(_ fd: Int32, until marker: String) -> String {
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while !String(decoding: received, as: UTF8.self).contains(marker) {
            let n = recv(fd, &chunk, chunk.count, 0)
            guard n > 0 else { break }
            received += chunk[..<n]
        }
        return String(decoding: received, as: UTF8.self)
    }
}
