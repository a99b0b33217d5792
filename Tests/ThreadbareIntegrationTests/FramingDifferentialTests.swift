import Foundation
import Testing
@testable import ThreadbareServer

/// Valid requests, mutated a few bytes or lines at a time from a seed, judged by Threadbare's
/// framing rules and by h11 (Python's strict HTTP/1.1 parser, from PyPI, in a virtual
/// environment this test sets up under .build/h11). Threadbare may accept a message only if h11
/// accepts it too, apart from the differences listed in `exceptions`, each on purpose. `make
/// fuzz` runs it for FUZZ_SECONDS from a fresh seed; FUZZ_SEED=N replays one.
@Suite("Framing rules against h11, on mutated requests")
struct FramingDifferentialTests {
    enum Verdict: String { case accept, reject, incomplete }

    /// Where Threadbare accepts what h11 refuses, deliberately.
    static let exceptions: [(name: String, applies: @Sendable ([UInt8]) -> Bool)] = [
        // RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line;
        // h11 refuses one.
        ("an empty line before the request line", { $0.first == ASCII.lineFeed || $0.starts(with: [ASCII.carriageReturn, ASCII.lineFeed]) }),
        // RFC 9110 §8.6 speaks of the same decimal value; h11 compares the digits as text.
        ("Content-Length values equal as numbers, written differently", { message in
            let values = fieldValues(message, "content-length").flatMap { $0.split(separator: ",") }
                .map { $0.trimmingCharacters(in: .whitespaces) }
            return Set(values).count > 1 && Set(values.compactMap { Int($0) }).count == 1
        }),
        // RFC 9112 §7.1.1 allows BWS around a chunk extension's ";" and "="; h11 does not.
        ("whitespace inside a chunk extension", { message in
            chunkLines(message).contains(where: { (line: Substring) -> Bool in
                let afterSize = line.drop { $0.isHexDigit }
                return afterSize.contains(";") && afterSize.contains { $0 == " " || $0 == "\t" }
            })
        }),
    ]

    @Test func threadbareAcceptsOnlyWhatH11Accepts() throws {
        let judge = try Self.h11Judge()
        let environment = ProcessInfo.processInfo.environment
        let seconds = environment["FUZZ_SECONDS"].flatMap(Double.init) ?? 0
        let seed = environment["FUZZ_SEED"].flatMap(UInt64.init) ?? (seconds > 0 ? UInt64.random(in: 0...UInt64.max) : 42)
        var random = SplitMix64(state: seed)
        let deadline = Date().addingTimeInterval(seconds)
        var tally: [String: Int] = [:]
        var excused: [String: Int] = [:]
        var checked = 0
        repeat {
            let messages = (0..<2_000).map { _ in Self.mutate(Self.validRequest(&random), &random) }
            let theirs = try judge(messages)
            for (message, reference) in zip(messages, theirs) {
                let ours = Self.verdict(message)
                tally["\(ours.rawValue) / h11 \(reference.rawValue)", default: 0] += 1
                guard ours == .accept, reference != .accept else { continue }
                if let exception = Self.exceptions.first(where: { $0.applies(message) }) {
                    excused[exception.name, default: 0] += 1
                    continue
                }
                Issue.record("accepted what h11 calls \(reference.rawValue) (seed \(seed)): \(String(decoding: message, as: UTF8.self).debugDescription)")
            }
            checked += messages.count
        } while Date() < deadline
        print("framing against h11: seed \(seed), \(checked) messages; \(tally.sorted { $0.key < $1.key }); excused \(excused)")
        // The mutations must reach both sides of every rule, or the test proves little.
        #expect(tally["accept / h11 accept", default: 0] > checked / 10, "\(tally)")
        #expect(tally["reject / h11 reject", default: 0] > checked / 10, "\(tally)")
    }

    /// Threadbare's verdict, as FramingGuard reaches it: the head judged once it is whole, then
    /// the body it announces.
    static func verdict(_ message: [UInt8]) -> Verdict {
        guard let headEnd = headEnd(message) else { return .incomplete }
        let head = Array(message[..<headEnd]), body = Array(message[headEnd...])
        switch head.withUnsafeBytes({ RequestFraming.judge($0) }) {
        case .failure:
            return .reject
        case .success(let judged):
            switch judged.body {
            case .length(let length):
                return body.count >= length ? .accept : .incomplete
            case .chunked:
                var reader = ChunkedBodyReader()
                switch body.withUnsafeBytes({ reader.consume($0) }) {
                case .ended: return .accept
                case .needsMore: return .incomplete
                case .refused: return .reject
                }
            }
        }
    }

    /// Just past the empty line that ends the head, empty lines before the request line aside.
    static func headEnd(_ message: [UInt8]) -> Int? {
        var lineStart = 0, sawLine = false
        for (index, byte) in message.enumerated() where byte == ASCII.lineFeed {
            var lineEnd = index
            if lineEnd > lineStart, message[lineEnd - 1] == ASCII.carriageReturn { lineEnd -= 1 }
            if lineEnd > lineStart {
                sawLine = true
            } else if sawLine {
                return index + 1
            }
            lineStart = index + 1
        }
        return nil
    }

    // MARK: Requests and their mutations

    static let targets = ["/", "/health", "/cache/k", "/cpu?work=5", "/a%20b?c=d&e", "*", "http://h/x"]
    static let extraFields = ["Accept: */*", "X-Trace: a-b_c", "Expect: 100-continue", "Connection: keep-alive", "X-Empty:",
                              "User-Agent: t/1.0 (x; y)", "Cookie: a=b; c=\"d e\""]

