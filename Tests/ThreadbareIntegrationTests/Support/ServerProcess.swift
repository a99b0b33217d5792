import Foundation
import Testing

/// The real `threadbare` binary, started in a subprocess on port 0, as a user would run it.
final class ServerProcess: @unchecked Sendable {
    let process: ChildProcess
    let port: Int
    private let outputFile: URL
    private let errorFile: URL

    /// `swift build` puts the executable next to the test bundle.
    static var binary: URL {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("threadbare")
        if FileManager.default.isExecutableFile(atPath: beside.path) { return beside }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent(".build/debug/threadbare")
    }

    /// Starts `threadbare serve --port 0 <arguments>` and waits for its `listening on` line.
    /// `descriptorLimit` starts it under `ulimit -n` that many. `launcher` is a command that
    /// runs the rest (`ip netns exec NAME`, `systemd-socket-activate -l PORT`); with
    /// `activationPort`, the launcher starts it only on a first connection to that port, which
    /// the wait makes.
    init(_ arguments: [String] = [], environment: [String: String] = [:], descriptorLimit: Int? = nil,
         launcher: [String] = [], activationPort: Int? = nil) throws {
        (outputFile, errorFile) = Self.temporaryFiles()
        var attempts = 0
        while true {
            attempts += 1
            let command = ["serve", "--port", "0"] + arguments
            var (executable, launched) = descriptorLimit.map {
                ("/bin/sh", ["-c", "ulimit -n \($0) && exec \"$0\" \"$@\"", Self.binary.path] + command)
            } ?? (Self.binary.path, command)
            if let program = launcher.first {
                (executable, launched) = (program, Array(launcher.dropFirst()) + [executable] + launched)
            }
            let candidate = try ChildProcess(executable, launched,
                                             environment: Self.cleanEnvironment(adding: environment),
                                             standardOutput: outputFile.path, standardError: errorFile.path)
            let deadline = Date().addingTimeInterval(30)
            var found: Int?
            var trigger: Int32?
            while found == nil && Date() < deadline && candidate.isRunning {
                if let activationPort, trigger == nil { trigger = try? HTTPConnection.connectedSocket(port: activationPort, timeoutSeconds: 5) }
                found = Self.listeningPort(in: (try? String(contentsOf: outputFile, encoding: .utf8)) ?? "")
                if found == nil { Thread.sleep(forTimeInterval: 0.02) }
            }
            if let trigger { close(trigger) }
            if let found {
                process = candidate
                port = found
                return
            }
            let state = BoundedWait.killStuck(candidate)
            // Under ThreadSanitizer a child forked from the many-threaded test runner can hang
            // before it ever runs threadbare (it is still the runner's image): that is the
            // sanitizer's fork, not the server, so start it once more.
            if attempts == 1 && !state.contains("exe=\(Self.binary.path)") && !state.contains("exited") {
                for file in [outputFile, errorFile] { try? FileHandle(forWritingTo: file).truncate(atOffset: 0) }
                continue
            }
            throw ServerDidNotStart(stderr: ((try? String(contentsOf: errorFile, encoding: .utf8)) ?? "") + "\n[process: \(state)]")
        }
    }

