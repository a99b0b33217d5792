import Testing
@testable import LoadTestKit

@Suite("endpoints and their weights")
struct EndpointTests {
    @Test func weightsFollowTheURL() throws {
        let cases: [(String, String, Int)] = [
            ("http://h/health", "/health", 1),
            ("http://h/health=3", "/health", 3),
            ("http://h/cache?key=5", "/cache?key=5", 1),
            ("http://h/cache?key=5=2", "/cache?key=5", 2),
            ("http://h/a?x=1&y=7", "/a?x=1&y=7", 1),
            ("http://h:8080=4", "/", 4),
        ]
        for (text, path, weight) in cases {
            let endpoint = try Endpoint(weightedURL: text)
            #expect(endpoint.target.pathAndQuery == path && endpoint.weight == weight, "\(text)")
        }
        #expect(throws: Target.Invalid.self) { try Endpoint(weightedURL: "http://h/a=0") }
        #expect(throws: Target.Invalid.self) { try Endpoint(weightedURL: "http://h/a=2000000") }
    }

    @Test func theRotationIsSmoothAndExact() {
        var rotation = WeightedRotation(weights: [5, 1, 1])
        #expect((0..<7).map { _ in rotation.next() } == [0, 0, 1, 0, 2, 0, 0], "nginx's order")
        var uneven = WeightedRotation(weights: [3, 1, 6])
        var counts = [0, 0, 0]
        for _ in 0..<1000 { counts[uneven.next()] += 1 }
        #expect(counts == [300, 100, 600])
    }

    @Test func theRequestIsBuiltOnce() throws {
        var endpoint = try Endpoint(weightedURL: "http://example.com:8080/cache/k")
        endpoint.method = "PUT"
        endpoint.headers = [("Content-Type", "text/plain")]
        endpoint.body = Array("value".utf8)
        #expect(String(decoding: endpoint.requestBytes, as: UTF8.self)
            == "PUT /cache/k HTTP/1.1\r\nHost: example.com:8080\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nvalue")
        let get = try Endpoint(weightedURL: "http://example.com/")
        #expect(String(decoding: get.requestBytes, as: UTF8.self) == "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    }

    /// Zipf's law with s = 1 over 100 keys: key 0 has 1/H(100) ≈ 19.3% of the draws, key 9
    /// a tenth of that; uniform draws spread evenly.
    @Test func keysAreDrawnByZipfsLaw() {
        var zipf = KeySampler(KeySpace(count: 100, zipfExponent: 1), seed: 42)
        var counts = [Int](repeating: 0, count: 100)
        for _ in 0..<200_000 { counts[zipf.next()] += 1 }
        #expect(abs(Double(counts[0]) / 200_000 - 0.1928) < 0.01, "\(counts[0])")
        #expect(abs(Double(counts[0]) / Double(counts[9]) - 10) < 1.5, "\(counts[0]) vs \(counts[9])")
        var uniform = KeySampler(KeySpace(count: 4), seed: 7)
        var spread = [0, 0, 0, 0]
        for _ in 0..<40_000 { spread[uniform.next()] += 1 }
        #expect(spread.allSatisfy { abs($0 - 10_000) < 600 }, "\(spread)")
    }

    @Test func aKeyGoesWhereThePathSaysEachRequest() throws {
        var endpoint = try Endpoint(weightedURL: "http://h/cache/item-{key}?compute=5")
        #expect(endpoint.problem != nil, "{key} needs keys")
        endpoint.keys = KeySpace(count: 10)
        #expect(endpoint.problem == nil)
        let parts = try #require(endpoint.requestParts)
        #expect(String(decoding: parts.prefix, as: UTF8.self) == "GET /cache/item-")
        #expect(String(decoding: parts.suffix, as: UTF8.self) == "?compute=5 HTTP/1.1\r\nHost: h\r\n\r\n")
    }

    @Test func everyURLMustBeOnTheSameServer() throws {
        let endpoints = try ["http://a:1/x", "http://a:2/y"].map { try Endpoint(weightedURL: $0) }
        #expect(throws: LoadError.self) { try LoadPlan(endpoints: endpoints, connections: 1, threads: 1, duration: 1) }
    }
}