    static func validRequest(_ random: inout SplitMix64) -> [UInt8] {
        let chunked = random.below(3) == 0
        let version = !chunked && random.below(5) == 0 ? "HTTP/1.0" : "HTTP/1.1"
        let method = ["GET", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"][random.below(6)]
        var lines = ["\(method) \(targets[random.below(targets.count)]) \(version)"]
        var fields = version == "HTTP/1.1" || random.below(2) == 0 ? ["Host: example.test"] : []
        for _ in 0..<random.below(3) { fields.append(extraFields[random.below(extraFields.count)]) }
        var body = ""
        if chunked {
            fields.append(["Transfer-Encoding: chunked", "transfer-encoding: Chunked"][random.below(2)])
            for _ in 0..<random.below(3) {
                let data = String(repeating: "d", count: 1 + random.below(20))
                let size = String(data.count, radix: 16, uppercase: random.below(2) == 0)
                body += size + (random.below(4) == 0 ? ";ext=v" : "") + "\r\n" + data + "\r\n"
            }
            body += "0\r\n" + (random.below(4) == 0 ? "X-Trailer: t\r\n" : "") + "\r\n"
        } else if random.below(2) == 0 {
            body = String(repeating: "b", count: random.below(12))
            fields.append("Content-Length: \(body.count)")
        }
        for _ in 0..<fields.count { fields.swapAt(random.below(fields.count), random.below(fields.count)) }
        lines += fields
        return Array((lines.joined(separator: "\r\n") + "\r\n\r\n" + body).utf8)
    }

    static let trickyBytes = Array(" \t\r\n\0:,;=0a-\u{7F}\"\\".utf8) + [0x80, 0xFF, 0x01]
    static let trickyLines = ["Content-Length: 3", "Content-Length: 0", "Content-Length: 03", "Content-Length: 3, 3",
                              "Transfer-Encoding: chunked", "Transfer-Encoding: gzip", "Transfer-Encoding: chunked, chunked",
                              "Host: other.test", " folded", "\tfolded", "X-Sp : v", "Content-Length: +3"]

    static func mutate(_ original: [UInt8], _ random: inout SplitMix64) -> [UInt8] {
        var message = original
        for _ in 0..<(1 + random.below(2)) where !message.isEmpty {
            let at = random.below(message.count)
            switch random.below(7) {
            case 0: message.insert(trickyBytes[random.below(trickyBytes.count)], at: at)
            case 1: message.remove(at: at)
            case 2: message[at] = trickyBytes[random.below(trickyBytes.count)]
            case 3, 4:
                // A line inserted, or a line repeated, after the line `at` is on.
                let lineEnd = message[at...].firstIndex(of: ASCII.lineFeed).map { $0 + 1 } ?? message.count
                let lineStart = message[..<at].lastIndex(of: ASCII.lineFeed).map { $0 + 1 } ?? 0
                let line = random.below(2) == 0 ? Array((trickyLines[random.below(trickyLines.count)] + "\r\n").utf8)
                    : Array(message[lineStart..<lineEnd])
                message.insert(contentsOf: line, at: lineEnd)
            case 5:
                let lineEnd = message[at...].firstIndex(of: ASCII.lineFeed).map { $0 + 1 } ?? message.count
                let lineStart = message[..<at].lastIndex(of: ASCII.lineFeed).map { $0 + 1 } ?? 0
                message.removeSubrange(lineStart..<lineEnd)
            default:
                if (0x61...0x7A).contains(message[at]) { message[at] -= 0x20 } else if (0x41...0x5A).contains(message[at]) { message[at] += 0x20 }
            }
        }
        // An empty message is no request, and to h11 the end of the connection.
        return message.isEmpty ? original : message
    }

    // MARK: Helpers for the exceptions

    /// Lines split on LF as bytes (a Swift String holds CRLF as one character), CR dropped.
    static func lines(_ bytes: ArraySlice<UInt8>) -> [String] {
        bytes.split(separator: ASCII.lineFeed, omittingEmptySubsequences: false).map { line in
            String(decoding: line.last == ASCII.carriageReturn ? line.dropLast() : line, as: UTF8.self)
        }
    }

    static func fieldValues(_ message: [UInt8], _ lowercaseName: String) -> [String] {
        let head = message[..<(headEnd(message) ?? message.count)]
        return lines(head).dropFirst().compactMap { line in
            guard let colon = line.firstIndex(of: ":"), line[..<colon].lowercased() == lowercaseName else { return nil }
            return String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces)
        }
    }

    static func chunkLines(_ message: [UInt8]) -> [Substring] {
        guard let end = headEnd(message) else { return [] }
        return lines(message[end...]).filter { $0.first?.isHexDigit == true }.map { $0[...] }
    }

    // MARK: h11

    /// A function that judges a batch of messages with h11, through one Python process.
    static func h11Judge() throws -> ([[UInt8]]) throws -> [Verdict] {
        let python = try pythonEnvironment("h11", installing: "h11==0.16.0", module: "h11")
        let script = repositoryRoot.appendingPathComponent("Tests/reference/h11_judge.py")
        return { messages in
            let batch = FileManager.default.temporaryDirectory.appendingPathComponent("h11-batch-\(UUID().uuidString).hex")
            defer { try? FileManager.default.removeItem(at: batch) }
            try messages.map { $0.map { String(format: "%02x", $0) }.joined() }.joined(separator: "\n").write(to: batch, atomically: true, encoding: .utf8)
            let judged = try runToCompletion(python, [script.path, batch.path], deadline: 120)
            let verdicts = judged.stdout.split(separator: "\n").compactMap { Verdict(rawValue: String($0)) }
            guard judged.status == 0, verdicts.count == messages.count else {
                throw HTTPConnection.Failure("h11_judge.py answered \(verdicts.count) of \(messages.count) (exit \(judged.status)): \(judged.stderr)")
            }
            return verdicts
        }
    }
}
