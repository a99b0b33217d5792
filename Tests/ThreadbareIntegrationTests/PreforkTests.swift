import Foundation
import Testing

/// prefork with real processes: a master, its forked workers, and the signals that steer them.
extension LoadSensitive {
    @Suite("prefork: a master supervising forked workers", .serialized)
    struct PreforkTests {
        /// The master's children that are still running (a zombie has stopped, whether or not
        /// anyone has reaped it yet).
        static func workers(of master: Int32) -> Set<Int32> {
            let list = (try? String(contentsOfFile: "/proc/\(master)/task/\(master)/children", encoding: .utf8)) ?? ""
            return Set(list.split(separator: " ").compactMap { Int32($0) }.filter(isRunning))
        }

        static func isRunning(_ pid: Int32) -> Bool {
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return false }
            return !status.split(separator: "\n").contains { $0.hasPrefix("State:") && $0.contains("Z (zombie)") }
        }

        /// The workers that answer requests on fresh connections.
        static func answeringWorkers(_ server: ServerProcess, requests: Int) throws -> Set<String> {
            Set(try (0..<requests).map { _ in try #require(try server.get("/health").headers["x-worker"]) })
        }

        @Test func everyWorkerAnswersAndTTINTTOUChangeTheCount() throws {
            let server = try ServerProcess(["--mode", "prefork", "--workers", "3"])
            defer { server.stop() }
            let started = Self.workers(of: server.pid)
            #expect(started.count == 3)
            #expect(try Self.answeringWorkers(server, requests: 60) == Set(started.map(String.init)))

            // One signal at a time: the kernel keeps one pending instance of each signal, so two
            // sent back to back may arrive as one, for gunicorn as for any process.
            kill(server.pid, SIGTTIN)
            #expect(BoundedWait.eventually(within: 5) { Self.workers(of: server.pid).count == 4 })
            for expected in [3, 2, 1] {
                kill(server.pid, SIGTTOU)
                #expect(BoundedWait.eventually(within: 5) { Self.workers(of: server.pid).count == expected })
            }
            kill(server.pid, SIGTTOU)
            Thread.sleep(forTimeInterval: 0.3)
            #expect(Self.workers(of: server.pid).count == 1, "never fewer than one")
            #expect(try server.get("/health").text == "ok")
        }

        @Test func aKilledWorkerIsReplacedAndOnlyItsRequestsFail() throws {
            let server = try ServerProcess(["--mode", "prefork", "--workers", "2"])
            defer { server.stop() }
            let before = Self.workers(of: server.pid)
            let victim = try #require(before.first)
            let stopLoad = LockedFlag()
            // Four clients, one request per connection: at most four requests are in flight at the
            // moment of the kill, and only those on the victim may fail.
            let outcomes = try concurrently(5) { client -> (ok: Int, failed: Int) in
                if client == 4 {
                    Thread.sleep(forTimeInterval: 0.3)
                    kill(victim, SIGKILL)
                    let replaced = BoundedWait.eventually(within: 1) {
                        let now = Self.workers(of: server.pid)
                        return now.count == 2 && !now.contains(victim)
                    }
                    #expect(replaced, "no replacement within 1 s")
                    Thread.sleep(forTimeInterval: 0.3)
                    stopLoad.set()
                    return (0, 0)
                }
                var ok = 0, failed = 0
                while !stopLoad.isSet {
                    if (try? server.get("/cpu?work=100").status) == 200 { ok += 1 } else { failed += 1 }
                }
                return (ok, failed)
            }
            let failed = outcomes.reduce(0) { $0 + $1.failed }
            #expect(failed <= 4, "\(failed) requests failed")
            #expect(outcomes.reduce(0) { $0 + $1.ok } > 20)
        }

        @Test func termLetsASlowRequestFinishThenTheMasterExitsZero() throws {
            let server = try ServerProcess(["--mode", "prefork", "--workers", "2"])
            let workers = Self.workers(of: server.pid)
            let slow = try concurrently(2) { index -> HTTPReply? in
                if index == 1 {
                    Thread.sleep(forTimeInterval: 0.2)
                    kill(server.pid, SIGTERM)
                    return nil
                }
                return try server.get("/io?ms=800")
            }
            #expect(slow[0]?.status == 200)
            #expect(server.stop() == 0)
            #expect(workers.allSatisfy { !Self.isRunning($0) })
        }

        /// A worker that cannot boot (here it runs out of file descriptors for its four loops,
        /// while the master still fits) makes the master give up, naming the reason.
        @Test func aWorkerThatCannotBootStopsTheMaster() throws {
            let started = Date()
            let result = try runThreadbare(
                ["serve", "--mode", "prefork", "--workers", "1", "--loops", "4", "--port", "0"],
                launcher: ["/usr/bin/prlimit", "--nofile=12:12"])
            #expect(result.status != 0)
            #expect(result.stderr.contains("failed to boot 3 times in a row"), "\(result.stderr)")
            #expect(result.stderr.contains("Too many open files"), "\(result.stderr)")
            #expect(!result.stdout.contains("listening on"))
            #expect(Date().timeIntervalSince(started) < 20)
        }

        @Test func workersLeaveWhenTheMasterIsKilled() throws {
            let server = try ServerProcess(["--mode", "prefork", "--workers", "2"])
            let workers = Self.workers(of: server.pid)
            #expect(workers.count == 2)
            server.stop(signal: SIGKILL)
            #expect(BoundedWait.eventually(within: 5) { workers.allSatisfy { !Self.isRunning($0) } })
        }

        @Test func statsListEveryWorkerWhicheverAnswers() throws {
            let server = try ServerProcess(["--mode", "prefork", "--workers", "2"])
            defer { server.stop() }
            for _ in 0..<30 { _ = try server.get("/health") }
            let workers = try #require(try server.json("/stats")["workers"] as? [String: Any])
            let each = try #require(workers["each"] as? [[String: Any]])
            #expect(Set(each.compactMap { $0["pid"] as? Int }.map(Int32.init)) == Self.workers(of: server.pid))
            #expect((workers["requests"] as? Int ?? 0) >= 30)
            // Other workers publish their connection counts with their heartbeat, once a second.
            #expect(BoundedWait.eventually(within: 3) {
                let latest = (try? server.json("/stats")["workers"] as? [String: Any]) ?? [:]
                return (latest["connections"] as? Int ?? 0) >= 30
            }, "one connection per request")
            #expect(each.allSatisfy { ($0["pss_bytes"] as? Int ?? 0) > 0 && $0["state"] as? String == "ready" })
            #expect((workers["pss_bytes"] as? Int ?? 0) < (workers["rss_bytes"] as? Int ?? 0), "forked workers share pages")
        }

