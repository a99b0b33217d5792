import Foundation
import Testing

/// Two Threadbare hosts, each in a network namespace of its own with its own address, behind
/// real nginx run from config/deploy/nginx.conf: a cluster on one machine.
extension LoadSensitive {
    @Suite("cluster: two namespaced hosts behind nginx", .serialized)
    struct ClusterTests {
        @Test("one host killed under load: nginx sends its requests to the other, and every idempotent request is answered",
              .enabled(if: FileManager.default.isExecutableFile(atPath: DeployFilesTests.nginx), "nginx is missing: make setup installs it"))
        func aHostKilledUnderLoad() throws {
            if let reason = TestNetwork.unavailableBecause {
                try Test.cancel("skipped: the cluster's hosts are network namespaces, and \(reason)")
            }
            let network = try TestNetwork(hosts: ["h1", "h2"])
            defer { network.tearDown() }
            let hosts = try (0..<2).map { index in
                try ServerProcess(["--mode", "gil", "--host", network.address(index)], launcher: network.inside(index))
            }
            defer { hosts.forEach { $0.stop() } }

            let directory = try DeployFilesTests.temporaryDirectory("cluster")
            defer { try? FileManager.default.removeItem(at: directory) }
            let port = try MemcachedServer.freePort()
            let conf = try DeployFilesTests.renderNginx(
                into: directory, port: port,
                hosts: hosts.enumerated().map { "server \(network.address($0.offset)):\($0.element.port) max_fails=3 fail_timeout=10s;" })
            let nginx = try NginxProcess(conf: conf, in: directory)
            defer { nginx.stop() }
            try #require(BoundedWait.eventually(within: 10) { (try? HTTPConnection(port: port).request("GET", "/health").status) == 200 },
                         "nginx did not answer:\n\(nginx.standardError)")

            // Closed-model load through nginx, GETs only (idempotent, so nginx may send one again).
            let (output, loadErrors) = ServerProcess.temporaryFiles()
            defer { [output, loadErrors].forEach { try? FileManager.default.removeItem(at: $0) } }
            let base = "http://127.0.0.1:\(port)"
            let loadtest = ServerProcess.binary.deletingLastPathComponent().appendingPathComponent("loadtest").path
            let load = try ChildProcess(loadtest, ["run", "\(base)/io?ms=5", "\(base)/health", "\(base)/cpu?work=50",
                                                   "-c", "8", "-d", "4s", "--timeout", "10s", "--json", "--quiet"],
                                        environment: ServerProcess.cleanEnvironment(adding: [:]),
                                        standardOutput: output.path, standardError: loadErrors.path)
            Thread.sleep(forTimeInterval: 1.5)
            kill(hosts[1].pid, SIGKILL)
            try #require(load.waitForExit(within: 120), "loadtest did not finish")
            let report = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: output)) as? [String: Any],
                                      "loadtest: \((try? String(contentsOf: loadErrors, encoding: .utf8)) ?? "")")
            let requests = report["requests"] as? Int ?? 0
            let failed = (report["errors"] as? [String: Any])?["total"] as? Int ?? -1
            #expect(failed == 0, "every request answered despite the kill: \(report["errors"] ?? "?")")
            #expect(requests > 100, "\(requests) requests")

            let log = (try? String(contentsOf: directory.appendingPathComponent("threadbare.access.log"), encoding: .utf8)) ?? ""
            let second = "\(network.address(1)):\(hosts[1].port)"
            #expect(log.contains("upstream=\(second) "), "the killed host served before it died")
            #expect(!hosts[1].process.isRunning, "the second host is gone")
            #expect(try HTTPConnection(port: port).request("GET", "/health").status == 200, "the first host serves on")
        }
    }
}
