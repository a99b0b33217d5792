import Foundation
import Testing

/// `cache.memcached` as a pool of two real memcached servers, shared with a Python client:
/// pylibmc (Debian's python3-pylibmc, which links libmemcached) with `ketama: True`.
extension LoadSensitive {
    @Suite("memcached pool: keys spread as ketama spreads them, shared with pylibmc, one server down costs only its keys", .serialized)
    struct MemcachedPoolSharingTests {
        /// Debian's python3 (the one python3-pylibmc installs into), not whatever is first on PATH.
        static let systemPython = "/usr/bin/python3"
        static var hasPylibmc: Bool {
            (try? runToCompletion(URL(fileURLWithPath: systemPython), ["-c", "import pylibmc"], deadline: 30).status) == 0
        }

        /// Runs `script` with pylibmc connected to `servers` as `client`; returns its stdout.
        static func pylibmc(_ servers: [MemcachedServer], _ script: String) throws -> String {
            let program = """
            import sys, pylibmc
            client = pylibmc.Client([\(servers.map { "'\($0.address)'" }.joined(separator: ", "))], behaviors={"ketama": True})
            \(script)
            """
            let result = try runToCompletion(URL(fileURLWithPath: systemPython), ["-c", program], deadline: 60)
            guard result.status == 0 else { throw HTTPConnection.Failure("pylibmc script failed: \(result.stderr)") }
            return result.stdout
        }

        /// What one memcached server holds under `key`, asked directly (text protocol).
        static func held(_ server: MemcachedServer, _ key: String) throws -> [UInt8]? {
            let fd = try HTTPConnection.connectedSocket(port: server.port, timeoutSeconds: 5)
            defer { close(fd) }
            let command = Array("get \(key)\r\n".utf8)
            guard send(fd, command, command.count, Int32(MSG_NOSIGNAL)) == command.count else { throw HTTPConnection.Failure("send failed") }
            var reply: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65_536)
            while !(reply.count >= 5 && Array(reply.suffix(5)) == Array("END\r\n".utf8)) {
                let count = recv(fd, &chunk, chunk.count, 0)
                guard count > 0 else { throw HTTPConnection.Failure("memcached closed") }
                reply += chunk[..<count]
            }
            guard reply.starts(with: Array("VALUE ".utf8)), let headEnd = reply.firstIndex(of: 10) else { return nil }
            let fields = String(decoding: reply[..<headEnd], as: UTF8.self).split(separator: " ")
            guard fields.count >= 4, let length = Int(fields[3].trimmingCharacters(in: .whitespacesAndNewlines)) else { return nil }
            return Array(reply[(headEnd + 1)..<(headEnd + 1 + length)])
        }