        @Test func eachWorkerHasItsOwnCache() throws {
            let server = try ServerProcess(["--mode", "prefork", "--workers", "2"])
            defer { server.stop() }
            let writer = try server.connect()
            let stored = try writer.request("PUT", "/cache/k", body: Array("mine".utf8))
            #expect(stored.status == 201)
            var other: HTTPReply?
            for _ in 0..<40 where other == nil {
                let reply = try server.get("/cache/k")
                if reply.headers["x-worker"] != stored.headers["x-worker"] { other = reply }
            }
            #expect(try #require(other).status == 404, "another worker must not see the key")
            #expect(try writer.request("GET", "/cache/k").text == "mine")
            let statistics = try #require(try server.json("/cache")["workers"] as? [String: Any])
            let each = try #require(statistics["each"] as? [[String: Any]])
            #expect(each.compactMap { $0["entries"] as? Int }.sorted() == [0, 1])
            #expect((statistics["total"] as? [String: Any])?["entries"] as? Int == 1)
        }

        @Test func theSharedCacheIsOneCacheForEveryWorker() throws {
            let server = try ServerProcess(["--mode", "prefork", "--workers", "2", "--set", "cache.backend=shm"])
            defer { server.stop() }
            let stored = try server.request("PUT", "/cache/k", headers: ["Content-Type": "text/x-shared"], body: Array("ours".utf8))
            #expect(stored.status == 201)
            var readers: Set<String> = []
            for _ in 0..<40 {
                let reply = try server.get("/cache/k")
                #expect(reply.status == 200 && reply.text == "ours" && reply.headers["content-type"] == "text/x-shared")
                readers.insert(reply.headers["x-worker"] ?? "")
            }
            #expect(readers.contains { $0 != stored.headers["x-worker"] }, "another worker read what one stored")
            let statistics = try server.json("/cache")
            #expect(statistics["backend"] as? String == "shm" && statistics["entries"] as? Int == 1)
            #expect(statistics["hits"] as? Int == 40)
            let workers = try #require(statistics["workers"] as? [String: Any])
            let each = try #require(workers["each"] as? [[String: Any]])
            #expect(each.compactMap { $0["hits"] as? Int }.reduce(0, +) == 40, "each worker counts the hits it served")
            #expect((workers["total"] as? [String: Any])?["entries"] as? Int == 1, "one cache, counted once")
        }

