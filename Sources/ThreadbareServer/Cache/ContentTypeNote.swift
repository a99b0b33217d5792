import Foundation

/// The content type of a value Threadbare stored in memcached, kept apart from the value so the
/// value stays exactly the bytes that were PUT (other clients read it as data).
///
/// The note's key is binary: a NUL, `tb:ct:` and the 8-byte FNV-1a hash of the value's key,
/// sent base64-encoded with the meta protocol's `b` flag. A text-protocol client cannot send a
/// key holding NUL, so no other client's key is ever a note. It travels to the server that
/// holds the value's key (the pool routes it by that key, not by its own), so reading both is
/// one round trip to one server.
///
/// The note names the key it belongs to and the length and hash of the value it describes.
/// When another client overwrites the value (or a hash collides), the note no longer matches
/// and the value reads as `application/octet-stream`, as a value no one typed.
enum ContentTypeNote {
    static func wireKey(for key: CacheKey) -> String {
        var hash = key.stableHash.bigEndian
        let suffix = withUnsafeBytes(of: &hash) { Array($0) }
        return Data([0] + Array("tb:ct:".utf8) + suffix).base64EncodedString()
    }

    /// `CONTENT-TYPE\nLENGTH HASH\nKEY`.
    static func text(_ contentType: String, for key: CacheKey, describing value: [UInt8]) -> [UInt8] {
        let type = contentType.filter { $0 != "\n" && $0 != "\r" }
        return Array("\(type)\n\(value.count) \(String(fingerprint(value), radix: 16))\n".utf8) + key.bytes
    }

    /// The noted content type, if the note is about this key and this value.
    static func contentType(in note: [UInt8], for key: CacheKey, describing value: [UInt8]) -> String? {
        let parts = note.split(separator: UInt8(ascii: "\n"), maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, Array(parts[2]) == key.bytes,
              String(decoding: parts[1], as: UTF8.self) == "\(value.count) \(String(fingerprint(value), radix: 16))" else { return nil }
        return String(decoding: parts[0], as: UTF8.self)
    }

    /// FNV-1a over the value, as a key's stable hash is over the key.
    private static func fingerprint(_ value: [UInt8]) -> UInt64 { CacheKey(value).stableHash }
}
