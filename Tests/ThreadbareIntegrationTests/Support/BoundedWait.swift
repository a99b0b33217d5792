import Foundation

/// Every wait for a child process has a deadline: a test that hangs gives CI nothing to read,
/// while one that gives up says what the stuck processes were doing.
enum BoundedWait {
    /// Waits up to `seconds` for `process` to exit; true if it did.
    static func exit(of process: Process, within seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        return !process.isRunning
    }

    /// What a stuck process and its children were doing, then kills them all and reaps `process`.
    static func killStuck(_ process: Process) -> String {
        let pid = process.processIdentifier
        let family = [pid] + children(of: pid)
        let report = family.map(describeThreads).joined(separator: "\n")
        for member in family { kill(member, SIGKILL) }
        process.waitUntilExit()
        return report
    }

    static func children(of pid: Int32) -> [Int32] {
        let list = (try? String(contentsOfFile: "/proc/\(pid)/task/\(pid)/children", encoding: .utf8)) ?? ""
        return list.split(separator: " ").compactMap { Int32($0) }
    }

    /// Each thread's state and kernel wait channel from /proc, and the stacks when gdb is here.
    static func describeThreads(_ pid: Int32) -> String {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        var lines = ["process \(pid): " + ServerProcess.describe(pid)]
        for task in tasks.sorted() {
            let stat = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/stat", encoding: .utf8)) ?? ""
            let wchan = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/wchan", encoding: .utf8)) ?? "?"
            let name = stat.split(separator: "(").dropFirst().first?.split(separator: ")").first ?? "?"
            lines.append("  thread \(task) (\(name)) wchan=\(wchan)")
        }
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/gdb") {
            let gdb = Process(), output = FileManager.default.temporaryDirectory.appendingPathComponent("gdb-\(pid).txt")
            _ = FileManager.default.createFile(atPath: output.path, contents: nil)
            defer { try? FileManager.default.removeItem(at: output) }
            gdb.executableURL = URL(fileURLWithPath: "/usr/bin/gdb")
            gdb.arguments = ["-p", "\(pid)", "-batch", "-nx", "-ex", "thread apply all bt 12"]
            if let handle = try? FileHandle(forWritingTo: output) {
                gdb.standardOutput = handle
                gdb.standardError = handle
                if (try? gdb.run()) != nil {
                    if !exit(of: gdb, within: 30) { kill(gdb.processIdentifier, SIGKILL); gdb.waitUntilExit() }
                    let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
                    lines.append(text.split(separator: "\n").filter { $0.hasPrefix("#") || $0.hasPrefix("Thread") }
                        .joined(separator: "\n"))
                }
            }
        }
        return lines.joined(separator: "\n")
    }
}

struct ProcessDidNotExit: Error, CustomStringConvertible {
    let command: String
    let seconds: Double
    let state: String
    var description: String { "\(command) did not exit within \(Int(seconds)) s; killed. What it was doing:\n\(state)" }
}