        /// Writers of large values are killed with SIGKILL, again and again, while others read:
        /// afterwards every key holds a whole value or none, the counts agree with what is
        /// there, and no bucket stays locked.
        @Test func workersKilledMidWriteLeaveTheSharedCacheWhole() throws {
            let valueBytes = 96 * 1_024, keys = 24
            let server = try ServerProcess(["--mode", "prefork", "--workers", "2", "--set", "cache.backend=shm",
                                            "--set", "cache.max_entries=14", "--set", "cache.max_bytes=\(14 * 128 * 1_024)"])
            defer { server.stop() }
            /// A value all of one byte, so a mix of two writes shows.
            @Sendable func isWhole(_ body: [UInt8]) -> Bool { body.count == valueBytes && body.allSatisfy { $0 == body[0] } }
            let stop = LockedFlag()
            let outcomes = try concurrently(5) { client -> (kills: Int, torn: [String]) in
                if client == 4 {
                    defer { stop.set() }
                    var kills = 0
                    for _ in 0..<12 {
                        Thread.sleep(forTimeInterval: 0.15)
                        if let victim = Self.workers(of: server.pid).randomElement() {
                            kill(victim, SIGKILL)
                            kills += 1
                        }
                    }
                    return (kills, [])
                }
                var round = 0, torn: [String] = []
                while !stop.isSet {
                    round += 1
                    let key = "k\((client * 7 + round) % keys)"
                    let stamp = UInt8(truncatingIfNeeded: client * 64 + round)
                    // Killed workers cut requests off: those fail, and must not hurt the cache.
                    if client < 2 {
                        _ = try? server.request("PUT", "/cache/\(key)", body: [UInt8](repeating: stamp, count: valueBytes))
                    } else if let reply = try? server.get("/cache/\(key)"), reply.status == 200, !isWhole(reply.body) {
                        torn.append("\(key): \(reply.body.count) bytes, not one value")
                    }
                }
                return (0, torn)
            }
            #expect(outcomes[4].kills > 5, "workers were killed")
            #expect(outcomes.flatMap(\.torn).isEmpty, "\(outcomes.flatMap(\.torn))")
            #expect(BoundedWait.eventually(within: 15) { Self.workers(of: server.pid).count == 2 })
            for index in 0..<keys {
                let reply = try server.get("/cache/k\(index)")
                #expect(reply.status == 200 || reply.status == 404, "\(reply.status) \(reply.text)")
                if reply.status == 200 { #expect(isWhole(reply.body), "k\(index) holds a torn value") }
            }
            for index in 0..<keys {
                #expect(try server.request("PUT", "/cache/k\(index)", body: [1]).status < 300, "no bucket is locked for ever")
            }
            let present = try (0..<keys).filter { index in
                let reply = try server.get("/cache/k\(index)")
                #expect(reply.status == 404 || reply.body == [1])
                return reply.status == 200
            }
            let statistics = try server.json("/cache")
            #expect(statistics["entries"] as? Int == present.count, "the counts agree with what is there; repairs: \(statistics["repairs"] ?? "?")")
            #expect(present.count >= 7, "a full cache keeps at least a bucket's worth")
        }

        /// Start-up data preloaded before the fork starts shared by every worker. Reading all of
        /// it through each worker copies its pages into that worker when reads write a reference
        /// count in each entry (CPython with a GIL, plain; or atomic), and leaves them shared
        /// when they do not (immortal objects). nogil's threads read the one copy their process
        /// made at start, and copy nothing, whatever the reads write.
        @Test(.disabled(if: underSanitizer, "a sanitizer's shadow memory and allocator write pages the server only reads"),
              arguments: [("prefork", "plain"), ("prefork", "atomic"), ("prefork", "immortal"), ("nogil", "atomic")])
        func startUpDataIsCopiedByWorkersWhoseReadsWriteCounts(mode: String, counting: String) throws {
            let entries = 4_000, valueBytes = 1_024
            let server = try ServerProcess(["--mode", mode, "--set", "cache.preload=\(entries)", "--set", "cache.preload_bytes=\(valueBytes)",
                                            "--set", "cache.refcount=\(counting)"] + (mode == "prefork" ? ["--workers", "2"] : ["--threads", "2"]))
            defer { server.stop() }
            /// Private dirty bytes of each serving process: the workers, or the one process.
            func privateDirty() throws -> [String: Int] {
                let stats = try server.json("/stats")
                guard let workers = stats["workers"] as? [String: Any] else {
                    let memory = try #require(stats["memory"] as? [String: Any])
                    return ["\(stats["pid"] ?? "")": try #require(memory["private_dirty_bytes"] as? Int)]
                }
                let each = try #require(workers["each"] as? [[String: Any]])
                return Dictionary(uniqueKeysWithValues: try each.map { worker in
                    let memory = try #require(worker["memory"] as? [String: Any])
                    return ("\(worker["pid"] ?? "")", try #require(memory["private_dirty_bytes"] as? Int))
                })
            }
            // Two connections, one per prefork worker (each stays with the worker that accepted it).
            var connections: [String: HTTPConnection] = [:]
            for attempt in 0..<40 where connections.count < 2 {
                let connection = try server.connect()
                let worker = try connection.request("GET", "/health").headers["x-worker"] ?? "thread \(attempt)"
                if connections[worker] == nil { connections[worker] = connection }
            }
            #expect(connections.count == 2)
            let before = try privateDirty()
            for connection in connections.values {
                for index in 0..<entries {
                    let reply = try connection.request("GET", "/cache/preload-\(index)")
                    #expect(reply.status == 200 && reply.body.count == valueBytes)
                }
            }
            let after = try privateDirty()
            let preloaded = entries * valueBytes
            #expect(after.count == (mode == "prefork" ? 2 : 1))
            for process in after.keys {
                let growth = try #require(after[process]) - (try #require(before[process]))
                if mode == "prefork" && counting != "immortal" {
                    #expect(growth > preloaded * 7 / 10, "\(process) copied \(growth) bytes of \(preloaded) preloaded")
                } else {
                    #expect(growth < preloaded * 3 / 10, "\(process) copied \(growth) bytes of \(preloaded) preloaded")
                }
            }
        }

        /// Keep-alive clients sending requests back to back until `stop` is set, reconnecting when
        /// an answer says Connection: close, as a well-behaved client does. Any error or non-200
        /// answer is a failed request.
        static func constantLoad(_ server: ServerProcess, clients: Int, path: String, until stop: LockedFlag,
                                 while body: @escaping @Sendable () throws -> Void) throws -> (ok: Int, failed: [String], workers: Set<String>) {
            let outcomes = try concurrently(clients + 1) { client -> (ok: Int, failed: [String], workers: Set<String>) in
                if client == clients {
                    defer { stop.set() }
                    try body()
                    return (0, [], [])
                }
                var ok = 0, failed: [String] = [], workers: Set<String> = []
                var connection: HTTPConnection?
                while !stop.isSet {
                    do {
                        let open = try connection ?? server.connect()
                        connection = open
                        let reply = try open.request("GET", path)
                        if reply.status == 200 { ok += 1 } else { failed.append("status \(reply.status)") }
                        if let worker = reply.headers["x-worker"] { workers.insert(worker) }
                        if reply.headers["connection"]?.lowercased() == "close" { connection = nil }
                    } catch {
                        failed.append("\(error)")
                        connection = nil
                    }
                }
                return (ok, failed, workers)
            }
            return outcomes.reduce((0, [], [])) { ($0.ok + $1.ok, $0.failed + $1.failed, $0.workers.union($1.workers)) }
        }

        @Test func hupReloadsUnderLoadWithoutAFailedRequest() throws {
            let file = try temporaryConfig("mode: prefork\nworkers: 2\ncpu:\n  max_work: 1000\n")
            defer { try? FileManager.default.removeItem(at: file) }
            let server = try ServerProcess(["--config", file.path])
            defer { server.stop() }
            let before = Self.workers(of: server.pid)
            let load = try Self.constantLoad(server, clients: 4, path: "/cpu?work=50", until: LockedFlag()) {
                Thread.sleep(forTimeInterval: 0.4)
                try "mode: prefork\nworkers: 2\ncpu:\n  max_work: 2000\n".write(to: file, atomically: true, encoding: .utf8)
                kill(server.pid, SIGHUP)
                #expect(BoundedWait.eventually(within: 10) {
                    let now = Self.workers(of: server.pid)
                    return now.count == 2 && now.isDisjoint(with: before)
                }, "every worker replaced")
                Thread.sleep(forTimeInterval: 0.4)
            }
            #expect(load.failed.isEmpty, "\(load.failed.count) failed: \(load.failed.prefix(3))")
            #expect(load.ok > 50)
            #expect(try server.get("/cpu?work=1500").status == 200, "the reloaded cpu.max_work is in effect")
        }

        @Test func maxRequestsRecyclesWorkersWithoutAFailedRequest() throws {
            let server = try ServerProcess(["--mode", "prefork", "--workers", "2", "--set", "max_requests=150", "--set", "max_requests_jitter=50"])
            defer { server.stop() }
            let initial = Self.workers(of: server.pid)
            let load = try Self.constantLoad(server, clients: 4, path: "/cpu?work=20", until: LockedFlag()) {
                // Load until both first workers have retired and been replaced, however slow the machine.
                #expect(BoundedWait.eventually(within: 30) { Self.workers(of: server.pid).isDisjoint(with: initial) }, "no worker recycled")
                Thread.sleep(forTimeInterval: 0.3)
            }
            #expect(load.failed.isEmpty, "\(load.failed.count) failed: \(load.failed.prefix(3))")
            #expect(load.workers.count > 2, "workers should have been recycled: \(load.workers)")
            // A worker may still be retiring when the load stops: its replacement boots and it
            // drains, which takes seconds under ThreadSanitizer on a busy machine.
            #expect(BoundedWait.eventually(within: 15) { Self.workers(of: server.pid).count == 2 }, "\(Self.workers(of: server.pid))")
        }

        /// logrotate moves the file away and sends USR1: every process writes to a new file.
        @Test(arguments: [("nogil", 1), ("prefork", 3)])
        func usr1ReopensTheLogFile(mode: String, processes: Int) throws {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("threadbare-logs-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let log = directory.appendingPathComponent("threadbare.log"), rotated = directory.appendingPathComponent("threadbare.log.1")
            let server = try ServerProcess(["--mode", mode, "--set", "log_file=\(log.path)"] + (mode == "prefork" ? ["--workers", "2"] : []))
            defer { server.stop() }
            let read = { (url: URL) in (try? String(contentsOf: url, encoding: .utf8)) ?? "" }
            #expect(BoundedWait.eventually(within: 5) { read(log).contains(mode == "prefork" ? "workers ready" : "serving") })
            try FileManager.default.moveItem(at: log, to: rotated)
            kill(server.pid, SIGUSR1)
            #expect(BoundedWait.eventually(within: 5) {
                read(log).components(separatedBy: "log file reopened").count - 1 == processes
            }, "new file: \(read(log))")
            #expect(!read(rotated).contains("log file reopened"))
            #expect(server.standardError.isEmpty, "logs go to the file only: \(server.standardError)")
        }

