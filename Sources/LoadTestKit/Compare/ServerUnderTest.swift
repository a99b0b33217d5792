import CLibevent
import Foundation
import ProcessInspection
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One server compare measures: a `threadbare serve` started from a mode's config file, or an
/// external target started from its command, each on a free port with its output in a log
/// file; stopped with SIGTERM (and SIGKILL if it will not go).
final class ServerUnderTest {
    let mode: String
    let target: Target
    /// https: how its certificate is checked (an external target's own settings).
    let tls: TLSOptions
    private let process = Process()
    /// The memcached servers the mode's configuration needs that compare started.
    private let memcached: [MemcachedSidecar]
    /// An external target: its whole process group is signalled, and it has this long to stop.
    private let stopTimeout: Double
    private let signalsGroup: Bool
    /// The external target's process group, read once while it surely runs: after it exits its
    /// pid may belong to someone else.
    private var processGroup: pid_t?
    /// How it stopped, once it has: stop() runs once, whoever calls it.
    private var stopped: String?

    struct StartFailure: Error, CustomStringConvertible {
        let description: String
    }

    /// Starts `binary serve --config CONFIG --port 0` and waits (at most 20 s) for its
    /// `listening on` line.
    init(mode: String, binary: String, config: String, arguments: [String] = [], log: URL) throws {
        self.mode = mode
        tls = TLSOptions()
        stopTimeout = 10
        signalsGroup = false
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw StartFailure(description: "no threadbare executable at \(binary) (build it, or pass --threadbare)")
        }
        guard FileManager.default.fileExists(atPath: config) else { throw StartFailure(description: "no config file at \(config)") }
        try Self.createLog(log)
        memcached = try MemcachedSidecar.startIfNeeded(threadbare: binary, config: config)
        let output = Pipe()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--config", config, "--port", "0", "--host", "127.0.0.1"] + arguments
        process.standardOutput = output
        process.standardError = try FileHandle(forWritingTo: log)
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch {
            memcached.forEach { $0.stop() }
            throw StartFailure(description: "cannot run \(binary): \(error)")
        }

