import Testing
@testable import ThreadbareServer

/// The framing rules on their own, head by head; the integration tests send the same bytes to
/// every mode.
@Suite("RFC 9112 framing: what a request's head and chunked body must be")
struct RequestFramingTests {
    static func judge(_ head: String) -> Result<RequestFraming.Head, RequestFraming.Violation> {
        Array(head.utf8).withUnsafeBytes { RequestFraming.judge($0) }
    }

    /// Heads the RFCs allow, with the body each one announces.
    @Test(arguments: [
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1, RequestFraming.Body.length(0)),
        ("GET / HTTP/1.0\r\n\r\n", 0, .length(0)),
        ("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 1, .length(0)),
        ("GET / HTTP/1.1\nHost: a\n\n", 1, .length(0)),
        ("PUT /cache/k HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", 1, .length(5)),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", 1, .length(5)),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 005\r\n\r\n", 1, .length(5)),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 1, .chunked),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n", 1, .chunked),
        ("GET /a?b=c%20d HTTP/1.1\r\nHost:\r\nX-Empty:\r\nX-Tab: a\tb\r\nX-Obs: caf\u{E9}\r\n\r\n", 1, .length(0)),
        ("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0, .length(0)),
        ("POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", 1, .length(3)),
    ])
    func validHeadsAreAccepted(head: String, minor: Int, body: RequestFraming.Body) throws {
        let judged = try Self.judge(head).get()
        #expect(judged == RequestFraming.Head(minorVersion: minor, body: body))
    }

    /// The set the issue was measured with against nginx, and more of the same kind.
    @Test(arguments: [
        ("PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400, RequestFraming.Reason.contentLength),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400, .contentLength),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400, .contentLength),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400, .contentLength),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", 400, .contentLength),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400, .contentLength),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400, .contentLength),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400, .transferEncoding),
        ("PUT /k HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, .transferEncoding),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501, .unsupportedCoding),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501, .unsupportedCoding),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, .unsupportedCoding),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400, .transferEncoding),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", 400, .transferEncoding),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400, .transferEncoding),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n", 400, .fieldSyntax),
        ("GET / HTTP/1.1\r\nHost: a\r\nX Y: z\r\n\r\n", 400, .fieldSyntax),
        ("GET / HTTP/1.1\r\nHost: a\r\n: z\r\n\r\n", 400, .fieldSyntax),
        ("GET / HTTP/1.1\r\nHost: a\r\nX-A b\r\n\r\n", 400, .fieldSyntax),
        ("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\u{0}c\r\n\r\n", 400, .fieldSyntax),
        ("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n", 400, .fieldSyntax),
        ("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\u{1}c\r\n\r\n", 400, .fieldSyntax),
        ("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", 400, .obsoleteFolding),
        ("GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400, .fieldSyntax),
        ("GET / HTTP/1.1\r\n\r\n", 400, .host),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, .host),
        ("GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400, .host),
        ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, .requestLine),
        ("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, .requestLine),
        ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, .requestLine),
        ("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, .requestLine),
        ("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, .requestLine),
        ("GET /\u{1} HTTP/1.1\r\nHost: a\r\n\r\n", 400, .requestLine),
        ("GET /caf\u{E9} HTTP/1.1\r\nHost: a\r\n\r\n", 400, .requestLine),
        ("PUT /k HTTP/1.1\r\nHost: a\r\nContent-Length: 0000000000000000005\r\n\r\n", 400, .contentLength),
        ("GET / http/1.1\r\nHost: a\r\n\r\n", 400, .requestLine),
        ("GET / HTTP/1.1\rHost: a\r\n\r\n", 400, .requestLine),
        ("GET / HTTP/1\r\nHost: a\r\n\r\n", 400, .requestLine),
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, .version),
        ("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, .version),
        ("GET / HTTP/0.9\r\n\r\n", 505, .version),
    ])
    func invalidHeadsAreRefused(head: String, status: Int, reason: RequestFraming.Reason) {
        guard case .failure(let violation) = Self.judge(head) else {
            Issue.record("accepted: \(head.debugDescription)")
            return
        }
        #expect(violation.status == status, "\(head.debugDescription): \(violation.message)")
        #expect(violation.reason == reason, "\(head.debugDescription): \(violation.message)")
    }

    static func read(_ pieces: [String]) -> ChunkedBodyReader.Progress {
        var reader = ChunkedBodyReader()
        var progress = ChunkedBodyReader.Progress.needsMore
        for piece in pieces {
            progress = Array(piece.utf8).withUnsafeBytes { reader.consume($0) }
            if progress != .needsMore { return progress }
        }
        return progress
    }

    @Test func aChunkedBodyEndsAfterItsLastChunkAndTrailers() {
        #expect(Self.read(["5\r\nhello\r\n0\r\n\r\nGET"]) == .ended(consumed: 15))
        #expect(Self.read(["5;name=value;flag ; q=\"a \\\"b\\\"\"\r\nhello\r\n", "00\r\nX-Trailer: t\r\n\r\n"]) == .ended(consumed: 20))
        #expect(Self.read(["A\r\n0123456789\r\n0\r\n\r\n"]) == .ended(consumed: 20))
        // Byte by byte, as a slow client sends it.
        var reader = ChunkedBodyReader()
        let body = Array("3\r\nabc\r\n0\r\n\r\n".utf8)
        for (index, byte) in body.enumerated() {
            let progress = [byte].withUnsafeBytes { reader.consume($0) }
            #expect(progress == (index == body.count - 1 ? .ended(consumed: 1) : .needsMore), "byte \(index)")
        }
        #expect(Self.read(["5\r\nhel"]) == .needsMore)
    }

    @Test(arguments: [
        "x\r\nhello\r\n0\r\n\r\n", "-5\r\nhello\r\n0\r\n\r\n", "0x5\r\nhello\r\n0\r\n\r\n", " 5\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloX\r\n0\r\n\r\n", "5\r\nhello\n0\r\n\r\n", "5\nhello\r\n0\r\n\r\n", "5\rhello\r\n0\r\n\r\n",
        "5;\r\nhello\r\n0\r\n\r\n", "5;a=\r\nhello\r\n0\r\n\r\n", "5;a=\"b\r\nhello\r\n0\r\n\r\n", "5 x\r\nhello\r\n0\r\n\r\n",
        "1000000000000000\r\n", "0\r\nX Bad: t\r\n\r\n", "0\r\nX-A: \u{0}\r\n\r\n", "0\r\nContent-Length: 5\r\n\r\n",
        "0\r\nauthorization: Bearer x\r\n\r\n",
    ])
    func aMalformedChunkIsRefused(body: String) {
        guard case .refused(let violation) = Self.read([body]) else {
            Issue.record("not refused: \(body.debugDescription)")
            return
        }
        #expect(violation.status == 400 && violation.reason == .chunk)
    }

    @Test func aLongChunkLineIsRefused() {
        #expect(Self.read(["5;" + String(repeating: "a", count: 5000) + "\r\n"]) != .needsMore)
    }
}
