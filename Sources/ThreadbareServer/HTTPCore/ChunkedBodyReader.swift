/// Follows a chunked body as its bytes arrive (RFC 9112 §7.1), to find where it ends and to
/// refuse one whose framing is wrong: a size that is not hex digits, a malformed extension, a
/// chunk that does not end in CRLF, a trailer field that breaks the field rules. The bytes are
/// only read, never kept, except one line at a time.
public struct ChunkedBodyReader: Sendable {
    /// What the bytes so far amount to.
    public enum Progress: Equatable, Sendable {
        case needsMore
        /// The body ended this many bytes into the last buffer given.
        case ended(consumed: Int)
        case refused(RequestFraming.Violation)
    }

    /// A chunk-size line or a trailer field line, extensions included.
    static let mostLineBytes = 4096
    /// Hex digits of a chunk size, leading zeros included: 15 fit in an Int.
    static let mostSizeDigits = 15

    private enum State: Sendable {
        case sizeLine
        case data(remaining: Int)
        case dataCR, dataLF
        case trailerLine
        case finished
    }

    private var state = State.sizeLine
    private var line: [UInt8] = []
    private var sawCR = false

    public init() {}

    /// Past the last chunk, among the trailer fields.
    var inTrailers: Bool {
        if case .trailerLine = state { return true }
        return false
    }

    /// Bytes of the body read so far, over every call.
    private(set) var consumed = 0
    /// Where the line being read began, in `consumed` terms.
    private var lineStart = 0
    /// Where a refused body went wrong, in `consumed` terms: the start of the line that broke
    /// the rules, or the byte that should have been CR or LF after a chunk's data.
    private(set) var refusedFrom = 0
    /// What follows each chunk size on its line (extensions, whitespace), in `consumed` terms:
    /// valid, and to be ignored (RFC 9112 §7.1.1), but libevent refuses a size line that has
    /// them, so the reader's user takes them out. Emptied by whoever acts on them.
    var extensions: [Range<Int>] = []

    public mutating func consume(_ bytes: UnsafeRawBufferPointer) -> Progress {
        let before = consumed
        var position = bytes.startIndex
        defer { consumed = before + (position - bytes.startIndex) }
        func at(_ index: Int) -> Int { before + (index - bytes.startIndex) }
        while position < bytes.endIndex {
            switch state {
            case .finished:
                return .ended(consumed: position - bytes.startIndex)
            case .data(let remaining):
                let taken = min(remaining, bytes.endIndex - position)
                position += taken
                state = remaining == taken ? .dataCR : .data(remaining: remaining - taken)
            case .dataCR, .dataLF:
                let expected = if case .dataCR = state { ASCII.carriageReturn } else { ASCII.lineFeed }
                guard bytes[position] == expected else {
                    refusedFrom = at(position)
                    return refuse("a chunk's data does not end in CRLF")
                }
                position += 1
                if expected == ASCII.carriageReturn {
                    state = .dataLF
                } else {
                    state = .sizeLine
                    lineStart = at(position)
                }
            case .sizeLine, .trailerLine:
                let byte = bytes[position]
                position += 1
                refusedFrom = lineStart
                if sawCR {
                    guard byte == ASCII.lineFeed else { return refuse("a bare CR in a chunk's framing") }
                    sawCR = false
                    if let refusal = endLine() { return refusal }
                    lineStart = at(position)
                } else if byte == ASCII.carriageReturn {
                    sawCR = true
                } else if byte == ASCII.lineFeed {
                    return refuse("a chunk line ends in LF without CR")
                } else {
                    guard line.count < Self.mostLineBytes else { return refuse("a chunk line is over \(Self.mostLineBytes) bytes") }
                    line.append(byte)
                }
            }
        }
        if case .finished = state { return .ended(consumed: position - bytes.startIndex) }
        return .needsMore
    }

