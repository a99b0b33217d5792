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
        rollupFields(of: pid)["Pss"] ?? 0
    }

    /// The anonymous part of Pss (heap, stacks, copy-on-write pages from the fork): what the
    /// process owns, without the shared libraries' code, whose Pss shrinks whenever another
    /// process (a load generator in Swift, say) maps the same files.
    public static func anonymousProportionalBytes(of pid: String = "self") -> Int {
        rollupFields(of: pid)["Pss_Anon"] ?? 0
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
        let fields = rollupFields(of: pid)
        return Rollup(resident: fields["Rss"] ?? 0, proportional: fields["Pss"] ?? 0,
                      sharedClean: fields["Shared_Clean"] ?? 0, sharedDirty: fields["Shared_Dirty"] ?? 0,
                      privateClean: fields["Private_Clean"] ?? 0, privateDirty: fields["Private_Dirty"] ?? 0)
    }

    /// The sizes in /proc/PID/smaps_rollup (`Pss:  1234 kB`), in bytes, by field name; empty
    /// when the process is gone.
    static func rollupFields(of pid: String) -> [Substring: Int] {
        guard let text = readProcFile("/proc/\(pid)/smaps_rollup") else { return [:] }
        var fields: [Substring: Int] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count >= 2, parts[0].hasSuffix(":"), let kilobytes = Int(parts[1]) else { continue }
            fields[parts[0].dropLast()] = kilobytes * 1024
        }
        return fields
    }

    /// The processes whose parent is `pid` (a prefork master's workers), from /proc/*/stat.
    public static func children(of pid: Int32) -> [Int32] {
        childrenByParent()[pid] ?? []
    }

    /// Every process below `pid`: its children, theirs, and so on (a shell, the gunicorn
    /// arbiter it started, the arbiter's workers), in no particular order.
    public static func descendants(of pid: Int32) -> [Int32] {
        let childrenOf = childrenByParent()
        var found: [Int32] = [], frontier = [pid]
        while let next = frontier.popLast() {
            let children = childrenOf[next] ?? []
            found += children
            frontier += children
        }
        return found
    }

    /// Every process's children, sorted, from one pass over /proc/*/stat.
    private static func childrenByParent() -> [Int32: [Int32]] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        var childrenOf: [Int32: [Int32]] = [:]
        for candidate in entries.compactMap({ Int32($0) }).sorted() {
            // The fields after the command, which is in parentheses and may hold spaces.
            guard let stat = readProcFile("/proc/\(candidate)/stat"), let close = stat.lastIndex(of: ")") else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, let parent = Int32(fields[1]) { childrenOf[parent, default: []].append(candidate) }
        }
        return childrenOf
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
