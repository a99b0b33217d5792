#if canImport(Glibc)
import Glibc
#endif

/// The W3C Server-Timing header, read straight from a response's bytes:
/// `queue;dur=0.012, lock;dur=1.5;desc="a, b", cache;desc=hit, app;dur=2` has three
/// durations (milliseconds); a metric without `dur` has none. Commas and semicolons inside
/// quoted strings do not separate anything.
enum ServerTiming {
    static func forEachDuration(in header: UnsafeRawBufferPointer, _ body: (_ name: UnsafeRawBufferPointer, _ milliseconds: Double) -> Void) {
        forEachPart(of: header, separatedBy: 0x2C) { metric in
            var name: UnsafeRawBufferPointer?
            var duration: Double?
            forEachPart(of: metric, separatedBy: 0x3B) { field in
                let field = ResponseParser.trimmed(field)
                if name == nil {
                    name = field
                } else if field.count > 4, ResponseParser.equalsIgnoringCase(UnsafeRawBufferPointer(rebasing: field[..<4]), "dur=") {
                    duration = number(UnsafeRawBufferPointer(rebasing: field[4...]))
                }
            }
            if let name, !name.isEmpty, let duration { body(name, duration) }
        }
    }

    private static func forEachPart(of bytes: UnsafeRawBufferPointer, separatedBy separator: UInt8,
                                    _ body: (UnsafeRawBufferPointer) -> Void) {
        var start = 0, quoted = false
        for index in 0..<bytes.count {
            let byte = bytes[index]
            if byte == 0x22 { quoted.toggle() }
            if byte == separator && !quoted {
                body(UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
                start = index + 1
            }
        }
        body(UnsafeRawBufferPointer(rebasing: bytes[start...]))
    }

    /// `12`, `0.012`, `1.5e3`: strtod on a bounded copy, so a value is never read past its end.
    private static func number(_ bytes: UnsafeRawBufferPointer) -> Double? {
        guard !bytes.isEmpty, bytes.count < 32 else { return nil }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: bytes.count + 1) { buffer in
            _ = buffer.initialize(from: bytes.lazy.map { CChar(bitPattern: $0) })
            buffer[bytes.count] = 0
            var end: UnsafeMutablePointer<CChar>?
            let value = strtod(buffer.baseAddress!, &end)
            return end == buffer.baseAddress! + bytes.count && value.isFinite && value >= 0 ? value : nil
        }
    }
}

/// The same, from a String: for tests and anything that already has the header as text.
func serverTimingDurations(_ header: String) -> [(name: String, milliseconds: Double)] {
    var found: [(name: String, milliseconds: Double)] = []
    Array(header.utf8).withUnsafeBytes { bytes in
        ServerTiming.forEachDuration(in: bytes) { found.append((String(decoding: $0, as: UTF8.self), $1)) }
    }
    return found
}