        /// Any worker is over a 1 MiB limit within a heartbeat, so each is recycled in turn.
        @Test func maxRSSRecyclesWorkersWithoutAFailedRequest() throws {
            let server = try ServerProcess(["--mode", "prefork", "--workers", "1", "--set", "max_rss_mb=1"])
            defer { server.stop() }
            let initial = Self.workers(of: server.pid)
            let load = try Self.constantLoad(server, clients: 2, path: "/health", until: LockedFlag()) {
                #expect(BoundedWait.eventually(within: 15) { Self.workers(of: server.pid).isDisjoint(with: initial) }, "no worker recycled")
            }
            #expect(load.failed.isEmpty, "\(load.failed.count) failed: \(load.failed.prefix(3))")
            #expect(load.ok > 10)
        }

        @Test func theMasterRunsNoThreads() throws {
            let server = try ServerProcess(["--mode", "prefork", "--workers", "1"])
            defer { server.stop() }
            let threads = { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(server.pid)/task").count) ?? 0 }
            #expect(threads() == 1, "forking from a threaded process is unsafe")
            let before = Self.workers(of: server.pid)
            // The forked thread only waits: the worker runs on a fresh thread (see PreforkWorker).
            let worker = try #require(before.first)
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(worker)/task")) ?? []).map { task in
                ((try? String(contentsOfFile: "/proc/\(worker)/task/\(task)/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            }
            #expect(names.contains("tb-worker"), "\(names)")
            kill(server.pid, SIGHUP)
            #expect(BoundedWait.eventually(within: 10) { Self.workers(of: server.pid).isDisjoint(with: before) && Self.workers(of: server.pid).count == 1 })
            #expect(threads() == 1, "nor after a reload")
        }

        /// config/prefork.yaml is gunicorn's sync worker: every answer closes its connection,
        /// HTTP/1.0 keep-alive included, and a worker busy with one connection accepts no other,
        /// so a connection opened meanwhile is served by the idle worker.
        @Test func theSyncWorkerServesOneConnectionAtATime() throws {
            let server = try ServerProcess(["--config", "config/prefork.yaml", "--workers", "2"])
            defer { server.stop() }
            let connection = try server.connect()
            let reply = try connection.request("GET", "/health")
            #expect(reply.status == 200 && reply.headers["connection"] == "close")
            #expect(BoundedWait.eventually(within: 5) { connection.isClosedByServer() })

            let oldClient = try server.connect()
            try oldClient.send(Array("GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".utf8))
            let oldReply = try oldClient.readReply()
            #expect(oldReply.status == 200)
            #expect(oldReply.rawHead.lowercased().components(separatedBy: "connection:").count == 2, "one Connection header: \(oldReply.rawHead)")
            #expect(oldReply.headers["connection"] == "close")

            // With the kernel spreading connections by hash, or a worker accepting while busy,
            // both slow requests land on one worker half the time or more.
            for round in 0..<3 {
                let workers = try concurrently(2) { index -> String in
                    if index == 1 { Thread.sleep(forTimeInterval: 0.15) }
                    return try #require(try server.get("/io?ms=400").headers["x-worker"])
                }
                #expect(workers[0] != workers[1], "round \(round): both on worker \(workers[0])")
            }
        }

        /// TTOU while every worker is busy with a slow request: the removed worker drains, and new
        /// connections meanwhile go to the others instead of waiting on its closing socket.
        @Test func removingAWorkerLosesNoNewConnection() throws {
            let server = try ServerProcess(["--mode", "prefork", "--workers", "2"])
            defer { server.stop() }
            var byWorker: [String: HTTPConnection] = [:]
            for _ in 0..<40 where byWorker.count < 2 {
                let connection = try server.connect()
                if let worker = try connection.request("GET", "/health").headers["x-worker"], byWorker[worker] == nil {
                    byWorker[worker] = connection
                }
            }
            let busy = Array(byWorker.values)
            #expect(busy.count == 2)
            let results = try concurrently(busy.count + 1) { index -> [Int] in
                if index < busy.count { return [try busy[index].request("GET", "/io?ms=1500").status] }
                Thread.sleep(forTimeInterval: 0.2)
                kill(server.pid, SIGTTOU)
                Thread.sleep(forTimeInterval: 0.3)
                return (0..<40).map { _ in (try? server.get("/health").status) ?? 0 }
            }
            #expect(results.flatMap { $0 }.allSatisfy { $0 == 200 }, "\(results)")
            #expect(BoundedWait.eventually(within: 5) { Self.workers(of: server.pid).count == 1 })
        }
    }
}
