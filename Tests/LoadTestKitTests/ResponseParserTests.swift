import Testing
@testable import LoadTestKit

@Suite("the response parser")
struct ResponseParserTests {
    /// Feeds `text` in pieces of `piece` bytes; returns the outcome, the bytes used, and the parser.
    static func parse(_ text: String, piece: Int = .max, expectingBody: Bool = true) -> (ResponseParser.Outcome, Int, ResponseParser) {
        var parser = ResponseParser()
        parser.reset(expectingBody: expectingBody)
        let bytes = Array(text.utf8)
        var offset = 0
        var outcome = ResponseParser.Outcome.needMore
        while offset < bytes.count {
            let end = min(bytes.count, offset + piece)
            let (used, result) = bytes[offset..<end].withUnsafeBytes { parser.consume($0) }
            offset += used
            outcome = result
            if result != .needMore { break }
        }
        return (outcome, offset, parser)
    }

    @Test(arguments: [1, 2, 3, 7, 1000])
    func aResponseSplitAnywhereParsesTheSame(piece: Int) {
        let response = "HTTP/1.1 201 Created\r\ncontent-LENGTH: 5\r\nServer-Timing: app;dur=1.5\r\nServer-Timing: lock;dur=0.2\r\n\r\nhello"
        let (outcome, used, parser) = Self.parse(response + "NEXT", piece: piece)
        #expect(outcome == .complete)
        #expect(used == response.utf8.count, "stops at the end of the response")
        #expect(parser.status == 201 && parser.keepAlive)
        #expect(String(decoding: parser.serverTiming, as: UTF8.self) == "app;dur=1.5, lock;dur=0.2")
    }

    @Test(arguments: [1, 5, 1000])
    func chunkedBodiesWithExtensionsAndTrailers(piece: Int) {
        let response = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: t\r\n\r\n"
        let (outcome, used, _) = Self.parse(response, piece: piece)
        #expect(outcome == .complete && used == response.utf8.count)
    }

    @Test func aBodyWithoutLengthLastsUntilTheClose() {
        var (outcome, _, parser) = Self.parse("HTTP/1.0 200 OK\r\n\r\nsome body")
        #expect(outcome == .needMore && !parser.keepAlive)
        let finished = parser.finishAtClose()
        #expect(finished)
        (outcome, _, parser) = Self.parse("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
        let cutShort = !parser.finishAtClose()
        #expect(outcome == .needMore && cutShort, "cut short")
    }

    @Test func responsesWithoutABody() {
        #expect(Self.parse("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", expectingBody: false).0 == .complete, "HEAD")
        #expect(Self.parse("HTTP/1.1 204 No Content\r\n\r\n").0 == .complete)
        #expect(Self.parse("HTTP/1.1 304 Not Modified\r\nContent-Length: 4\r\n\r\n").0 == .complete)
        let (outcome, _, parser) = Self.parse("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        #expect(outcome == .complete && parser.status == 200, "an interim answer is skipped")
    }

    @Test func connectionHeadersDecideKeepAlive() {
        #expect(!Self.parse("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").2.keepAlive)
        #expect(Self.parse("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n").2.keepAlive)
        #expect(!Self.parse("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").2.keepAlive)
    }

    @Test(arguments: [
        "SSH-2.0-OpenSSH\r\n",
        "HTTP/2 200\r\n\r\n",
        "HTTP/1.1 2x0 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
    ])
    func malformedResponsesAreSaidToBe(response: String) {
        guard case .malformed = Self.parse(response).0 else {
            Issue.record("accepted: \(response.debugDescription)")
            return
        }
    }

    @Test func garbageIsNoticedAtOnceAndEndlessHeadersAtTheLimit() {
        guard case .malformed = Self.parse("GARBAGE WITHOUT A LINE END").0 else { Issue.record("garbage accepted"); return }
        let endless = "HTTP/1.1 200 OK\r\n" + String(repeating: "X-Filler: 0123456789\r\n", count: 4000)
        guard case .malformed(let reason) = Self.parse(endless, piece: 1000).0 else { Issue.record("no header limit"); return }
        #expect(reason.contains("headers longer"))
    }
}