        // The first line on stdout is the address; read it with a deadline.
        let reader = output.fileHandleForReading
        var text = ""
        let deadline = Date().addingTimeInterval(20)
        var pollEntry = pollfd(fd: reader.fileDescriptor, events: Int16(POLLIN), revents: 0)
        while !text.contains("\n") && Date() < deadline {
            guard poll(&pollEntry, 1, 100) >= 0 else { break }
            if pollEntry.revents != 0 {
                let chunk = reader.availableData
                if chunk.isEmpty { break }
                text += String(decoding: chunk, as: UTF8.self)
            }
        }
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("listening on ") }),
              let parsed = try? Target(url: String(line.dropFirst("listening on ".count))) else {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
            memcached.forEach { $0.stop() }
            throw StartFailure(description: "\(mode) did not start (exit \(process.isRunning ? "-" : String(process.terminationStatus))): "
                               + Self.lastLines(of: log))
        }
        target = parsed
        Self.running.withLock { $0.append(process.processIdentifier) }
        // Drain what the server prints later, so it can never block on a full pipe.
        reader.readabilityHandler = { handle in _ = handle.availableData }
    }

    /// Starts an external target's command (`exec COMMAND` under /bin/sh) on a free port and waits until its
    /// ready path answers anything HTTP, within its start timeout. `environment` is added to
    /// compare's own, below the target's.
    init(external: ExternalTarget, environment: [String: String], log: URL) throws {
        mode = external.name
        tls = external.tls
        stopTimeout = external.stopTimeout
        signalsGroup = true
        memcached = []
        try Self.createLog(log)
        let port = try Self.freePort()
        do { target = try Target(url: external.filled(external.url, port: port)) } catch {
            throw StartFailure(description: "url: \(error)")
        }
        var variables = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        variables["PORT"] = String(port)
        for (name, value) in external.environment { variables[name] = external.filled(value, port: port) }
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        // exec: the server itself, not a shell waiting for it, is the process compare watches.
        process.arguments = ["-c", "exec " + external.filled(external.command, port: port)]
        process.environment = variables
        let output = try FileHandle(forWritingTo: log)
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch { throw StartFailure(description: "cannot run /bin/sh: \(error)") }
        Self.running.withLock { $0.append(process.processIdentifier) }
        // Foundation makes the child the leader of a process group of its own.
        if getpgid(process.processIdentifier) == process.processIdentifier { processGroup = process.processIdentifier }

        let deadline = Date().addingTimeInterval(external.startTimeout)
        while request(external.readyPath, timeout: 1) == nil {
            if let exit {
                throw StartFailure(description: "\(external.name) did not start: its command \(exit): " + Self.lastLines(of: log))
            }
            guard Date() < deadline else {
                stop()
                throw StartFailure(description: "\(external.name) did not answer \(external.readyPath) on \(target.hostHeader) within "
                                   + "\(Comparison.format(external.startTimeout)) s: " + Self.lastLines(of: log))
            }
            usleep(100_000)
        }
    }

    private static func createLog(_ log: URL) throws {
        guard FileManager.default.createFile(atPath: log.path, contents: nil) else {
            throw StartFailure(description: "cannot write the log file \(log.path)")
        }
    }

    /// What a server said last before it failed, for the reason compare reports.
    private static func lastLines(of log: URL) -> String {
        let logged = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        let lines = logged.split(separator: "\n").suffix(3)
        return lines.isEmpty ? "(its log \(log.path) is empty)" : lines.joined(separator: " | ")
    }

    /// A port the kernel just handed out and took back: free unless another program takes it
    /// in the moment before the target binds it.
    static func freePort() throws -> UInt16 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw StartFailure(description: "cannot make a socket to find a free port") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw StartFailure(description: "cannot find a free port: \(String(cString: strerror(errno)))") }
        return UInt16(bigEndian: address.sin_port)
    }

    var pid: Int32 { process.processIdentifier }

    /// nil while it runs; how it ended once it has.
    var exit: String? {
        guard !process.isRunning else { return nil }
        return process.terminationReason == .uncaughtSignal ? "was killed by signal \(process.terminationStatus)"
            : "exited with status \(process.terminationStatus)"
    }

    /// The servers being measured, for a signal handler to stop when compare is interrupted:
    /// Foundation starts each in a process group of its own, where a Ctrl-C does not reach it.
    static let running = Mutex<[pid_t]>([])

    func memory() -> ServerMemory {
        let pids = [pid] + ProcessMemory.descendants(of: pid) + memcached.map(\.pid)
        return ServerMemory(processes: pids.count,
                            anonymousPssByProcess: pids.map { ProcessMemory.anonymousProportionalBytes(of: String($0)) },
                      rssBytes: pids.reduce(0) { $0 + ProcessMemory.residentBytes(of: String($1)) },
                      pssBytes: pids.reduce(0) { $0 + ProcessMemory.proportionalBytes(of: String($1)) },
                      anonymousPssBytes: pids.reduce(0) { $0 + ProcessMemory.anonymousProportionalBytes(of: String($1)) })
    }

    /// One GET on a connection of its own (`Connection: close`), for the server's /stats;
    /// nil if it did not answer 200 within two seconds.
    func get(_ path: String) -> [UInt8]? {
        guard let (status, body) = request(path), status == 200 else { return nil }
        return body
    }

    /// One GET: the status and body of the answer, or nil if none came within `timeout` seconds.
    func request(_ path: String, timeout: Int = 2) -> (status: Int, body: [UInt8])? {
        guard let address = try? ResolvedAddress(target) else { return nil }
        let fd = address.makeSocket(flags: Int32(SOCK_CLOEXEC.rawValue))
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var limit = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        guard address.withSockaddr({ connect(fd, $0, $1) }) == 0 else { return nil }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: \(target.hostHeader)\r\nConnection: close\r\n\r\n".utf8)
        var answer: [UInt8] = []
        if target.secure {
            guard let context = try? TLSContext(tls), let exchanged = context.exchange(request, socket: fd, host: target.host) else { return nil }
            answer = exchanged
        } else {
            guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else { return nil }
            var buffer = [UInt8](repeating: 0, count: 16384)
            while true {
                let count = read(fd, &buffer, buffer.count)
                if count <= 0 { break }
                answer += buffer[..<count]
            }
        }
        // "HTTP/1.x NNN": an HTTP/1.0 server (wsgiref) answers too.
        guard answer.count >= 12, answer.starts(with: Array("HTTP/1.".utf8)),
              let status = Int(String(decoding: answer[9..<12], as: UTF8.self)),
              let end = answer.firstRange(of: Array("\r\n\r\n".utf8)) else { return nil }
        return (status, Array(answer[end.upperBound...]))
    }

    /// Requests the server has finished over all its processes, and the requests waiting for
    /// a handler in the process that answered, from its /stats.
    func progress() -> (served: Int, queued: Int)? {
        guard let body = get("/stats"), let stats = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else { return nil }
        let queued = stats["queue_depth"] as? Int ?? 0
        if let workers = stats["workers"] as? [String: Any], let requests = workers["requests"] as? Int { return (requests, queued) }
        return (stats["requests_total"] as? Int).map { ($0, queued) }
    }

    /// Waits (at most `limit` seconds) until the server has worked off what a scenario left
    /// queued: requests whose clients have gone still run, and the next scenario would queue
    /// behind them. Settled: nothing waits for a handler, and nothing but the /stats request
    /// itself was served in 100 ms. Gives up at once if the server has exited.
    func settle(limit: Double = 10) {
        guard var last = progress() else {
            // A server without Threadbare's /stats (a user's own): a pause is all there is.
            Thread.sleep(forTimeInterval: 0.5)
            return
        }
        let deadline = Date().addingTimeInterval(limit)
        while Date() < deadline && exit == nil {
            Thread.sleep(forTimeInterval: 0.1)
            guard let now = progress() else { continue }
            if now.served - last.served <= 1 && now.queued == 0 { return }
            last = now
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL after its stop timeout) and says how it went.
    /// An external target's whole process group hears the signals, so workers a crashed
    /// arbiter left behind go too.
    @discardableResult
    func stop() -> String {
        if let stopped { return stopped }
        Self.running.withLock { $0.removeAll { $0 == process.processIdentifier } }
        defer { memcached.forEach { $0.stop() } }
        // Without a group of its own, the processes below it, seen while it still runs.
        let family = signalsGroup && processGroup == nil && process.isRunning ? ProcessMemory.descendants(of: pid) : []
        let signal = { (number: Int32) in
            if let group = self.processGroup { _ = kill(-group, number) } else { _ = kill(self.pid, number); family.forEach { _ = kill($0, number) } }
        }
        // A group's id is not handed out again while any member lives, so what the leader left
        // running can be killed after it is gone.
        let sweep = {
            guard self.signalsGroup else { return }
            if let group = self.processGroup { _ = kill(-group, SIGKILL) } else { family.forEach { _ = kill($0, SIGKILL) } }
        }
        guard process.isRunning else {
            sweep()
            stopped = "had already \(exit ?? "exited")"
            return stopped!
        }
        let started = Date()
        signal(SIGTERM)
        let deadline = started.addingTimeInterval(stopTimeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        let killed = process.isRunning
        if killed { signal(SIGKILL) }
        process.waitUntilExit()
        sweep()
        let took = Comparison.format(Date().timeIntervalSince(started))
        stopped = killed ? "did not stop within \(Comparison.format(stopTimeout)) s of SIGTERM and was killed"
            : "stopped on SIGTERM in \(took) s (\(exit ?? "exited"))"
        return stopped!
    }

    deinit {
        stop()
    }
}

/// Memory over every process of a server (a prefork master and its workers), in bytes. Pss
/// shares each page among the processes that map it, so it adds up; RSS counts shared pages
/// once per process. Anonymous Pss leaves out the libraries' code, which every Swift process
/// on the machine shares and which compare's own process maps too.
public struct ServerMemory: Codable, Sendable {
    public var processes: Int
    /// Each process's own part, the first the server's first process (a prefork master).
    public var anonymousPssByProcess: [Int]
    public var rssBytes: Int
    public var pssBytes: Int
    public var anonymousPssBytes: Int

    enum CodingKeys: String, CodingKey {
        case processes, rssBytes = "rss_bytes", pssBytes = "pss_bytes", anonymousPssBytes = "anonymous_pss_bytes"
        case anonymousPssByProcess = "anonymous_pss_bytes_by_process"
    }
}