    /// What /proc says of a process that did not start: its image, state and threads.
    static func describe(_ pid: Int32) -> String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe")) ?? "exited"
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let fields = status.split(separator: "\n").filter { $0.hasPrefix("State:") || $0.hasPrefix("Threads:") }
        let wchan = (try? String(contentsOfFile: "/proc/\(pid)/wchan", encoding: .utf8)) ?? "?"
        return "exe=\(exe) " + fields.map { $0.replacingOccurrences(of: "\t", with: " ") }.joined(separator: ", ") + ", wchan=\(wchan)"
    }

    var pid: Int32 { process.pid }
    var standardError: String { (try? String(contentsOf: errorFile, encoding: .utf8)) ?? "" }
    var standardOutput: String { (try? String(contentsOf: outputFile, encoding: .utf8)) ?? "" }
    /// How many times it has said `listening on`: once more after each reload in place.
    var listeningLines: Int { standardOutput.split(separator: "\n").filter { $0.hasPrefix("listening on http://") }.count }

    func connect() throws -> HTTPConnection { try HTTPConnection(port: port) }

    /// One request on a new connection.
    func request(_ method: String = "GET", _ path: String, headers: [String: String] = [:], body: [UInt8] = []) throws -> HTTPReply {
        try connect().request(method, path, headers: headers, body: body)
    }

    func get(_ path: String) throws -> HTTPReply { try request("GET", path) }

    func json(_ path: String) throws -> [String: Any] {
        let reply = try get(path)
        return try #require(try JSONSerialization.jsonObject(with: Data(reply.body)) as? [String: Any])
    }

    /// Sends `signal` and waits up to a minute for the exit; returns the exit status. A server
    /// that does not stop, or a sanitizer report in its stderr (under `make test-tsan`), fails
    /// the test that ran it.
    @discardableResult
    func stop(signal: Int32 = SIGTERM, sourceLocation: SourceLocation = #_sourceLocation) -> Int32 {
        if process.isRunning { kill(process.pid, signal) }
        if !process.waitForExit(within: 60) {
            let state = BoundedWait.killStuck(process)
            Issue.record("the server did not stop within 60 s of signal \(signal); killed. What it was doing:\n\(state)\nstderr:\n\(standardError)",
                         sourceLocation: sourceLocation)
        }
        let errors = standardError
        for marker in ["WARNING: ThreadSanitizer", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer"] where errors.contains(marker) {
            Issue.record("the server reported \(marker):\n\(errors)", sourceLocation: sourceLocation)
        }
        try? FileManager.default.removeItem(at: outputFile)
        try? FileManager.default.removeItem(at: errorFile)
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { _ = BoundedWait.killStuck(process, describing: false) }
    }

    static func listeningPort(in output: String) -> Int? {
        guard let line = output.split(separator: "\n").first(where: { $0.hasPrefix("listening on http://") }),
              let colon = line.lastIndex(of: ":") else { return nil }
        return Int(line[line.index(after: colon)...])
    }

    /// The test runner's environment minus every THREADBARE_* variable, plus `adding`: the
    /// server refuses unknown THREADBARE_* variables, and a developer's shell must not leak in.
    static func cleanEnvironment(adding: [String: String]) -> [String: String] {
        ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("THREADBARE_") }.merging(adding) { $1 }
    }

    static func temporaryFiles() -> (URL, URL) {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("threadbare-test-\(UUID().uuidString)")
        let output = base.appendingPathExtension("out"), error = base.appendingPathExtension("err")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        _ = FileManager.default.createFile(atPath: error.path, contents: nil)
        return (output, error)
    }
}

struct ServerDidNotStart: Error, CustomStringConvertible {
    let stderr: String
    var description: String { "threadbare did not print its listening line; stderr:\n\(stderr)" }
}

/// Runs `threadbare <arguments>` (or another of the package's executables, built beside it) to
/// completion, for commands that exit like `config check`; through `launcher` if given (a
/// command such as `prlimit --nofile=10` that runs the rest).
func runThreadbare(_ arguments: [String], environment: [String: String] = [:], launcher: [String] = [],
                   program: String = "threadbare") throws -> (status: Int32, stdout: String, stderr: String) {
    let executable = ServerProcess.binary.deletingLastPathComponent().appendingPathComponent(program)
    guard let command = launcher.first else { return try runToCompletion(executable, arguments, environment: environment) }
    return try runToCompletion(URL(fileURLWithPath: command), Array(launcher.dropFirst()) + [executable.path] + arguments,
                               environment: environment)
}

/// Runs `executable` with no input; one that runs past `deadline` seconds is killed and throws.
func runToCompletion(_ executable: URL, _ arguments: [String], environment: [String: String] = [:],
                     deadline: Double = 300) throws -> (status: Int32, stdout: String, stderr: String) {
    let (outputFile, errorFile) = ServerProcess.temporaryFiles()
    defer {
        try? FileManager.default.removeItem(at: outputFile)
        try? FileManager.default.removeItem(at: errorFile)
    }
    let process = try ChildProcess(executable.path, arguments, environment: ServerProcess.cleanEnvironment(adding: environment),
                                   standardOutput: outputFile.path, standardError: errorFile.path)
    let stderr = { (try? String(contentsOf: errorFile, encoding: .utf8)) ?? "" }
    if !process.waitForExit(within: deadline) {
        let state = BoundedWait.killStuck(process)
        throw ProcessDidNotExit(command: ([executable.lastPathComponent] + arguments).joined(separator: " "), seconds: deadline,
                                state: state + "\nstderr:\n" + stderr())
    }
    return (process.terminationStatus, (try? String(contentsOf: outputFile, encoding: .utf8)) ?? "", stderr())
}

/// A YAML file in the temporary directory, removed by the caller.
func temporaryConfig(_ yaml: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("threadbare-\(UUID().uuidString).yaml")
    try yaml.write(to: url, atomically: true, encoding: .utf8)
    return url
}
