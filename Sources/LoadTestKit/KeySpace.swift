import Foundation

/// The keys an endpoint's `{key}` stands for: `count` keys numbered 0 …, drawn uniformly or,
/// with an exponent s > 0, by Zipf's law (key k with weight 1/(k+1)^s), as real caches see
/// their keys: a few hot, a long cold tail.
public struct KeySpace: Sendable, Equatable {
    public static let placeholder = "{key}"
    public static let counts = 1...1_000_000

    public var count: Int
    /// 0: uniform.
    public var zipfExponent: Double

    public init(count: Int, zipfExponent: Double = 0) {
        self.count = count
        self.zipfExponent = zipfExponent
    }
}

/// Draws keys from a KeySpace: one per load thread, never shared, so no lock.
struct KeySampler {
    /// Cumulative weights, normalised to 1; empty for uniform.
    private let cumulative: [Double]
    private let count: Int
    private var state: UInt64

    init(_ space: KeySpace, seed: UInt64) {
        count = space.count
        state = seed | 1
        guard space.zipfExponent > 0 else {
            cumulative = []
            return
        }
        var sums = [Double](repeating: 0, count: space.count)
        var total = 0.0
        for rank in 0..<space.count {
            total += 1 / pow(Double(rank + 1), space.zipfExponent)
            sums[rank] = total
        }
        cumulative = sums.map { $0 / total }
    }

    /// splitmix64: fast, and good enough to pick keys.
    private mutating func random() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) / Double(1 << 53)
    }

    mutating func next() -> Int {
        let draw = random()
        guard !cumulative.isEmpty else { return min(count - 1, Int(draw * Double(count))) }
        // The first rank whose cumulative weight reaches the draw.
        var low = 0, high = cumulative.count - 1
        while low < high {
            let middle = (low + high) / 2
            if cumulative[middle] < draw { low = middle + 1 } else { high = middle }
        }
        return low
    }
}
