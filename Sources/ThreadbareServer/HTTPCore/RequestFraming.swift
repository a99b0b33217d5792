/// RFC 9112's rules for a request's head, judged on the bytes as the client sent them, before
/// libevent's lenient parser reads them. Request smuggling lives in the gaps between parsers: a
/// proxy in front and the server behind it that disagree about where a message ends. So every
/// head whose framing or syntax the RFCs make invalid is refused, as nginx, Go's net/http and
/// h11 refuse it, rather than read the way libevent happens to read it.
///
/// `judge` takes a complete head: the request line, the field lines and the empty line that
/// ends them. It says how long the body is, or why the head is refused.
public enum RequestFraming {
    /// How the body that follows a valid head is delimited (RFC 9112 §6.3).
    public enum Body: Equatable, Sendable {
        case length(Int)
        case chunked
    }

    public struct Head: Equatable, Sendable {
        /// 0 or 1: HTTP/1.0 or HTTP/1.1.
        public var minorVersion: Int
        public var body: Body
    }

    /// Why a message is refused: the status it gets, a stable name for `/stats`, and a message
    /// that never repeats the client's bytes.
    public struct Violation: Error, Equatable, Sendable {
        public var status: Int
        public var reason: Reason
        public var message: String

        init(_ status: Int, _ reason: Reason, _ message: String) {
            self.status = status
            self.reason = reason
            self.message = message
        }
    }

    /// The rule a refused message broke, as `/stats` counts it.
    public enum Reason: String, CaseIterable, Sendable {
        case requestLine = "request_line"
        case version
        case fieldSyntax = "field_syntax"
        case obsoleteFolding = "obsolete_folding"
        case host
        case contentLength = "content_length"
        case transferEncoding = "transfer_encoding"
        case unsupportedCoding = "unsupported_transfer_coding"
        case chunk
        case headTooLarge = "head_too_large"
    }

    /// The most digits a Content-Length may have, leading zeros included: 18 fit in an Int, and
    /// no body here comes near.
    static let mostLengthDigits = 18

    /// `head` runs from the request line through the empty line that ends the fields. Empty
    /// lines before the request line are skipped (RFC 9112 §2.2). A line may end in CRLF or a
    /// bare LF, as nginx and RFC 9112 §2.2 allow; a CR anywhere else is refused.
    public static func judge(_ head: UnsafeRawBufferPointer) -> Result<Head, Violation> {
        var lines = LineReader(head)
        var requestLine: UnsafeRawBufferPointer.SubSequence
        repeat {
            guard let line = lines.next() else { return .failure(Violation(400, .requestLine, "the request has no request line")) }
            requestLine = line
        } while requestLine.isEmpty
        if lines.sawBareCR { return .failure(Violation(400, .requestLine, "the request line holds a bare CR")) }
        let minor: Int
        switch parseRequestLine(requestLine) {
        case .success(let version): minor = version
        case .failure(let violation): return .failure(violation)
        }

        var hosts = 0
        var contentLength: Int?
        var codings: [Substring] = []
        var sawTransferEncoding = false
        var first = true
        while let line = lines.next() {
            if lines.sawBareCR { return .failure(Violation(400, .fieldSyntax, "a header field holds a bare CR")) }
            if line.isEmpty { break }
            if line.first == ASCII.space || line.first == ASCII.tab {
                // RFC 9112 §2.2 (whitespace before the first field) and §5.2 (obs-fold).
                return .failure(first
                    ? Violation(400, .fieldSyntax, "whitespace between the request line and the first header field")
                    : Violation(400, .obsoleteFolding, "a header field is folded over several lines (obs-fold)"))
            }
            first = false
            guard let colon = line.firstIndex(of: ASCII.colon) else {
                return .failure(Violation(400, .fieldSyntax, "a header line has no colon"))
            }
            let name = line[line.startIndex..<colon]
            guard !name.isEmpty, name.allSatisfy(ASCII.isTokenCharacter) else {
                return .failure(Violation(400, .fieldSyntax, name.last == ASCII.space || name.last == ASCII.tab
                    ? "whitespace between a header field's name and its colon" : "a header field's name is not a token"))
            }
            let value = trimmed(line[line.index(after: colon)...])
            guard value.allSatisfy(ASCII.isFieldValueCharacter) else {
                return .failure(Violation(400, .fieldSyntax, "a header field's value holds a control character"))
            }
            // Compared in place: this runs for every field of every request.
            if Self.equalsIgnoringCase(name, Self.host) {
                hosts += 1
            } else if Self.equalsIgnoringCase(name, Self.contentLengthName) {
                switch parseContentLength(value, soFar: contentLength) {
                case .success(let length): contentLength = length
                case .failure(let violation): return .failure(violation)
                }
            } else if Self.equalsIgnoringCase(name, Self.transferEncodingName) {
                sawTransferEncoding = true
                codings += String(decoding: value, as: UTF8.self).split(separator: ",", omittingEmptySubsequences: false)
                    .map { $0.trimmingSpacesAndTabs() }
            }
        }

        if hosts > 1 { return .failure(Violation(400, .host, "the request has \(hosts) Host fields; it must have one")) }
        if hosts == 0 && minor == 1 { return .failure(Violation(400, .host, "an HTTP/1.1 request must have a Host field")) }
        guard sawTransferEncoding else { return .success(Head(minorVersion: minor, body: .length(contentLength ?? 0))) }
        if minor == 0 {
            return .failure(Violation(400, .transferEncoding, "Transfer-Encoding is not part of HTTP/1.0"))
        }
        if contentLength != nil {
            return .failure(Violation(400, .transferEncoding, "the request has both Transfer-Encoding and Content-Length"))
        }
        if let malformed = codings.first(where: { $0.isEmpty || !$0.utf8.allSatisfy(ASCII.isTokenCharacter) }) {
            return .failure(Violation(400, .transferEncoding, malformed.isEmpty
                ? "Transfer-Encoding has an empty coding" : "Transfer-Encoding has a coding that is not a token"))
        }
        if codings.contains(where: { $0.lowercased() != "chunked" }) {
            return .failure(Violation(501, .unsupportedCoding, "this server implements only the chunked transfer coding"))
        }
        if codings.count > 1 {
            return .failure(Violation(400, .transferEncoding, "chunked is applied more than once"))
        }
        return .success(Head(minorVersion: minor, body: .chunked))
    }

