import CZlib
import Foundation
import Histogram

/// HdrHistogram's V2 compressed encoding, the form an interval log (.hlog) carries in base64,
/// so HdrHistogram's own readers (its Java HistogramLogReader, the `hdrhistogram` Python
/// package) read loadtest's logs and loadtest reads theirs. hdrhistogram-swift has no codec.
///
/// The encoding: a 40-byte big-endian header (cookie, payload length, normalizing offset,
/// significant digits, lowest and highest trackable value, a conversion ratio), then the counts
/// array in its index order as ZigZag LEB128 varints, a run of empty buckets written as one
/// negative number; all of it deflated (zlib's format) behind an 8-byte header of its own.
enum HistogramCodec {
    /// The low nibble's 0x10 says counts are ZigZag LEB128 varints (HdrHistogram's "word size" byte).
    static let encodingCookie: UInt32 = 0x1c84_9303 | 0x10
    static let compressedCookie: UInt32 = 0x1c84_9304 | 0x10
    static let headerSize = 40

    struct Invalid: Error, CustomStringConvertible {
        let description: String
    }

    /// Base64 of the compressed encoding, as a log line carries it.
    static func base64(_ histogram: Histogram<UInt64>) -> String {
        Data(compressed(histogram)).base64EncodedString()
    }

    static func compressed(_ histogram: Histogram<UInt64>) -> [UInt8] {
        compress(encode(histogram))
    }

    /// An uncompressed encoding, deflated behind the compressed form's own header.
    static func compress(_ encoded: [UInt8]) -> [UInt8] {
        var length = compressBound(uLong(encoded.count))
        var output = [UInt8](repeating: 0, count: 8 + Int(length))
        let status = output.withUnsafeMutableBufferPointer { out in
            encoded.withUnsafeBufferPointer { compress2(out.baseAddress! + 8, &length, $0.baseAddress!, uLong($0.count), Z_DEFAULT_COMPRESSION) }
        }
        // compress2 fails only for want of memory or of room, and compressBound gives it room.
        precondition(status == Z_OK, "zlib compress2 failed: \(status)")
        output.removeLast(output.count - 8 - Int(length))
        put(compressedCookie, at: 0, in: &output)
        put(UInt32(length), at: 4, in: &output)
        return output
    }

    /// The uncompressed V2 encoding: header and counts.
    static func encode(_ histogram: Histogram<UInt64>) -> [UInt8] {
        let layout = HistogramLayout(histogram)
        var counts: [(index: Int, count: UInt64)] = []
        for bucket in histogram.recordedValues() where bucket.count > 0 {
            counts.append((layout.index(of: bucket.value), UInt64(bucket.count)))
        }
        var payload: [UInt8] = []
        payload.reserveCapacity(counts.count * 3 + 8)
        var nextIndex = 0
        for (index, count) in counts {
            let zeros = index - nextIndex
            if zeros > 1 { putVarint(-Int64(zeros), in: &payload) } else if zeros == 1 { putVarint(0, in: &payload) }
            putVarint(Int64(clamping: count), in: &payload)
            nextIndex = index + 1
        }
        var output = [UInt8](repeating: 0, count: headerSize)
        put(encodingCookie, at: 0, in: &output)
        put(UInt32(payload.count), at: 4, in: &output)
        put(UInt32(0), at: 8, in: &output)
        put(UInt32(layout.significantDigits), at: 12, in: &output)
        put(layout.lowest, at: 16, in: &output)
        put(layout.highest, at: 24, in: &output)
        put(Double(1).bitPattern, at: 32, in: &output)
        return output + payload
    }

    /// Each bucket's value (the highest it holds, as HdrHistogram reports a bucket's values) and count, from base64 of a compressed encoding, and
    /// the layout it was recorded with.
    static func decode(base64 text: Substring) throws(Invalid) -> (layout: HistogramLayout, buckets: [(value: UInt64, count: UInt64)]) {
        guard let data = Data(base64Encoded: String(text)) else { throw Invalid(description: "not base64") }
        let bytes = [UInt8](data)
        guard bytes.count >= 8, read32(bytes, 0) & ~0xF0 == compressedCookie & ~0xF0 else {
            throw Invalid(description: "not an HdrHistogram V2 compressed histogram (its cookie is wrong)")
        }
        let compressedLength = Int(read32(bytes, 4))
        guard compressedLength <= bytes.count - 8 else { throw Invalid(description: "its compressed length runs past its end") }
        // The header says how long the counts are; start with room for a generous guess, and
        // stop at 4 MiB (an hour in microseconds at 3 digits encodes in at most 212 KiB).
        var capacity = max(4096, compressedLength * 8)
        var encoded: [UInt8] = []
        while true {
            var length = uLong(capacity)
            var output = [UInt8](repeating: 0, count: capacity)
            let status = output.withUnsafeMutableBufferPointer { out in
                bytes.withUnsafeBufferPointer { uncompress(out.baseAddress!, &length, $0.baseAddress! + 8, uLong(compressedLength)) }
            }
            if status == Z_BUF_ERROR && capacity < 1 << 22 {
                capacity *= 4
                continue
            }
            guard status == Z_OK else { throw Invalid(description: "its deflate stream is broken (zlib \(status))") }
            encoded = Array(output[..<Int(length)])
            break
        }
        guard encoded.count >= headerSize, read32(encoded, 0) & ~0xF0 == encodingCookie & ~0xF0 else {
            throw Invalid(description: "its inner encoding is not HdrHistogram V2")
        }
        let payloadLength = Int(read32(encoded, 4))
        let digits = Int(read32(encoded, 12))
        let lowest = read64(encoded, 16), highest = read64(encoded, 24)
        guard payloadLength <= encoded.count - headerSize, (0...5).contains(digits), lowest >= 1, lowest <= highest / 2 else {
            throw Invalid(description: "its header is inconsistent")
        }
        // An offset shifts the counts (a histogram shifted after recording); loadtest's never are.
        guard read32(encoded, 8) == 0 else { throw Invalid(description: "its counts are shifted (a normalizing offset), which loadtest does not read") }
        let layout = HistogramLayout(lowest: lowest, highest: highest, significantDigits: digits)
        // Past the highest trackable value's bucket there is nowhere to count.
        let length = layout.index(of: highest) + 1
        var buckets: [(value: UInt64, count: UInt64)] = []
        var position = headerSize, index = 0
        let end = headerSize + payloadLength
        while position < end {
            let value = try varint(encoded, &position, end: end)
            let outOfRange = Invalid(description: "its counts run past its range")
            if value < 0 {
                guard value > Int64.min, -value <= Int64(length - index) else { throw outOfRange }
                index += Int(-value)
            } else {
                if value > 0 {
                    guard index < length else { throw outOfRange }
                    buckets.append((layout.value(at: index + 1) - 1, UInt64(value)))
                }
                index += 1
            }
        }
        return (layout, buckets)
    }

