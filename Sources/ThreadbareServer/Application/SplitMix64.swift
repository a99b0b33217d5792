/// A seeded generator built on the /cpu unit's mixer: the same seed gives the same sequence
/// on every machine, so generated test input replays.
public struct SplitMix64: Sendable {
    public var state: UInt64

    public init(state: UInt64) {
        self.state = state
    }

    public mutating func next() -> UInt64 {
        defer { state &+= 0x9E37_79B9_7F4A_7C15 }
        return CPUWork.mix(state)
    }

    /// A number from 0 up to, not including, `limit`.
    public mutating func below(_ limit: Int) -> Int { Int(next() % UInt64(limit)) }
}
