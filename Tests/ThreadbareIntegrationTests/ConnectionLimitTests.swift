import Foundation
import Testing

/// A process's connections: counted from accept to close (silent ones too), refused in order past
/// `max_connections`, and, when accept(2) runs out of descriptors, paused without spinning and
/// resumed once descriptors free.
@Suite("Connection limit and descriptor exhaustion")
struct ConnectionLimitTests {
    static func stats(_ server: ServerProcess) throws -> [String: Any] { try server.json("/stats") }

    @Test func connectionsPastTheLimitGet503AndSilentOnesAreCounted() throws {
        let server = try ServerProcess(["--set", "max_connections=3"])
        defer { server.stop() }
        // Two connections that never speak, and one that does: the limit is reached.
        var silent: [HTTPConnection]? = try (0..<2).map { _ in try server.connect() }
        let speaking = try server.connect()
        #expect(try speaking.request("GET", "/health").status == 200)

        let refusedConnection = try server.connect()
        let refused = try refusedConnection.request("GET", "/health")
        #expect(refused.status == 503)
        #expect(refused.headers["retry-after"] == "1")
        #expect(refused.headers["connection"] == "close")
        #expect(try refused.json()["error"] as? String == "this process already has max_connections (3) open; retry later")
        #expect(refusedConnection.isClosedByServer())
        #expect(try speaking.request("GET", "/health").status == 200)
        #expect(silent?.count == 2)

        // Closing the silent two makes room; evhttp never saw a request on them, the count did.
        silent = nil
        #expect(BoundedWait.eventually(within: 10) { (try? Self.stats(server)["connections_open"] as? Int) == 2 })
        #expect(try Self.stats(server)["connections_refused"] as? Int == 1)
        #expect(try server.get("/health").status == 200)
    }

    @Test func runningOutOfDescriptorsPausesAcceptingWithoutSpinning() throws {
        let server = try ServerProcess(descriptorLimit: 64)
        defer { server.stop() }
        let kept = try server.connect()
        #expect(try kept.request("GET", "/health").status == 200)

        // More connections than descriptors: the kernel completes them all, accept(2) cannot.
        var flood: [HTTPConnection]? = try (0..<100).map { _ in try HTTPConnection(port: server.port, timeoutSeconds: 5) }
        Thread.sleep(forTimeInterval: 0.3)
        let cpuBefore = try Self.cpuSeconds(server.process.pid)
        let wallBefore = Date()
        Thread.sleep(forTimeInterval: 1.5)
        let share = (try Self.cpuSeconds(server.process.pid) - cpuBefore) / Date().timeIntervalSince(wallBefore)
        // A listener left enabled on EMFILE is woken again at once and holds a core (share ≈ 1).
        #expect(share < 0.5, "the server used \(share) of a core while out of descriptors")
        // Connections already open are served meanwhile.
        #expect(try kept.request("GET", "/health").status == 200)
        #expect(flood?.count == 100)

        flood = nil
        #expect(BoundedWait.eventually(within: 10) { (try? server.get("/health"))?.status == 200 })
        #expect(try Self.stats(server)["accept_pauses"] as? Int ?? 0 > 0)
        let log = server.standardError
        #expect(log.contains("accept failed: Too many open files; pausing accepts"))
        #expect(log.contains("accepting connections again"))
    }

    /// User plus system CPU time of a process, from /proc.
    static func cpuSeconds(_ pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        let fields = stat[stat.range(of: ")")!.upperBound...].split(separator: " ")
        return (Double(fields[11])! + Double(fields[12])!) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}