    // MARK: Bytes

    private static func put(_ value: UInt32, at offset: Int, in bytes: inout [UInt8]) {
        for shift in 0..<4 { bytes[offset + shift] = UInt8(truncatingIfNeeded: value >> (24 - 8 * shift)) }
    }

    private static func put(_ value: UInt64, at offset: Int, in bytes: inout [UInt8]) {
        for shift in 0..<8 { bytes[offset + shift] = UInt8(truncatingIfNeeded: value >> (56 - 8 * shift)) }
    }

    private static func read32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        (0..<4).reduce(0) { $0 << 8 | UInt32(bytes[offset + $1]) }
    }

    private static func read64(_ bytes: [UInt8], _ offset: Int) -> UInt64 {
        (0..<8).reduce(0) { $0 << 8 | UInt64(bytes[offset + $1]) }
    }

    /// ZigZag, then LEB128 in at most 9 bytes: 7 bits in each of the first 8, all 8 in the 9th.
    static func putVarint(_ signed: Int64, in bytes: inout [UInt8]) {
        var value = UInt64(bitPattern: (signed << 1) ^ (signed >> 63))
        for _ in 0..<8 {
            if value < 0x80 {
                bytes.append(UInt8(value))
                return
            }
            bytes.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(truncatingIfNeeded: value))
    }

    static func varint(_ bytes: [UInt8], _ position: inout Int, end: Int) throws(Invalid) -> Int64 {
        var value: UInt64 = 0
        for byteIndex in 0..<9 {
            guard position < end else { throw Invalid(description: "its counts end inside a number") }
            let byte = bytes[position]
            position += 1
            if byteIndex == 8 {
                value |= UInt64(byte) << 56
                break
            }
            value |= UInt64(byte & 0x7F) << (7 * UInt64(byteIndex))
            if byte & 0x80 == 0 { break }
        }
        return Int64(bitPattern: value >> 1) ^ -Int64(bitPattern: value & 1)
    }
}

/// Where HdrHistogram keeps a value in its counts array, for a histogram's lowest discernible
/// value, highest trackable value and significant digits: the same arithmetic as every
/// HdrHistogram implementation, which is what makes the encoding portable.
struct HistogramLayout: Equatable {
    let lowest: UInt64
    let highest: UInt64
    let significantDigits: Int
    private let unitMagnitude: Int
    private let subBucketHalfCountMagnitude: Int
    private let subBucketMask: UInt64
    private let leadingZeroCountBase: Int

    init(lowest: UInt64, highest: UInt64, significantDigits: Int) {
        self.lowest = lowest
        self.highest = highest
        self.significantDigits = significantDigits
        unitMagnitude = Int(Double.log2(Double(lowest)).rounded(.down))
        let largestWithSingleUnitResolution = 2 * Int(Double.pow(10, Double(significantDigits)))
        let subBucketCountMagnitude = Int(Double.log2(Double(largestWithSingleUnitResolution)).rounded(.up))
        subBucketHalfCountMagnitude = max(subBucketCountMagnitude, 1) - 1
        subBucketMask = (UInt64(1) << subBucketCountMagnitude - 1) << unitMagnitude
        leadingZeroCountBase = 64 - unitMagnitude - subBucketCountMagnitude
    }

    init(_ histogram: Histogram<UInt64>) {
        self.init(lowest: histogram.lowestDiscernibleValue, highest: histogram.highestTrackableValue,
                  significantDigits: Int(histogram.numberOfSignificantValueDigits.rawValue))
    }

    private var subBucketHalfCount: Int { 1 << subBucketHalfCountMagnitude }

    func index(of value: UInt64) -> Int {
        let bucket = leadingZeroCountBase - (value | subBucketMask).leadingZeroBitCount
        let subBucket = Int(value >> UInt64(bucket + unitMagnitude))
        return (bucket + 1) << subBucketHalfCountMagnitude + (subBucket - subBucketHalfCount)
    }

    /// The lowest value kept at `index` (buckets are contiguous: the one after it begins where it ends).
    func value(at index: Int) -> UInt64 {
        var bucket = (index >> subBucketHalfCountMagnitude) - 1
        var subBucket = (index & (subBucketHalfCount - 1)) + subBucketHalfCount
        if bucket < 0 {
            subBucket -= subBucketHalfCount
            bucket = 0
        }
        return UInt64(subBucket) << UInt64(bucket + unitMagnitude)
    }
}
