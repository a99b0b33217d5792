import CLibevent
import Foundation
import ProcessInspection
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One `threadbare serve` that compare starts from a mode's config file, on a free port, with
/// its output in a log file; stopped with SIGTERM (and SIGKILL if it will not go).
final class ServerUnderTest {
    let mode: String
    let target: Target
    private let process = Process()
    /// The memcached the mode's configuration needs, when compare started it.
    private let memcached: MemcachedSidecar?

    struct StartFailure: Error, CustomStringConvertible {
        let description: String
    }

    /// Starts `binary serve --config CONFIG --port 0` and waits (at most 20 s) for its
    /// `listening on` line.
    init(mode: String, binary: String, config: String, log: URL) throws {
        self.mode = mode
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw StartFailure(description: "no threadbare executable at \(binary) (build it, or pass --threadbare)")
        }
        guard FileManager.default.fileExists(atPath: config) else { throw StartFailure(description: "no config file at \(config)") }
        guard FileManager.default.createFile(atPath: log.path, contents: nil) else {
            throw StartFailure(description: "cannot write the log file \(log.path)")
        }
        memcached = try MemcachedSidecar.startIfNeeded(threadbare: binary, config: config)
        let output = Pipe()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--config", config, "--port", "0", "--host", "127.0.0.1"]
        process.standardOutput = output
        process.standardError = try FileHandle(forWritingTo: log)
        process.standardInput = FileHandle.nullDevice
        do { try process.run() } catch {
            memcached?.stop()
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
            memcached?.stop()
            let logged = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            throw StartFailure(description: "\(mode) did not start (exit \(process.isRunning ? "-" : String(process.terminationStatus))): "
                               + (logged.split(separator: "\n").suffix(3).joined(separator: " | ")))
        }
        target = parsed
        Self.running.withLock { $0 = process.processIdentifier }
        // Drain what the server prints later, so it can never block on a full pipe.
        reader.readabilityHandler = { handle in _ = handle.availableData }
    }

    var pid: Int32 { process.processIdentifier }

    /// nil while it runs; how it ended once it has.
    var exit: String? {
        guard !process.isRunning else { return nil }
        return process.terminationReason == .uncaughtSignal ? "was killed by signal \(process.terminationStatus)"
            : "exited with status \(process.terminationStatus)"
    }

    /// The server being measured, for a signal handler to stop when compare is interrupted:
    /// Foundation starts it in a process group of its own, where a Ctrl-C does not reach it.
    static let running = Mutex<pid_t?>(nil)

    func memory() -> ServerMemory {
        let pids = [pid] + ProcessMemory.children(of: pid) + (memcached.map { [$0.pid] } ?? [])
        return ServerMemory(processes: pids.count,
                            anonymousPssByProcess: pids.map { ProcessMemory.anonymousProportionalBytes(of: String($0)) },
                      rssBytes: pids.reduce(0) { $0 + ProcessMemory.residentBytes(of: String($1)) },
                      pssBytes: pids.reduce(0) { $0 + ProcessMemory.proportionalBytes(of: String($1)) },
                      anonymousPssBytes: pids.reduce(0) { $0 + ProcessMemory.anonymousProportionalBytes(of: String($1)) })
    }

    /// One GET on a connection of its own (`Connection: close`), for the server's /stats;
    /// nil if it did not answer 200 within two seconds.
    func get(_ path: String) -> [UInt8]? {
        guard let address = try? ResolvedAddress(target) else { return nil }
        let fd = address.makeSocket(flags: Int32(SOCK_CLOEXEC.rawValue))
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var limit = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        guard address.withSockaddr({ connect(fd, $0, $1) }) == 0 else { return nil }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: \(target.hostHeader)\r\nConnection: close\r\n\r\n".utf8)
        guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else { return nil }
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count <= 0 { break }
            answer += buffer[..<count]
        }
        guard answer.starts(with: Array("HTTP/1.1 200".utf8)), let end = answer.firstRange(of: Array("\r\n\r\n".utf8)) else { return nil }
        return Array(answer[end.upperBound...])
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
        let deadline = Date().addingTimeInterval(limit)
        var last = progress()
        while Date() < deadline && exit == nil {
            Thread.sleep(forTimeInterval: 0.1)
            let now = progress()
            if let now, let before = last, now.served - before.served <= 1 && now.queued == 0 { return }
            last = now
        }
    }

    func stop() {
        Self.running.withLock { if $0 == process.processIdentifier { $0 = nil } }
        defer { memcached?.stop() }
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
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
