#if canImport(Glibc)
import Glibc
#endif

/// An incremental HTTP/1.1 response parser: bytes go in as they arrive, in pieces of any size,
/// and it says when one whole response (status line, headers, a Content-Length, chunked or
/// until-close body) has been read. It keeps only what a load generator needs — the status,
/// whether the connection stays open, and the Server-Timing header — and copies nothing else.
///
/// Why not libevent's parser: evhttp's client allocates a request, two header lists and
/// buffers for every request, which made the first loadtest half as fast as wrk on the same
/// server. wrk, too, parses with a small state machine of its own (http_parser).
struct ResponseParser {
    enum Outcome: Equatable {
        case needMore
        case complete
        case malformed(String)
    }

    /// The most header bytes a response may have before it is called malformed.
    static let headerLimit = 64 * 1024

    private enum State {
        case statusLine, headers, body(remaining: Int), chunkSize, chunkData(remaining: Int), chunkEnd, trailers, untilClose, done
    }

    private var state = State.statusLine
    /// A line that arrived in more than one piece.
    private var carry: [UInt8] = []
    private var headerBytes = 0
    private var expectsBody = true
    private var contentLength: Int?
    private var chunked = false
    private var version1_0 = false
    private var connectionHeader: Bool?

    private(set) var status = 0
    /// Whether the connection may carry the next request.
    private(set) var keepAlive = true
    /// The Server-Timing header's value (several headers joined with ", "); empty if none.
    private(set) var serverTiming: [UInt8] = []
    /// Whether any byte of this response has arrived.
    private(set) var started = false

    init() {
        carry.reserveCapacity(256)
        serverTiming.reserveCapacity(256)
    }

    /// Ready for the next response; a HEAD request's has no body whatever its headers say.
    mutating func reset(expectingBody: Bool) {
        state = .statusLine
        carry.removeAll(keepingCapacity: true)
        serverTiming.removeAll(keepingCapacity: true)
        headerBytes = 0
        expectsBody = expectingBody
        contentLength = nil
        chunked = false
        version1_0 = false
        connectionHeader = nil
        status = 0
        keepAlive = true
        started = false
    }

    /// Reads from `bytes` until the response is complete or the bytes run out; returns how many
    /// bytes it used (fewer than given only when the response completed before their end).
    mutating func consume(_ bytes: UnsafeRawBufferPointer) -> (used: Int, outcome: Outcome) {
        if !bytes.isEmpty { started = true }
        var offset = 0
        while true {
            switch state {
            case .done:
                return (offset, .complete)
            case .body(let remaining), .chunkData(let remaining):
                let take = min(remaining, bytes.count - offset)
                offset += take
                if take == remaining {
                    if case .body = state { state = .done } else { state = .chunkEnd }
                } else {
                    state = if case .body = state { .body(remaining: remaining - take) } else { .chunkData(remaining: remaining - take) }
                    return (offset, .needMore)
                }
            case .untilClose:
                return (bytes.count, .needMore)
            case .statusLine, .headers, .chunkSize, .chunkEnd, .trailers:
                let start = offset
                guard let newline = Self.index(of: 0x0A, in: bytes, from: offset) else {
                    if case .statusLine = state, !Self.couldBeginStatusLine(carry, bytes[offset...]) {
                        return (bytes.count, .malformed("not an HTTP/1.x response"))
                    }
                    if case .chunkEnd = state, bytes[offset...].contains(where: { $0 != 0x0D }) {
                        return (bytes.count, .malformed("no line break after a chunk"))
                    }
                    if let problem = noteHeaderBytes(bytes.count - offset) { return (bytes.count, .malformed(problem)) }
                    carry.append(contentsOf: bytes[offset...])
                    return (bytes.count, .needMore)
                }
                offset = newline + 1
                if let problem = noteHeaderBytes(offset - start) { return (offset, .malformed(problem)) }
                var problem: String?
                if carry.isEmpty {
                    problem = take(line: UnsafeRawBufferPointer(rebasing: bytes[start..<newline]))
                } else {
                    carry.append(contentsOf: bytes[start..<newline])
                    let line = carry
                    problem = line.withUnsafeBytes { take(line: $0) }
                    carry.removeAll(keepingCapacity: true)
                }
                if let problem { return (offset, .malformed(problem)) }
            }
        }
    }