        @Test func keysSpreadAndPylibmcReadsWhatThreadbareWroteAndTheOtherWayRound() throws {
            try #require(Self.hasPylibmc, "python3-pylibmc is missing: `make test` installs it")
            let servers = [try MemcachedServer(), try MemcachedServer()]
            defer { servers.forEach { $0.stop() } }
            let server = try ServerProcess(["--mode", "nogil", "--set", "cache.backend=memcached",
                                            "--set", "cache.memcached=\(servers.map(\.address).joined(separator: ","))"])
            defer { server.stop() }
            let keys = (0..<100).map { "user:\($0)" }
            for key in keys {
                #expect(try server.request("PUT", "/cache/\(key)", body: Array("value of \(key)".utf8)).status == 201)
            }
            // Spread over both, each key held by exactly one, as the bytes that were PUT.
            let holders = try keys.map { key in try servers.indices.filter { try Self.held(servers[$0], key) == Array("value of \(key)".utf8) } }
            #expect(holders.allSatisfy { $0.count == 1 }, "every key on exactly one server")
            let spread = holders.map { $0.first ?? -1 }
            #expect(spread.filter { $0 == 0 }.count > 20 && spread.filter { $0 == 1 }.count > 20, "both servers hold a share")

            // pylibmc finds every key where Threadbare put it, as bytes (flags 0).
            let read = try Self.pylibmc(servers, """
            for key in [\(keys.map { "'\($0)'" }.joined(separator: ", "))]:
                value = client.get(key)
                print(key, 'bytes' if isinstance(value, bytes) else type(value).__name__, value.decode() if isinstance(value, bytes) else value)
            """)
            for key in keys {
                #expect(read.contains("\(key) bytes value of \(key)\n"), "pylibmc read \(key)")
            }

            // And Threadbare reads what pylibmc wrote, on whichever server ketama gave it.
            _ = try Self.pylibmc(servers, "client.set_multi({'py:%d' % i: b'from python %d' % i for i in range(50)})")
            for index in 0..<50 {
                let reply = try server.get("/cache/py:\(index)")
                #expect(reply.status == 200 && reply.text == "from python \(index)")
                #expect(reply.headers["content-type"] == "application/octet-stream")
            }

            // A content type survives in Threadbare's note; overwritten by another client, the value
            // reads as the new bytes, untyped.
            #expect(try server.request("PUT", "/cache/page", headers: ["Content-Type": "text/html"], body: Array("<p>hi</p>".utf8)).status == 201)
            #expect(try server.get("/cache/page").headers["content-type"] == "text/html")
            _ = try Self.pylibmc(servers, "client.set('page', b'plain now')")
            let overwritten = try server.get("/cache/page")
            #expect(overwritten.text == "plain now" && overwritten.headers["content-type"] == "application/octet-stream")

            let statistics = try server.json("/cache")
            let nodes = try #require(statistics["servers"] as? [[String: Any]])
            #expect(nodes.compactMap { $0["address"] as? String } == servers.map(\.address))
            #expect(nodes.allSatisfy { $0["reachable"] as? Bool == true })
        }

        @Test(arguments: ["gil", "async"])
        func oneServerDownCostsOnlyItsKeysAndItIsUsedAgainWhenItReturns(mode: String) throws {
            let servers = [try MemcachedServer(), try MemcachedServer()]
            defer { servers.forEach { $0.stop() } }
            let server = try ServerProcess(["--mode", mode, "--set", "cache.backend=memcached", "--set", "cache.memcached_timeout_ms=300",
                                            "--set", "cache.memcached=\(servers.map(\.address).joined(separator: ","))"])
            defer { server.stop() }
            let keys = (0..<60).map { "k\($0)" }
            for key in keys { #expect(try server.request("PUT", "/cache/\(key)", body: Array(key.utf8)).status == 201) }
            let onFirst = try Set(keys.filter { try Self.held(servers[0], $0) != nil })
            try #require(!onFirst.isEmpty && onFirst.count < keys.count)

            servers[0].stop()
            for key in keys {
                let reply = try server.get("/cache/\(key)")
                if onFirst.contains(key) {
                    #expect(reply.status == 503 && reply.text.contains(servers[0].address), "\(key): \(reply.status) \(reply.text)")
                    let computed = try server.get("/cache/\(key)?compute=10")
                    #expect(computed.status == 200 && computed.headers["x-cache"] == "unreachable", "a read-through computes around it")
                } else {
                    #expect(reply.status == 200 && reply.text == key, "\(key) lives on the other server")
                }
            }
            let during = try server.json("/cache")
            #expect(during["reachable"] as? Bool == false)
            let nodes = try #require(during["servers"] as? [[String: Any]])
            #expect(nodes.map { $0["reachable"] as? Bool } == [false, true])

            // Back on its port (empty, as a restarted memcached is): its keys are served again.
            try servers[0].start()
            let returned = try #require(onFirst.first)
            #expect(BoundedWait.eventually(within: 5) { (try? server.request("PUT", "/cache/\(returned)", body: Array("again".utf8)).status) == 201 })
            #expect(try server.get("/cache/\(returned)").text == "again")
            #expect(try Self.held(servers[0], returned) == Array("again".utf8), "stored on the server ketama gives it, not moved")
            #expect(try server.json("/cache")["reachable"] as? Bool == true)
        }
    }
}
