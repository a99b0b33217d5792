import Foundation
import Testing

/// `cache.backend: memcached` against a real memcached: one cache for every prefork worker,
/// and an outage the server rides out.
extension LoadSensitive {
    @Suite("memcached: shared by processes, and survived when it goes away", .serialized)
    struct MemcachedBackendTests {
        @Test func everyWorkerReadsWhatAnyOneStored() throws {
            let memcached = try MemcachedServer()
            defer { memcached.stop() }
            let server = try ServerProcess(["--mode", "prefork", "--workers", "2", "--set", "cache.backend=memcached",
                                            "--set", "cache.memcached=\(memcached.address)"])
            defer { server.stop() }
            let stored = try server.request("PUT", "/cache/k", body: Array("ours".utf8))
            #expect(stored.status == 201)
            var readers: Set<String> = []
            for _ in 0..<40 {
                let reply = try server.get("/cache/k")
                #expect(reply.status == 200 && reply.text == "ours")
                readers.insert(reply.headers["x-worker"] ?? "")
            }
            #expect(readers.contains { $0 != stored.headers["x-worker"] })
            let statistics = try server.json("/cache")
            #expect(statistics["backend"] as? String == "memcached" && statistics["address"] as? String == memcached.address)
            #expect(statistics["hits"] as? Int == 40 && statistics["entries"] as? Int == 1)
        }

        /// Under load, memcached is killed: the cache answers 503 naming it, everything else
        /// keeps answering; memcached comes back on its port and the cache answers 200 again,
        /// with no restart of Threadbare.
        @Test func anOutageIs503AndTheCacheComesBackByItself() throws {
            let memcached = try MemcachedServer()
            defer { memcached.stop() }
            let server = try ServerProcess(["--mode", "gil", "--set", "cache.backend=memcached", "--set", "cache.memcached=\(memcached.address)",
                                            "--set", "cache.memcached_timeout_ms=300"])
            defer { server.stop() }
            let phase = LockedFlag(), stop = LockedFlag()
            let outcomes = try concurrently(4) { client -> [String] in
                if client == 3 {
                    defer { stop.set() }
                    Thread.sleep(forTimeInterval: 0.4)
                    memcached.stop()
                    Thread.sleep(forTimeInterval: 0.6)
                    try memcached.start()
                    phase.set()
                    Thread.sleep(forTimeInterval: 0.6)
                    return []
                }
                var seen: [String] = []
                // A request unanswered for 5 s is stuck: say where the server's threads are.
                var connection = try HTTPConnection(port: server.port, timeoutSeconds: 5)
                let started = Date(), deadline = started.addingTimeInterval(20)
                while !stop.isSet && Date() < deadline {
                    let late = phase.isSet ? "after" : "before"
                    do {
                        let reply = try connection.request("GET", "/cache/item-\(client)?compute=100")
                        switch reply.status {
                        case 200: seen.append("200 \(late)")
                        case 503 where reply.text.contains("memcached at \(memcached.address)"): seen.append("503")
                        default: seen.append("unexpected \(reply.status) \(reply.text)")
                        }
                        #expect(try server.get("/health").status == 200, "the server keeps serving")
                    } catch {
                        seen.append(String(format: "unexpected at %.2fs (%@): %@", Date().timeIntervalSince(started), late, "\(error)")
                                    + "\n" + BoundedWait.describeThreads(server.pid))
                        connection = try HTTPConnection(port: server.port, timeoutSeconds: 5)
                    }
                }
                return seen
            }
            let seen = outcomes.prefix(3).flatMap { $0 }
            #expect(seen.contains("503"), "the outage was answered 503")
            #expect(!seen.contains { $0.hasPrefix("unexpected") }, "\(seen.filter { $0.hasPrefix("unexpected") }.prefix(3))\nserver log:\n\(server.standardError.suffix(3_000))")
            #expect(outcomes.prefix(3).allSatisfy { $0.last == "200 after" }, "every client got 200s again after the restart")
        }
    }
}
