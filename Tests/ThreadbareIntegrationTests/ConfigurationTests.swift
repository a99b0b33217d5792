import Foundation
import Testing

@Suite("Configuration files, environment and flags, as a deployment uses them")
struct ConfigurationTests {
    @Test(arguments: ["nogil", "gil", "subinterpreters", "prefork", "async", "prefork-async", "nogil-async"])
    func shippedConfigIsValid(mode: String) throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let result = try runThreadbare(["config", "check", root.appendingPathComponent("config/\(mode).yaml").path])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("mode: \(mode)  #"))
        #expect(result.stdout.contains("  max_entries: 10000"))
    }

    /// A combination that cannot run stops the server before it binds, naming the keys.
    @Test func impossibleModeIsRefusedNamingTheKeys() throws {
        let result = try runThreadbare(["serve", "--port", "0", "--mode", "async", "--workers", "2"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("workers: 2 needs master: true"), "\(result.stderr)")
        #expect(result.stderr.contains("workers from command line --workers"), "\(result.stderr)")
        let clash = try runThreadbare(["serve", "--port", "0", "--mode", "gil", "--lock", "none"])
        #expect(clash.status == 2)
        #expect(clash.stderr.contains("lock: none contradicts mode: gil"), "\(clash.stderr)")
    }

    @Test func precedenceIsFlagThenEnvironmentThenFileThenDefault() throws {
        let file = try temporaryConfig("threads: 3\nloops: 2\nqueue_limit: 7\n")
        defer { try? FileManager.default.removeItem(at: file) }
        let result = try runThreadbare(
            ["config", "check", file.path, "--threads", "5"],
            environment: ["THREADBARE_THREADS": "4", "THREADBARE_LOOPS": "3"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("threads: 5  # command line --threads"))
        #expect(result.stdout.contains("loops: 3  # environment THREADBARE_LOOPS"))
        #expect(result.stdout.contains("queue_limit: 7  # \(file.path):3"))
        #expect(result.stdout.contains("backlog: 2048  # default"))
    }

    @Test func environmentConfiguresTheServer() throws {
        let server = try ServerProcess([], environment: ["THREADBARE_THREADS": "2", "THREADBARE_CPU_MAX_WORK": "5"])
        defer { server.stop() }
        #expect(try server.json("/")["threads"] as? Int == 2)
        #expect(try server.get("/cpu?work=6").status == 400)
    }

    @Test func configFileConfiguresTheServer() throws {
        let file = try temporaryConfig("threads: 6\ncache:\n  max_entries: 1\n")
        defer { try? FileManager.default.removeItem(at: file) }
        let server = try ServerProcess(["--config", file.path])
        defer { server.stop() }
        #expect(try server.json("/")["threads"] as? Int == 6)
        #expect(try server.json("/cache")["max_entries"] as? Int == 1)
    }

    @Test(arguments: [
        ("cahce:\n  max_entries: 5\n", ":1: unknown key 'cahce' (did you mean 'cache'?)"),
        ("cache:\n  max_entrys: 5\n", ":2: unknown key 'cache.max_entrys' (did you mean 'cache.max_entries'?)"),
        ("threads: many\n", ":1: threads: expected an integer from 1 to 1024, got 'many'"),
        ("threads: 0\n", ":1: threads: must be from 1 to 1024, got 0"),
        ("port: 70000\n", ":1: port: must be from 0 to 65535, got 70000"),
        ("cache: 5\n", ":1: 'cache' is a section"),
        ("threads:\n", ":1: threads: has no value"),
        ("threads: [1, 2]\n", ":1: threads: expected a single value, got a list"),
        ("threads: 2\nthreads: 3\n", "duplicated key(s): 'threads'"),
        ("mode: turbo\n", ":1: mode: expected one of nogil, gil, subinterpreters, prefork, async, prefork-async, nogil-async, got 'turbo'"),
        ("- just\n- a list\n", ":1: expected a mapping of keys to values at the top level"),
        ("threads: [unclosed\n", "not valid YAML"),
        ("cache:\n  backend: redis\n", ":2: cache.backend: expected one of local, shm, memcached, got 'redis'"),
        ("cache:\n  refcount: maybe\n", ":2: cache.refcount: expected one of immortal, plain, atomic, got 'maybe'"),
        ("cache:\n  refcount_touch: true\n", ":2: cache.refcount_touch: retired; use cache.refcount: plain (was true)"),
        ("cache:\n  backend: shm\n  max_entries: 10\n  preload: 20\n", ":4: cache.preload: 20 entries do not fit cache.max_entries 10"),
    ])
    func badFileIsRefusedNamingFileKeyAndReason(yaml: String, message: String) throws {
        let file = try temporaryConfig(yaml)
        defer { try? FileManager.default.removeItem(at: file) }
        for command in [["config", "check", file.path], ["serve", "--config", file.path, "--port", "0"]] {
            let result = try runThreadbare(command)
            #expect(result.status == 2)
            #expect(result.stderr.contains(file.path), "\(result.stderr)")
            #expect(result.stderr.contains(message), "\(result.stderr)")
        }
    }

    @Test func badEnvironmentAndFlagsAreRefused() throws {
        let typo = try runThreadbare(["config", "check", "/dev/null"], environment: ["THREADBARE_THREDS": "4"])
        #expect(typo.status == 2)
        #expect(typo.stderr.contains("environment THREADBARE_THREDS: unknown variable (did you mean 'THREADBARE_THREADS'?)"))

        let badValue = try runThreadbare(["serve", "--port", "0"], environment: ["THREADBARE_LOOPS": "zero"])
        #expect(badValue.status == 2)
        #expect(badValue.stderr.contains("environment THREADBARE_LOOPS: loops: expected an integer"))

        let badFlag = try runThreadbare(["serve", "--port", "http"])
        #expect(badFlag.status == 2)
        #expect(badFlag.stderr.contains("command line --port: port: expected an integer"))

        let badSet = try runThreadbare(["serve", "--set", "cache.size=5"])
        #expect(badSet.status == 2)
        #expect(badSet.stderr.contains("command line --set cache.size: unknown key 'cache.size'"))

        let missing = try runThreadbare(["serve", "--config", "/nonexistent/threadbare.yaml"])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("/nonexistent/threadbare.yaml: cannot read config file: No such file or directory"))
    }

    @Test func anUnwritableLogFileIsAClearError() throws {
        let result = try runThreadbare(["serve", "--port", "0", "--set", "log_file=/nonexistent/threadbare.log"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("cannot open log file /nonexistent/threadbare.log: No such file or directory"), "\(result.stderr)")
    }

    /// /dev/full takes the open and refuses every write (ENOSPC), as a full disk does.
    @Test func aLogFileThatStopsTakingWritesLosesLinesNotRequests() throws {
        let server = try ServerProcess(["--set", "log_file=/dev/full"])
        defer { server.stop() }
        #expect(try server.get("/health").status == 200)
        #expect(try server.json("/stats")["log_lines_lost"] as? Int ?? 0 >= 1)
        kill(server.process.pid, SIGUSR1)
        #expect(try server.get("/health").status == 200)
    }

    @Test func impossibleModeSettingsSayWhyAndExit2() throws {
        let result = try runThreadbare(["serve", "--mode", "subinterpreters", "--threads", "2", "--interpreters", "3", "--port", "0"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("threads 2 < interpreters 3"), "\(result.stderr)")
    }

    @Test func portInUseIsAClearError() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        // SO_REUSEPORT lets sockets of the same user share a port, so take it with a plain socket.
        let blocker = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(blocker) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(blocker, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(blocker, 1)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(blocker, $0, &length) } }
        let port = Int(UInt16(bigEndian: address.sin_port))
        let result = try runThreadbare(["serve", "--port", String(port)])
        #expect(result.status == 1)
        #expect(result.stderr.contains("cannot bind 127.0.0.1:\(port)"), "\(result.stderr)")
    }
}