    /// The server closed the connection: complete if the body ran until the close.
    mutating func finishAtClose() -> Bool {
        if case .untilClose = state {
            state = .done
            return true
        }
        return false
    }

    /// Counts the bytes of the status line, headers and chunk framing against the limit.
    private mutating func noteHeaderBytes(_ count: Int) -> String? {
        switch state {
        case .statusLine, .headers, .trailers:
            headerBytes += count
            return headerBytes > Self.headerLimit ? "headers longer than \(Self.headerLimit) bytes" : nil
        default:
            // A chunk-size line is short; one that is not is garbage.
            return carry.count + count > 1024 ? "a chunk-size line longer than 1024 bytes" : nil
        }
    }

    /// One line, without its line feed (a carriage return before it is dropped here).
    private mutating func take(line raw: UnsafeRawBufferPointer) -> String? {
        let line = raw.last == 0x0D ? UnsafeRawBufferPointer(rebasing: raw.dropLast()) : raw
        switch state {
        case .statusLine:
            return takeStatusLine(line)
        case .headers:
            if line.isEmpty { return endOfHeaders() }
            return takeHeader(line)
        case .chunkSize:
            guard let size = Self.chunkSize(line) else { return "a bad chunk size" }
            state = size == 0 ? .trailers : .chunkData(remaining: size)
        case .chunkEnd:
            guard line.isEmpty else { return "no line break after a chunk" }
            state = .chunkSize
        case .trailers:
            if line.isEmpty { state = .done }
        default:
            break
        }
        return nil
    }

    /// `HTTP/1.1 200 OK`
    private mutating func takeStatusLine(_ line: UnsafeRawBufferPointer) -> String? {
        guard line.count >= 12, Self.hasPrefix(line, "HTTP/1."), line[7] == 0x30 || line[7] == 0x31, line[8] == 0x20 else {
            return "not an HTTP/1.x status line"
        }
        var code = 0
        for index in 9..<12 {
            let digit = Int(line[index]) - 0x30
            guard (0...9).contains(digit) else { return "a status that is not 3 digits" }
            code = code * 10 + digit
        }
        guard line.count == 12 || line[12] == 0x20 else { return "a status that is not 3 digits" }
        status = code
        version1_0 = line[7] == 0x30
        state = .headers
        return nil
    }

    private mutating func takeHeader(_ line: UnsafeRawBufferPointer) -> String? {
        guard let colon = line.firstIndex(of: 0x3A), colon > 0 else { return "a header line without a name" }
        let name = UnsafeRawBufferPointer(rebasing: line[..<colon])
        let value = Self.trimmed(UnsafeRawBufferPointer(rebasing: line[(colon + 1)...]))
        if Self.equalsIgnoringCase(name, "content-length") {
            guard let length = Self.decimal(value) else { return "a bad Content-Length" }
            if let contentLength, contentLength != length { return "two different Content-Lengths" }
            contentLength = length
        } else if Self.equalsIgnoringCase(name, "transfer-encoding") {
            chunked = Self.contains(value, "chunked")
        } else if Self.equalsIgnoringCase(name, "connection") {
            if Self.contains(value, "close") { connectionHeader = false } else if Self.contains(value, "keep-alive") { connectionHeader = true }
        } else if Self.equalsIgnoringCase(name, "server-timing") {
            if !serverTiming.isEmpty { serverTiming.append(contentsOf: [0x2C, 0x20]) }
            serverTiming.append(contentsOf: value)
        }
        return nil
    }

