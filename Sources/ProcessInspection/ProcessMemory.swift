import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Memory figures of processes, read from /proc.
public enum ProcessMemory {
    /// Resident set size in bytes: the second field of /proc/PID/statm, in pages.
    public static func residentBytes(of pid: String = "self") -> Int {
        guard let statm = readProcFile("/proc/\(pid)/statm") else { return 0 }
        let fields = statm.split(separator: " ")
        guard fields.count >= 2, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Proportional set size in bytes: each resident page divided by the number of processes
    /// sharing it, so the Pss of forked workers adds up to the memory they really use.
    public static func proportionalBytes(of pid: String = "self") -> Int {
        rollup("Pss", of: pid)
    }

    /// The anonymous part of Pss (heap, stacks, copy-on-write pages from the fork): what the
    /// process owns, without the shared libraries' code, whose Pss shrinks whenever another
    /// process (a load generator in Swift, say) maps the same files.
    public static func anonymousProportionalBytes(of pid: String = "self") -> Int {
        rollup("Pss_Anon", of: pid)
    }

    /// Where a process's resident pages stand, from /proc/PID/smaps_rollup, in bytes. Shared
    /// pages are mapped by other processes too (a prefork master and its workers share what
    /// the master made before forking, until one of them writes); private dirty pages are the
    /// process's own, copies included.
    public struct Rollup: Sendable, Equatable {
        public var resident = 0
        public var proportional = 0
        public var sharedClean = 0
        public var sharedDirty = 0
        public var privateClean = 0
        public var privateDirty = 0
    }

    public static func rollup(of pid: String = "self") -> Rollup {
        guard let text = readProcFile("/proc/\(pid)/smaps_rollup") else { return Rollup() }
        var figures = Rollup()
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 2, let kilobytes = Int(fields[1]) else { continue }
            switch fields[0] {
            case "Rss:": figures.resident = kilobytes * 1024
            case "Pss:": figures.proportional = kilobytes * 1024
            case "Shared_Clean:": figures.sharedClean = kilobytes * 1024
            case "Shared_Dirty:": figures.sharedDirty = kilobytes * 1024
            case "Private_Clean:": figures.privateClean = kilobytes * 1024
            case "Private_Dirty:": figures.privateDirty = kilobytes * 1024
            default: break
            }
        }
        return figures
    }

    /// A field of /proc/PID/smaps_rollup, in bytes.
    static func rollup(_ field: String, of pid: String) -> Int {
        guard let rollup = readProcFile("/proc/\(pid)/smaps_rollup"),
              let line = rollup.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
              let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return 0 }
        return kilobytes * 1024
    }

    /// The processes whose parent is `pid` (a prefork master's workers), from /proc/*/stat.
    public static func children(of pid: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { candidate in
            // The fields after the command, which is in parentheses and may hold spaces.
            guard let stat = readProcFile("/proc/\(candidate)/stat"), let close = stat.lastIndex(of: ")") else { return false }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == pid
        }.sorted()
    }

    /// A /proc file is generated on read and small; one read of 4 KiB holds these.
    static func readProcFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = read(fd, &buffer, buffer.count)
        guard count > 0 else { return nil }
        return String(decoding: buffer[..<count], as: UTF8.self)
    }
}