    /// `method SP request-target SP HTTP-version` (RFC 9112 §3): the method a token, exactly one
    /// space between the parts, no whitespace in the target, and HTTP/1.0 or HTTP/1.1.
    private static func parseRequestLine(_ line: UnsafeRawBufferPointer.SubSequence) -> Result<Int, Violation> {
        guard let firstSpace = line.firstIndex(of: ASCII.space),
              let secondSpace = line[(firstSpace + 1)...].firstIndex(of: ASCII.space),
              firstSpace > line.startIndex, secondSpace > firstSpace + 1, secondSpace + 1 < line.endIndex,
              !line[(secondSpace + 1)...].contains(ASCII.space) else {
            return .failure(Violation(400, .requestLine, "the request line is not: method, one space, target, one space, version"))
        }
        guard line[..<firstSpace].allSatisfy(ASCII.isTokenCharacter) else {
            return .failure(Violation(400, .requestLine, "the request method is not a token"))
        }
        // A URI is visible ASCII (RFC 3986); other bytes are sent percent-encoded.
        guard line[(firstSpace + 1)..<secondSpace].allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else {
            return .failure(Violation(400, .requestLine, "the request target holds a byte that is not visible ASCII"))
        }
        let version = line[(secondSpace + 1)...]
        let at = version.startIndex
        // HTTP-version = "HTTP/" DIGIT "." DIGIT, case-sensitive (RFC 9112 §2.3).
        guard version.count == 8, version.prefix(5).elementsEqual(Self.httpSlash), version[at + 6] == UInt8(ascii: "."),
              ASCII.isDigit(version[at + 5]), ASCII.isDigit(version[at + 7]) else {
            return .failure(Violation(400, .requestLine, "the request line does not end in an HTTP version"))
        }
        let major = version[at + 5], minor = version[at + 7]
        guard major == UInt8(ascii: "1"), minor == UInt8(ascii: "0") || minor == UInt8(ascii: "1") else {
            return .failure(Violation(505, .version, "this server speaks HTTP/1.0 and HTTP/1.1"))
        }
        return .success(Int(minor - UInt8(ascii: "0")))
    }