    private mutating func endOfHeaders() -> String? {
        keepAlive = connectionHeader ?? !version1_0
        if (100..<200).contains(status) && status != 101 {
            // An interim answer (100 Continue): the real one follows.
            reset(expectingBody: expectsBody)
            started = true
            return nil
        }
        if !expectsBody || status == 204 || status == 304 || (100..<200).contains(status) {
            state = .done
        } else if chunked {
            state = .chunkSize
        } else if let contentLength {
            state = contentLength == 0 ? .done : .body(remaining: contentLength)
        } else {
            // Neither: the body lasts until the server closes the connection.
            keepAlive = false
            state = .untilClose
        }
        return nil
    }

    // MARK: Bytes

    private static func index(of byte: UInt8, in bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        guard start < bytes.count, let base = bytes.baseAddress,
              let found = memchr(base + start, Int32(byte), bytes.count - start) else { return nil }
        return base.distance(to: UnsafeRawPointer(found))
    }

    /// Whether the first bytes of a response could still be `HTTP/1.`, so garbage is reported
    /// as soon as it arrives rather than after 64 KiB.
    private static func couldBeginStatusLine(_ carry: [UInt8], _ more: Slice<UnsafeRawBufferPointer>) -> Bool {
        let prefix = Array("HTTP/1.".utf8)
        var index = 0
        for byte in carry.lazy.prefix(prefix.count) {
            if byte != prefix[index] { return false }
            index += 1
        }
        for byte in more.prefix(prefix.count - index) {
            if byte != prefix[index] { return false }
            index += 1
        }
        return true
    }

    private static func hasPrefix(_ bytes: UnsafeRawBufferPointer, _ prefix: StaticString) -> Bool {
        guard bytes.count >= prefix.utf8CodeUnitCount else { return false }
        return memcmp(bytes.baseAddress!, prefix.utf8Start, prefix.utf8CodeUnitCount) == 0
    }

    /// ASCII case-insensitive; `lowercase` must be lower case.
    static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let expected = UnsafeRawBufferPointer(start: lowercase.utf8Start, count: lowercase.utf8CodeUnitCount)
        for index in 0..<bytes.count where Self.lowercased(bytes[index]) != expected[index] { return false }
        return true
    }

    private static func contains(_ bytes: UnsafeRawBufferPointer, _ lowercase: StaticString) -> Bool {
        let length = lowercase.utf8CodeUnitCount
        guard bytes.count >= length else { return false }
        for start in 0...(bytes.count - length)
        where equalsIgnoringCase(UnsafeRawBufferPointer(rebasing: bytes[start..<(start + length)]), lowercase) {
            return true
        }
        return false
    }

    private static func lowercased(_ byte: UInt8) -> UInt8 {
        (0x41...0x5A).contains(byte) ? byte | 0x20 : byte
    }

    /// Without spaces and tabs at either end.
    static func trimmed(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        var start = 0, end = bytes.count
        while start < end && (bytes[start] == 0x20 || bytes[start] == 0x09) { start += 1 }
        while end > start && (bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09) { end -= 1 }
        return UnsafeRawBufferPointer(rebasing: bytes[start..<end])
    }

    private static func decimal(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard !bytes.isEmpty, bytes.count <= 18 else { return nil }
        var value = 0
        for byte in bytes {
            guard (0x30...0x39).contains(byte) else { return nil }
            value = value * 10 + Int(byte - 0x30)
        }
        return value
    }

    /// `1a3f` or `1a3f;name=value`.
    private static func chunkSize(_ line: UnsafeRawBufferPointer) -> Int? {
        var value = 0, digits = 0
        for byte in line {
            let digit: Int
            switch byte {
            case 0x30...0x39: digit = Int(byte - 0x30)
            case 0x61...0x66: digit = Int(byte - 0x61 + 10)
            case 0x41...0x46: digit = Int(byte - 0x41 + 10)
            case 0x3B, 0x20, 0x09: return digits > 0 ? value : nil
            default: return nil
            }
            digits += 1
            guard digits <= 15 else { return nil }
            value = value * 16 + digit
        }
        return digits > 0 ? value : nil
    }
}
