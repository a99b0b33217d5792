import Foundation
import Histogram
import Testing
@testable import LoadTestKit

@Suite("HdrHistogram's V2 encoding")
struct HistogramCodecTests {
    @Test func varintsRoundTrip() throws {
        for value: Int64 in [0, 1, -1, 63, -64, 64, 1 << 20, -(1 << 40), Int64.max, Int64.min + 1, Int64.min] {
            var bytes: [UInt8] = []
            HistogramCodec.putVarint(value, in: &bytes)
            var position = 0
            #expect(try HistogramCodec.varint(bytes, &position, end: bytes.count) == value)
            #expect(position == bytes.count && bytes.count <= 9)
        }
    }

    @Test func theLayoutIsTheLibrarysOwn() {
        let histogram = Results.histogram()
        let layout = HistogramLayout(histogram)
        for value: UInt64 in [1, 2, 1023, 1024, 2047, 2048, 2049, 4095, 100_000, 123_456_789, Results.longestMicroseconds] {
            #expect(layout.value(at: layout.index(of: value)) == histogram.lowestEquivalentForValue(value), "\(value)")
            #expect(layout.value(at: layout.index(of: value) + 1) - 1 == histogram.highestEquivalentForValue(value), "\(value)")
        }
    }

    /// Values from 1 µs to an hour, with long empty stretches between them, come back bucket
    /// for bucket.
    @Test func aHistogramRoundTrips() throws {
        var histogram = Results.histogram()
        for value: UInt64 in 1...3000 { histogram.record(value) }
        for value: UInt64 in [50_000, 50_001, 999_999, 5_000_000, Results.longestMicroseconds] { _ = histogram.record(value, count: 7) }
        let text = HistogramCodec.base64(histogram)
        #expect(text.hasPrefix("HISTF"), "HdrHistogram's compressed histograms begin so: \(text.prefix(8))")
        let decoded = try HistogramCodec.decode(base64: Substring(text))
        #expect(decoded.layout == HistogramLayout(histogram))
        var copy = Results.histogram()
        for bucket in decoded.buckets { _ = copy.record(bucket.value, count: bucket.count) }
        #expect(copy.totalCount == histogram.totalCount)
        for percentile in [1.0, 50, 90, 99, 99.9, 99.99, 100] {
            // Equal to the bucket: a value comes back as the highest its bucket holds, as
            // HdrHistogram's own decoders give it.
            #expect(histogram.valuesAreEquivalent(copy.valueAtPercentile(percentile), histogram.valueAtPercentile(percentile)), "p\(percentile)")
        }
        #expect(copy.valueAtPercentile(50) == histogram.valueAtPercentile(50), "exact below 2048")
        #expect(histogram.valuesAreEquivalent(copy.max, histogram.max))
        let empty = try HistogramCodec.decode(base64: Substring(HistogramCodec.base64(Results.histogram())))
        #expect(empty.buckets.isEmpty)
    }

    @Test func aBrokenHistogramIsAnErrorNotACrash() {
        let good = HistogramCodec.base64(Results.histogram())
        for bad in ["not base64!", "AAAA", String(good.dropLast(8)), "HISTFAAAAAB4nA=="] {
            #expect(throws: HistogramCodec.Invalid.self, "\(bad)") { try HistogramCodec.decode(base64: Substring(bad)) }
        }
    }
}

extension HistogramCodecTests {
    /// An encoding whose counts are `payload`, behind a sound header for loadtest's layout.
    static func crafted(_ payload: [Int64], lowest: UInt64 = 1, offset: UInt32 = 0) -> String {
        var encoded = HistogramCodec.encode(Results.histogram())
        encoded.removeLast(encoded.count - HistogramCodec.headerSize)
        var counts: [UInt8] = []
        for value in payload { HistogramCodec.putVarint(value, in: &counts) }
        func put(_ value: UInt64, at offset: Int, bytes: Int) {
            for shift in 0..<bytes { encoded[offset + shift] = UInt8(truncatingIfNeeded: value >> UInt64(8 * (bytes - 1 - shift))) }
        }
        put(UInt64(counts.count), at: 4, bytes: 4)
        put(UInt64(offset), at: 8, bytes: 4)
        put(lowest, at: 16, bytes: 8)
        return Data(HistogramCodec.compress(encoded + counts)).base64EncodedString()
    }

    @Test func hostileCountsAreRefusedNotTrapped() throws {
        #expect(try HistogramCodec.decode(base64: Substring(Self.crafted([0, 3, -5, 2]))).buckets.map(\.count) == [3, 2])
        let length = HistogramLayout(Results.histogram()).index(of: Results.longestMicroseconds) + 1
        for payload: [Int64] in [[Int64.min], [-Int64.max], [-Int64(length), 1], [-Int64(length) - 1], [-Int64(length - 1), 1, 1]] {
            #expect(throws: HistogramCodec.Invalid.self, "\(payload)") { try HistogramCodec.decode(base64: Substring(Self.crafted(payload))) }
        }
        #expect(throws: HistogramCodec.Invalid.self) { try HistogramCodec.decode(base64: Substring(Self.crafted([1], lowest: UInt64.max / 2 + 1))) }
        #expect(throws: HistogramCodec.Invalid.self) { try HistogramCodec.decode(base64: Substring(Self.crafted([1], offset: 3))) }
    }
}