    private static let httpSlash = Array("HTTP/".utf8)
    private static let host = Array("host".utf8)
    private static let contentLengthName = Array("content-length".utf8)
    private static let transferEncodingName = Array("transfer-encoding".utf8)

    /// ASCII case-insensitive; `lowercase` is already lower case.
    private static func equalsIgnoringCase(_ name: UnsafeRawBufferPointer.SubSequence, _ lowercase: [UInt8]) -> Bool {
        name.count == lowercase.count && zip(name, lowercase).allSatisfy { ($0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0) == $1 }
    }

    /// One Content-Length value: a list of decimal numbers that must all be the same, and the
    /// same as any earlier field's (RFC 9110 §8.6, RFC 9112 §6.3).
    private static func parseContentLength(_ value: UnsafeRawBufferPointer.SubSequence, soFar: Int?) -> Result<Int, Violation> {
        var length = soFar
        for element in value.split(separator: ASCII.comma, omittingEmptySubsequences: false) {
            let digits = trimmed(element)
            guard !digits.isEmpty, digits.allSatisfy(ASCII.isDigit) else {
                return .failure(Violation(400, .contentLength, "Content-Length is not a non-negative decimal number"))
            }
            guard digits.count <= mostLengthDigits else {
                return .failure(Violation(400, .contentLength, "Content-Length has more than \(mostLengthDigits) digits"))
            }
            let number = digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
            if let length, length != number {
                return .failure(Violation(400, .contentLength, "the request has different Content-Length values"))
            }
            length = number
        }
        return .success(length ?? 0)
    }

    private static func trimmed(_ bytes: UnsafeRawBufferPointer.SubSequence) -> UnsafeRawBufferPointer.SubSequence {
        var start = bytes.startIndex, end = bytes.endIndex
        while start < end, bytes[start] == ASCII.space || bytes[start] == ASCII.tab { start += 1 }
        while end > start, bytes[end - 1] == ASCII.space || bytes[end - 1] == ASCII.tab { end -= 1 }
        return bytes[start..<end]
    }

}

/// Lines ended by LF, with the CR before it dropped; notes a CR that ends no line.
struct LineReader {
    private let bytes: UnsafeRawBufferPointer
    private var position: Int
    private(set) var sawBareCR = false

    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
        position = bytes.startIndex
    }

    /// The next line without its ending, or nil at the end; a last line without LF counts.
    mutating func next() -> UnsafeRawBufferPointer.SubSequence? {
        guard position < bytes.endIndex else { return nil }
        let start = position
        var end = bytes[start...].firstIndex(of: ASCII.lineFeed) ?? bytes.endIndex
        position = end == bytes.endIndex ? end : end + 1
        if end > start, bytes[end - 1] == ASCII.carriageReturn { end -= 1 }
        let line = bytes[start..<end]
        if line.contains(ASCII.carriageReturn) { sawBareCR = true }
        return line
    }
}

/// The bytes RFC 9110's grammar is written in.
enum ASCII {
    static let space = UInt8(ascii: " "), tab = UInt8(ascii: "\t"), colon = UInt8(ascii: ":"), comma = UInt8(ascii: ",")
    static let semicolon = UInt8(ascii: ";"), equals = UInt8(ascii: "="), quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")
    static let carriageReturn = UInt8(ascii: "\r"), lineFeed = UInt8(ascii: "\n")

    static func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }

    /// What a field value (and a quoted string) may hold: HTAB, SP, visible ASCII and obs-text,
    /// no other control character (RFC 9110 §5.5).
    static func isFieldValueCharacter(_ byte: UInt8) -> Bool { byte == tab || (byte >= 0x20 && byte != 0x7F) }

    static func isHexDigit(_ byte: UInt8) -> Bool {
        isDigit(byte) || (byte >= 0x41 && byte <= 0x46) || (byte >= 0x61 && byte <= 0x66)
    }

    /// tchar (RFC 9110 §5.6.2): what tokens, such as methods and field names, are made of.
    static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A, UInt8(ascii: "-"): return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"),
             UInt8(ascii: "|"), UInt8(ascii: "~"): return true
        default: return false
        }
    }
}

extension Substring {
    func trimmingSpacesAndTabs() -> Substring {
        var result = self
        while let first = result.first, first == " " || first == "\t" { result.removeFirst() }
        while let last = result.last, last == " " || last == "\t" { result.removeLast() }
        return result
    }
}