    private mutating func endLine() -> Progress? {
        defer { line.removeAll(keepingCapacity: true) }
        if case .trailerLine = state {
            if line.isEmpty {
                state = .finished
                return nil
            }
            guard validTrailerField(line) else { return refuse("a trailer field breaks the header field rules") }
            let name = String(decoding: line.prefix { $0 != ASCII.colon }, as: UTF8.self).lowercased()
            return Self.headerOnlyFields.contains(name) ? refuse("a trailer field may not be \(name)") : nil
        }
        let digits = line.prefix(while: ASCII.isHexDigit)
        guard !digits.isEmpty else { return refuse("a chunk size is not hex digits") }
        guard digits.count <= Self.mostSizeDigits else { return refuse("a chunk size has more than \(Self.mostSizeDigits) hex digits") }
        guard Self.validExtensions(line[digits.endIndex...]) else { return refuse("a chunk extension is malformed") }
        if digits.endIndex < line.endIndex {
            extensions.append((lineStart + digits.count)..<(lineStart + line.count))
        }
        let size = digits.reduce(0) { $0 << 4 | Int(Self.hexValue($1)) }
        state = size == 0 ? .trailerLine : .data(remaining: size)
        return nil
    }

    /// Fields that frame, route, authorise or describe the request (RFC 9110 §6.5.1): libevent
    /// adds trailer fields to the request's headers, so one of these in a trailer would reach the
    /// application as if the client had sent it before the body.
    static let headerOnlyFields: Set<String> = [
        "content-length", "transfer-encoding", "host", "authorization", "content-type", "content-encoding", "content-range",
        "expect", "trailer", "connection", "te", "upgrade", "keep-alive", "proxy-authorization", "cookie",
    ]

    private func refuse(_ message: String) -> Progress {
        .refused(RequestFraming.Violation(400, .chunk, message))
    }

    private func validTrailerField(_ line: [UInt8]) -> Bool {
        guard let colon = line.firstIndex(of: ASCII.colon), colon > 0 else { return false }
        return line[..<colon].allSatisfy(ASCII.isTokenCharacter)
            && line[(colon + 1)...].allSatisfy(ASCII.isFieldValueCharacter)
    }

    /// `*( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ) BWS`, ext-val a token or a quoted
    /// string (RFC 9112 §7.1.1).
    static func validExtensions(_ bytes: ArraySlice<UInt8>) -> Bool {
        var rest = bytes[...]
        func skipWhitespace() { while let first = rest.first, first == ASCII.space || first == ASCII.tab { rest.removeFirst() } }
        func token() -> Bool {
            let taken = rest.prefix(while: ASCII.isTokenCharacter)
            rest.removeFirst(taken.count)
            return !taken.isEmpty
        }
        while true {
            skipWhitespace()
            guard let first = rest.first else { return true }
            guard first == ASCII.semicolon else { return false }
            rest.removeFirst()
            skipWhitespace()
            guard token() else { return false }
            skipWhitespace()
            guard rest.first == ASCII.equals else { continue }
            rest.removeFirst()
            skipWhitespace()
            if rest.first == ASCII.quote {
                rest.removeFirst()
                guard quotedStringRest(&rest) else { return false }
            } else if !token() {
                return false
            }
        }
    }

    /// After the opening quote: qdtext and quoted pairs up to the closing quote.
    private static func quotedStringRest(_ rest: inout ArraySlice<UInt8>) -> Bool {
        while let byte = rest.popFirst() {
            switch byte {
            case ASCII.quote: return true
            case ASCII.backslash:
                guard let escaped = rest.popFirst(), ASCII.isFieldValueCharacter(escaped) else { return false }
            case ASCII.tab, 0x20...0x7E, 0x80...0xFF: continue
            default: return false
            }
        }
        return false
    }

    private static func hexValue(_ byte: UInt8) -> UInt8 {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        default: byte - 0x61 + 10
        }
    }
}
