import Foundation
import Testing

/// Under systemd: sockets passed in by socket activation (systemd-socket-activate, Debian's
/// systemd package, passes them exactly as systemd does) and readiness told to NOTIFY_SOCKET.
@Suite("systemd: socket activation and Type=notify", .serialized)
struct SystemdTests {
    static let activator = "/usr/bin/systemd-socket-activate"

    /// A reload under a steady stream of new connections: every request is answered.
    static func requestsDuringReload(_ server: ServerProcess, reload: @escaping @Sendable () -> Void) throws -> (answered: Int, failures: [String]) {
        let done = LockedFlag()
        let outcomes = try concurrently(3) { client -> (Int, [String]) in
            if client == 2 {
                Thread.sleep(forTimeInterval: 0.3)
                reload()
                done.set()
                return (0, [])
            }
            var answered = 0
            var failures: [String] = []
            while !done.isSet || answered < 20 {
                do {
                    let reply = try server.get("/health")
                    if reply.status == 200 { answered += 1 } else { failures.append("status \(reply.status)") }
                } catch {
                    failures.append("\(error)")
                }
                if answered > 5_000 { break }
            }
            return (answered, failures)
        }
        return (outcomes.map(\.0).reduce(0, +), outcomes.flatMap(\.1))
    }

    @Test("nogil serves the socket it is passed and keeps it through a HUP, reloading in place")
    func singleProcessActivatedAndReloaded() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.activator), "systemd-socket-activate is missing (Debian's systemd package)")
        let port = try MemcachedServer.freePort()
        let config = try temporaryConfig(try String(contentsOf: repositoryRoot.appendingPathComponent("config/nogil.yaml"), encoding: .utf8))
        defer { try? FileManager.default.removeItem(at: config) }
        let server = try ServerProcess(["--config", config.path], launcher: [Self.activator, "-l", "127.0.0.1:\(port)"], activationPort: port)
        defer { server.stop() }
        #expect(server.port == port, "it serves the activator's socket, not one of its own on port 0")
        #expect(server.standardError.contains("serving the sockets passed in"))
        #expect(try server.json("/")["threads"] as? Int == 8)

        // The file changes, then HUP: the same process starts again with it, on the same socket.
        let edited = try String(contentsOf: config, encoding: .utf8).replacingOccurrences(of: "threads: 8 ", with: "threads: 3 ")
        try edited.write(to: config, atomically: true, encoding: .utf8)
        let (answered, failures) = try Self.requestsDuringReload(server) {
            kill(server.pid, SIGHUP)
            _ = BoundedWait.eventually(within: 30) { server.listeningLines == 2 }
        }
        #expect(server.listeningLines == 2, "a second start after the HUP; stderr:\n\(server.standardError)")
        #expect(failures.isEmpty, "\(failures.count) of \(answered + failures.count) requests failed across the reload: \(failures.prefix(3))")
        let index = try server.json("/")
        #expect(index["threads"] as? Int == 3, "the reloaded configuration")
        #expect(index["pid"] as? Int == Int(server.pid), "the same process, as systemd's Type=notify expects")
        #expect(server.stop() == 0)
    }

    @Test("prefork's workers share the socket it is passed, and a HUP's new workers keep it")
    func preforkActivatedAndReloaded() throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.activator), "systemd-socket-activate is missing (Debian's systemd package)")
        let port = try MemcachedServer.freePort()
        let server = try ServerProcess(
            ["--config", repositoryRoot.appendingPathComponent("config/prefork.yaml").path, "--workers", "2", "--accept", "reuseport"],
            launcher: [Self.activator, "-l", "127.0.0.1:\(port)"], activationPort: port)
        defer { server.stop() }
        #expect(server.port == port)
        #expect(server.standardError.contains("shared by every worker"), "reuseport cannot bind beside systemd's socket")
        let before = LoadSensitive.PreforkTests.workers(of: server.pid)
        #expect(before.count == 2)
        let (answered, failures) = try Self.requestsDuringReload(server) {
            kill(server.pid, SIGHUP)
            _ = BoundedWait.eventually(within: 30) {
                let now = LoadSensitive.PreforkTests.workers(of: server.pid)
                return now.count == 2 && now.isDisjoint(with: before)
            }
        }
        let after = LoadSensitive.PreforkTests.workers(of: server.pid)
        #expect(after.count == 2 && after.isDisjoint(with: before), "every worker replaced: \(before) then \(after)")
        #expect(failures.isEmpty, "\(failures.count) of \(answered + failures.count) requests failed across the reload: \(failures.prefix(3))")
        let answering = Set(try (0..<40).map { _ in try #require(try server.get("/health").headers["x-worker"]) })
        #expect(answering.isSubset(of: Set(after.map(String.init))))
        #expect(server.stop() == 0)
    }

    @Test("what it is passed must be listening TCP sockets; a malformed LISTEN_FDS is named")
    func badInheritedSockets() throws {
        let binary = ServerProcess.binary.path
        for (setup, expected) in [("exec 3</dev/null; LISTEN_FDS=1", "descriptor 3 is not a socket"),
                                  ("LISTEN_FDS=two", "LISTEN_FDS=two is not a number")] {
            let result = try runToCompletion(URL(fileURLWithPath: "/bin/sh"),
                                             ["-c", "\(setup) LISTEN_PID=$$ exec \"$0\" serve --mode nogil", binary], deadline: 60)
            #expect(result.status == 1)
            #expect(result.stderr.contains(expected), "stderr: \(result.stderr)")
        }
    }

    @Test("READY=1 once it serves, RELOADING=1 and READY=1 around a HUP, STOPPING=1 on TERM", arguments: ["nogil", "prefork"])
    func notifiesReadiness(mode: String) throws {
        let listener = try NotifyListener()
        var arguments = ["--mode", mode]
        if mode == "prefork" { arguments += ["--workers", "2"] }
        let server = try ServerProcess(arguments, environment: ["NOTIFY_SOCKET": listener.path])
        defer { server.stop() }
        let ready = try listener.next()
        #expect(ready.contains("READY=1"))
        #expect(ready.contains("MAINPID=\(server.pid)"))
        #expect(ready.contains("STATUS=serving"))

        kill(server.pid, SIGHUP)
        #expect(try listener.next().contains("RELOADING=1"))
        #expect(try listener.next().contains("READY=1"), "ready again once the reload is done")
        #expect(try server.get("/health").status == 200)

        kill(server.pid, SIGTERM)
        #expect(try listener.next().contains("STOPPING=1"))
        #expect(server.stop() == 0)
    }
}

/// A Unix datagram socket bound where NOTIFY_SOCKET will point, as systemd's is.
final class NotifyListener {
    let path: String
    private let fd: Int32

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("tb-notify-\(UUID().uuidString.prefix(8))").path
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
        guard bound else { throw HTTPConnection.Failure("cannot bind \(path): \(String(cString: strerror(errno)))") }
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The next message, or a failure after 30 s.
    func next() throws -> String {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(fd, &buffer, buffer.count, 0)
        guard count > 0 else { throw HTTPConnection.Failure("no notification within 30 s") }
        return String(decoding: buffer[..<count], as: UTF8.self)
    }

    deinit {
        close(fd)
        unlink(path)
    }
}
