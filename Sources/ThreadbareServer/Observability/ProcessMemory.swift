#if canImport(Glibc)
import Glibc
#endif

/// Memory figures of this process, read from /proc.
public enum ProcessMemory {
    /// Resident set size in bytes: the second field of /proc/self/statm, in pages.
    public static func residentBytes() -> Int {
        guard let statm = readProcFile("/proc/self/statm") else { return 0 }
        let fields = statm.split(separator: " ")
        guard fields.count >= 2, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
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
