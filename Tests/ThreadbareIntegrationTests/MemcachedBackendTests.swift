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
            let servers = try #require(statistics["servers"] as? [[String: Any]])
            #expect(statistics["backend"] as? String == "memcached" && servers.map { $0["address"] as? String } == [memcached.address])
            #expect(statistics["hits"] as? Int == 40 && statistics["entries"] as? Int == 1)
        }

        /// Under load, memcached is killed: a read-through computes and answers without storing
        /// (X-Cache: unreachable), everything else keeps answering; memcached comes back on its
        /// port and the reads are served from it again, with no restart of Threadbare.
        @Test(arguments: ["gil", "async"])
        func anOutageIsComputedAroundAndTheCacheComesBackByItself(mode: String) throws {
            let memcached = try MemcachedServer()
            defer { memcached.stop() }
            let server = try ServerProcess(["--mode", mode, "--set", "cache.backend=memcached", "--set", "cache.memcached=\(memcached.address)",
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
                        switch (reply.status, reply.headers["x-cache"]) {
                        case (200, "unreachable"): seen.append("unreachable")
                        case (200, _): seen.append("200 \(late)")
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
            #expect(seen.contains("unreachable"), "the outage was answered from a computation, not stored")
            #expect(!seen.contains { $0.hasPrefix("unexpected") }, "\(seen.filter { $0.hasPrefix("unexpected") }.prefix(3))\nserver log:\n\(server.standardError.suffix(3_000))")
            #expect(outcomes.prefix(3).allSatisfy { $0.last == "200 after" }, "every client got 200s again after the restart")
        }

        /// async: a memcached that accepts and never answers holds up only the request waiting
        /// on it. The loop goes on serving; the waiting request gets its 503 after the timeout.
        @Test func aSilentMemcachedDoesNotBlockTheLoop() throws {
            let silent = try SilentListener()
            let server = try ServerProcess(["--mode", "async", "--set", "cache.backend=memcached",
                                            "--set", "cache.memcached=127.0.0.1:\(silent.port)", "--set", "cache.memcached_timeout_ms=1500"])
            defer { server.stop() }
            let waiting = try server.connect(), other = try server.connect()
            let started = Date()
            try waiting.send(Array("GET /cache/k HTTP/1.1\r\nHost: t\r\n\r\n".utf8))
            Thread.sleep(forTimeInterval: 0.1)
            let quick = try other.request("GET", "/cpu?work=1")
            let quickDone = Date().timeIntervalSince(started)
            let failed = try waiting.readReply()
            let failedDone = Date().timeIntervalSince(started)
            #expect(quick.status == 200)
            #expect(failed.status == 503 && failed.text.contains("timed out"), "\(failed.status) \(failed.text)")
            #expect(quickDone < failedDone / 3, "the quick request took \(quickDone) s beside a cache wait of \(failedDone) s")
        }
    }
}

/// A TCP port that accepts connections (the kernel completes them) and never answers.
final class SilentListener {
    let port: Int
    private let fd: Int32

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && listen(fd, 16) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard fd >= 0, bound else {
            if fd >= 0 { close(fd) }
            throw HTTPConnection.Failure("cannot listen on a free port")
        }
        self.fd = fd
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { close(fd) }
}
