import Foundation
import Testing
import ThreadbareServer

@Suite("Endpoints answer as the README says")
struct EndpointTests {
    @Test func healthSaysOk() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let reply = try server.get("/health")
        #expect(reply.status == 200)
        #expect(reply.text == "ok")
        #expect(reply.headers["content-length"] == "2")
    }

    @Test func indexDescribesTheServer() throws {
        let server = try ServerProcess(["--threads", "3", "--loops", "2"])
        defer { server.stop() }
        let index = try server.json("/")
        #expect(index["name"] as? String == "threadbare")
        #expect(index["mode"] as? String == "nogil")
        #expect(index["pid"] as? Int == Int(server.pid))
        #expect(index["threads"] as? Int == 3)
        #expect(index["loops"] as? Int == 2)
        let endpoints = try #require(index["endpoints"] as? [[String: String]])
        let listed = Set(endpoints.map { "\($0["method"]!) \($0["path"]!)" })
        for expected in ["GET /health", "GET /io", "GET /cpu", "GET /cache", "PUT /cache/{key}", "GET /stats", "GET /metrics"] {
            #expect(listed.contains(expected), "GET / should list \(expected)")
        }
    }

    @Test func ioSleepsTheRequestedTime() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let reply = try server.get("/io?ms=120")
        #expect(reply.status == 200)
        #expect(try reply.json()["slept_ms"] as? Int == 120)
        // The server's own handler time covers the sleep.
        #expect(try #require(reply.serverTiming("app")) >= 115)
    }

    @Test func cpuResultIsDeterministicAndMatchesTheLibrary() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let first = try server.get("/cpu?work=2500").json()
        let second = try server.get("/cpu?work=2500").json()
        #expect(first["work"] as? Int == 2500)
        #expect(first["result"] as? String == second["result"] as? String)
        #expect(first["result"] as? String == CPUWork.hex(CPUWork.run(units: 2500)))
        #expect(try server.get("/cpu?work=0").status == 200)
    }

    /// A server in `mode` whose cache is `backend`, with the memcached it needs.
    static func server(cache backend: String, mode: String = "nogil") throws -> (ServerProcess, MemcachedServer?) {
        let memcached = backend == "memcached" ? try MemcachedServer() : nil
        let server = try ServerProcess(["--mode", mode, "--set", "cache.backend=\(backend)"]
                                       + (memcached.map { ["--set", "cache.memcached=\($0.address)"] } ?? []))
        return (server, memcached)
    }

    /// On handler threads and on the event loop alike (where memcached is spoken without
    /// blocking the loop).
    @Test(arguments: ["local", "shm", "memcached"], ["nogil", "async"])
    func cacheStoresReplacesReadsAndDeletes(backend: String, mode: String) throws {
        let (server, memcached) = try Self.server(cache: backend, mode: mode)
        defer { server.stop(); memcached?.stop() }
        let put = try server.request("PUT", "/cache/greeting", headers: ["Content-Type": "text/plain"], body: Array("hello".utf8))
        #expect(put.status == 201)
        let replace = try server.request("PUT", "/cache/greeting", headers: ["Content-Type": "text/x-greeting"], body: Array("hi".utf8))
        #expect(replace.status == 200)
        let read = try server.get("/cache/greeting")
        #expect(read.status == 200)
        #expect(read.text == "hi")
        #expect(read.headers["content-type"] == "text/x-greeting")
        #expect(try server.get("/cache/absent").status == 404)

        let stats = try server.json("/cache")
        #expect(stats["backend"] as? String == backend)
        // memcached holds the typed value's content-type note as an item of its own.
        #expect(stats["entries"] as? Int == (backend == "memcached" ? 2 : 1))
        if backend != "memcached" {  // memcached counts its own item overhead
            #expect(stats["bytes"] as? Int == "greeting".utf8.count + 2)
        }
        #expect(stats["hits"] as? Int == 1)
        #expect(stats["misses"] as? Int == 1)

        #expect(try server.request("DELETE", "/cache/greeting").status == 204)
        #expect(try server.request("DELETE", "/cache/greeting").status == 404)
        #expect(try server.get("/cache/greeting").status == 404)
    }

    /// compute=N: a miss computes the value (the /cpu result for N units), stores and returns
    /// it; the next read is a hit with the same bytes.
    @Test(arguments: ["local", "shm", "memcached"], ["nogil", "async"])
    func cacheReadsThrough(backend: String, mode: String) throws {
        let (server, memcached) = try Self.server(cache: backend, mode: mode)
        defer { server.stop(); memcached?.stop() }
        let expected = try #require(try server.json("/cpu?work=300")["result"] as? String)
        let first = try server.get("/cache/report-7?compute=300")
        #expect(first.status == 200 && first.headers["x-cache"] == "miss" && first.text == expected, "\(first.status) \(first.text)")
        let second = try server.get("/cache/report-7?compute=300")
        #expect(second.status == 200 && second.headers["x-cache"] == "hit" && second.text == expected)
        #expect(try server.get("/cache/report-7").headers["x-cache"] == nil, "a plain read says nothing of hits")
        let stats = try server.json("/cache")
        #expect(stats["hits"] as? Int == 2 && stats["misses"] as? Int == 1 && stats["entries"] as? Int == 1, "\(stats)")
        #expect(try server.get("/cache/x?compute=lots").status == 400)
        #expect(try server.get("/cache/x?compute=99999999").status == 400)
        #expect(try server.request("PUT", "/cache/x?compute=1", body: [1]).status == 400, "compute is for reads")
        #expect(try server.get("/cache/x").status == 404, "nothing was stored by the refused requests")
    }

    /// ttl=S on a PUT, or on a read-through: the entry is gone S seconds later, counted as an
    /// expiration.
    @Test(arguments: ["local", "shm"])
    func cacheEntriesExpire(backend: String) throws {
        let server = try ServerProcess(["--set", "cache.backend=\(backend)"])
        defer { server.stop() }
        #expect(try server.request("PUT", "/cache/brief?ttl=1", body: Array("x".utf8)).status == 201)
        #expect(try server.request("PUT", "/cache/kept?ttl=0", body: Array("y".utf8)).status == 201)
        #expect(try server.get("/cache/computed?compute=10&ttl=1").headers["x-cache"] == "miss")
        #expect(try server.get("/cache/brief").status == 200)
        Thread.sleep(forTimeInterval: 1.1)
        #expect(try server.get("/cache/brief").status == 404)
        #expect(try server.get("/cache/computed?compute=10").headers["x-cache"] == "miss", "computed again after its ttl")
        #expect(try server.get("/cache/kept").status == 200)
        #expect(try server.json("/cache")["expirations"] as? Int == 2)
        for (path, method) in [("/cache/k?ttl=-1", "PUT"), ("/cache/k?ttl=soon", "PUT"), ("/cache/k?ttl=2592001", "PUT"), ("/cache/k?ttl=5", "GET")] {
            let reply = try server.request(method, path, body: method == "PUT" ? [1] : [])
            #expect(reply.status == 400 && reply.text.contains("ttl"), "\(method) \(path): \(reply.status) \(reply.text)")
        }
    }

    @Test func cacheKeysArePercentDecoded() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        #expect(try server.request("PUT", "/cache/a%20b", body: Array("x".utf8)).status == 201)
        #expect(try server.get("/cache/a%20b").text == "x")
        #expect(try server.get("/cache/a%00b").status == 400)
    }

    @Test func cacheEvictsTheLeastRecentlyUsed() throws {
        let server = try ServerProcess(["--set", "cache.max_entries=2"])
        defer { server.stop() }
        for key in ["a", "b"] { _ = try server.request("PUT", "/cache/\(key)", body: [1]) }
        _ = try server.get("/cache/a")  // b is now the least recently used
        _ = try server.request("PUT", "/cache/c", body: [1])
        #expect(try server.get("/cache/b").status == 404)
        #expect(try server.get("/cache/a").status == 200)
        #expect(try server.get("/cache/c").status == 200)
        #expect(try server.json("/cache")["evictions"] as? Int == 1)
    }

    @Test func everyReplyCarriesServerTiming() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        for path in ["/health", "/cpu?work=10", "/io?ms=1", "/cache/x", "/nowhere"] {
            let reply = try server.get(path)
            #expect(reply.serverTiming("queue") != nil, "\(path): \(reply.headers)")
            #expect(reply.serverTiming("app") != nil, "\(path): \(reply.headers)")
        }
    }

    @Test func headAnswersWithoutABody() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let connection = try server.connect()
        let head = try connection.request("HEAD", "/health")
        #expect(head.status == 200)
        #expect(head.headers["content-length"] == "2")
        // The connection stays usable: no stray body bytes were sent.
        #expect(try connection.request("GET", "/health").text == "ok")
    }

    @Test func statsCountRequestsByEndpointAndStatus() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        _ = try server.get("/health")
        _ = try server.get("/health")
        _ = try server.get("/io?ms=nope")
        let stats = try server.json("/stats")
        let requests = try #require(stats["requests"] as? [String: [String: Int]])
        #expect(requests["health"]?["200"] == 2)
        #expect(requests["io"]?["400"] == 1)
        #expect(stats["mode"] as? String == "nogil")
        #expect(stats["pid"] as? Int == Int(server.pid))
        #expect((stats["rss_bytes"] as? Int ?? 0) > 1_000_000)
        #expect(stats["in_flight"] as? Int == 1, "the /stats request itself")
        #expect(stats["queue_depth"] as? Int == 0)
        #expect((stats["uptime_s"] as? Double ?? -1) >= 0)
        let memory = try #require(stats["memory"] as? [String: Int])
        #expect(Set(memory.keys) == ["rss_bytes", "pss_bytes", "shared_clean_bytes", "shared_dirty_bytes", "private_clean_bytes", "private_dirty_bytes"])
        #expect((memory["private_dirty_bytes"] ?? 0) > 0 && (memory["pss_bytes"] ?? 0) <= (memory["rss_bytes"] ?? 0))
    }

    @Test func metricsArePrometheusText() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        _ = try server.get("/cpu?work=5")
        let metrics = try server.get("/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
        #expect(metrics.text.contains(#"threadbare_requests_total{endpoint="cpu",status="200"} 1"#))
        #expect(metrics.text.contains(#"threadbare_request_duration_seconds_bucket{endpoint="cpu",status="200",le="+Inf"} 1"#))
        #expect(metrics.text.contains("# TYPE threadbare_in_flight_requests gauge"))
    }

    @Test func keepAliveServesManyRequestsOnOneConnection() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let connection = try server.connect()
        for work in 0..<50 {
            #expect(try connection.request("GET", "/cpu?work=\(work)").status == 200)
        }
    }
}
