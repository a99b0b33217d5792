import Foundation

/// Every wait for a child process has a deadline: a test that hangs gives CI nothing to read,
/// while one that gives up says what the stuck processes were doing.
enum BoundedWait {
    /// Polls `condition` every 20 ms for up to `seconds`.
    static func eventually(within seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return condition()
    }

    /// What a stuck process and its children were doing (unless `describing` is false), then
    /// kills them all and reaps `process`.
    @discardableResult
    static func killStuck(_ process: ChildProcess, describing: Bool = true) -> String {
        let family = [process.pid] + children(of: process.pid)
        let report = describing ? family.map(describeThreads).joined(separator: "\n") : ""
        for member in family { kill(member, SIGKILL) }
        _ = process.waitForExit(within: 10)
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
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/gdb"),
           let gdb = try? runToCompletion(URL(fileURLWithPath: "/usr/bin/gdb"),
                                          ["-p", "\(pid)", "-batch", "-nx", "-ex", "thread apply all bt 16"], deadline: 30) {
            lines.append((gdb.stdout + gdb.stderr).split(separator: "\n").filter { $0.hasPrefix("#") || $0.hasPrefix("Thread") }
                .joined(separator: "\n"))
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
