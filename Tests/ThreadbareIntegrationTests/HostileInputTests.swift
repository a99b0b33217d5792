import Foundation
import Testing
@testable import ThreadbareServer

/// Well over a thousand malformed, truncated, oversized and random requests, from a seeded
/// generator so a failure replays, sent over raw sockets to a server in every mode: it must
/// still answer /health, and in prefork no worker may have died.
extension LoadSensitive {
    @Suite("Hostile input: every mode keeps serving", .serialized)
    struct HostileInputTests {
        static let methods = ["GET", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PATCH", "BREW", "", "G\u{0}T"]
        static let targets = [
            "/", "/health", "/cache/", "/cache/%", "/cache/%zz", "/cache/a%00b", "/cache/" + String(repeating: "k", count: 300),
            "/io?ms=-1", "/io?ms=99999999999999999999", "/cpu?work=1e3", "/cpu?work=", "/cpu?work=5&work=6",
            "/cache/x?compute=5&ttl=-3", "/cache/x?ttl=9", "/stats?x=1", "*", "http://h/x", "/" + String(repeating: "a", count: 5_000),
            "/cache/\u{7F}", "/cpu?work=10&release=2", "/metrics", "/cache/ok?compute=3",
        ]
        static let headerLines = [
            "Host: x", "Content-Length: 5", "Content-Length: -1", "Content-Length: 99999999999", "Content-Length: 5, 6",
            "Transfer-Encoding: chunked", "Expect: 100-continue", "Connection: close", "NoColon", ": empty", "X: \u{1}\u{2}",
        ]

        static func request(_ random: inout SplitMix64) -> [UInt8] {
            let kind = random.below(10)
            if kind == 0 { return random.bytes(1 + random.below(400)) }
            let version = random.pick(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", ""])
            var head = Array("\(random.pick(methods)) \(random.pick(targets)) \(version)\r\n".utf8)
            for _ in 0..<random.below(6) {
                let line = random.below(12) == 0 ? "X: " + String(repeating: "v", count: random.below(20_000)) : random.pick(headerLines)
                head += Array((line + "\r\n").utf8)
            }
            var body: [UInt8] = []
            if random.below(3) == 0 {
                body = random.below(2) == 0 ? Array("5\r\nhello\r\n0\r\n\r\n".utf8) : random.bytes(random.below(100))
            }
            let whole = head + Array("\r\n".utf8) + body
            return kind == 1 ? Array(whole.prefix(random.below(whole.count))) : whole  // cut short
        }

        /// Sends `bytes` on a connection of its own, half-closes it, and reads until the server
        /// closes or 2 s pass. Returns false if the server could not be reached at all.
        static func send(_ bytes: [UInt8], port: Int) -> Bool {
            guard let fd = try? HTTPConnection.connectedSocket(port: port, timeoutSeconds: 2) else { return false }
            defer { close(fd) }
            _ = bytes.withUnsafeBytes { Foundation.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            shutdown(fd, Int32(SHUT_WR))
            var sink = [UInt8](repeating: 0, count: 16_384)
            while recv(fd, &sink, sink.count, 0) > 0 {}
            return true
        }

        @Test(arguments: [["--mode", "nogil"], ["--mode", "gil"], ["--mode", "subinterpreters"], ["--mode", "prefork", "--workers", "2"],
                          ["--mode", "async"], ["--mode", "prefork-async", "--workers", "2"]])
        func twelveHundredHostileRequestsHurtNoMode(mode: [String]) throws {
            let server = try ServerProcess(mode)
            defer { server.stop() }
            let workers = PreforkTests.workers(of: server.pid)
            let perClient = 200
            let unreachable = try concurrently(6) { client -> Int in
                var random = SplitMix64(state: UInt64(client) &* 7_919 &+ 1)
                return (0..<perClient).filter { _ in !Self.send(Self.request(&random), port: server.port) }.count
            }
            #expect(unreachable.reduce(0, +) == 0, "the server stopped accepting")
            #expect(try server.get("/health").status == 200)
            #expect(PreforkTests.workers(of: server.pid) == workers, "no worker died or was replaced")
            #expect(!server.standardError.contains("Fatal error"), "\(server.standardError.suffix(2_000))")
        }
    }
}

extension SplitMix64 {
    mutating func pick<T>(_ choices: [T]) -> T { choices[below(choices.count)] }
    mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) } }
}
