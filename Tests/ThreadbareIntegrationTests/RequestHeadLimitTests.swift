import Foundation
import Testing

/// gunicorn's head limits, at their defaults and configured: each over-limit part gets the status
/// that names it, a JSON reason, and a closed connection; a head just inside every limit is served.
@Suite("Request line, field count and field size limits answer 414 and 431")
struct RequestHeadLimitTests {
    /// `GET <path> HTTP/1.1` is `path` plus 13 bytes.
    static func path(lineBytes: Int) -> String {
        "/health?pad=" + String(repeating: "a", count: lineBytes - 13 - "/health?pad=".count)
    }

    static func fields(_ count: Int) -> [String: String] {
        // The connection adds Host, one field.
        Dictionary(uniqueKeysWithValues: (1..<count).map { ("X-Field-\($0)", "v") })
    }

    @Test func defaultsAreGunicorns() throws {
        let server = try ServerProcess()
        defer { server.stop() }

        #expect(try server.get(Self.path(lineBytes: 4094)).status == 200)
        let longLine = try server.connect()
        let refused = try longLine.request("GET", Self.path(lineBytes: 4095))
        #expect(refused.status == 414)
        #expect(refused.headers["connection"] == "close")
        #expect(try refused.json()["error"] as? String == "the request line is 4095 bytes; limits.request_line allows 4094")
        #expect(longLine.isClosedByServer())

        #expect(try server.request("GET", "/health", headers: Self.fields(100)).status == 200)
        let many = try server.request("GET", "/health", headers: Self.fields(101))
        #expect(many.status == 431)
        #expect(many.rawHead.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large\r\n"))
        #expect(try many.json()["error"] as? String == "the request has more than 100 header fields (limits.request_fields)")

        // name + ": " + value + CRLF
        let value = { (fieldBytes: Int) in String(repeating: "b", count: fieldBytes - "X-Big: ".count - 2) }
        #expect(try server.request("GET", "/health", headers: ["X-Big": value(8190)]).status == 200)
        let big = try server.request("GET", "/health", headers: ["X-Big": value(8191)])
        #expect(big.status == 431)
        #expect(try (big.json()["error"] as? String)?.hasSuffix("is 8191 bytes; limits.request_field_size allows 8190") == true)

        // Past the whole head's limit only libevent's own refusal remains.
        #expect(try server.request("GET", "/health", headers: ["X-Big": value(40_000)]).status == 400)
        #expect(try server.get("/health").status == 200)
    }

    @Test func limitsAreConfigurable() throws {
        let server = try ServerProcess([
            "--set", "limits.request_line=100", "--set", "limits.request_fields=3", "--set", "limits.request_field_size=64",
        ])
        defer { server.stop() }
        #expect(try server.get(Self.path(lineBytes: 100)).status == 200)
        #expect(try server.get(Self.path(lineBytes: 101)).status == 414)
        #expect(try server.request("GET", "/health", headers: Self.fields(3)).status == 200)
        #expect(try server.request("GET", "/health", headers: Self.fields(4)).status == 431)
        #expect(try server.request("GET", "/health", headers: ["X-Long": String(repeating: "c", count: 60)]).status == 431)
        let requests = try server.json("/stats")["requests"] as? [String: Any]
        let unmatched = requests?["unmatched"] as? [String: Int]
        #expect(unmatched?["414"] == 1)
        #expect(unmatched?["431"] == 2)
    }

    @Test func aPartLimitAboveTheWholeHeadIsAConfigurationError() throws {
        let file = try temporaryConfig("mode: nogil\n")
        let result = try runThreadbare(["config", "check", file.path, "--set", "limits.max_header_bytes=4096", "--set", "limits.request_field_size=8190"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("limits.request_field_size: 8190 bytes exceeds limits.max_header_bytes 4096"))
    }
}
