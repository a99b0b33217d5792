/// The unit of `/cpu` work.
///
/// One unit is `roundsPerUnit` rounds of the SplitMix64 finaliser, each round feeding the next,
/// so the work is serial, cannot be vectorised or skipped, and gives the same result on every
/// machine and in every mode. On the 2-core x86-64 machine this project is measured on, one unit
/// takes about one microsecond (see README, "The /cpu unit").
public enum CPUWork {
    public static let roundsPerUnit = 300

    /// Runs `units` units and returns the final state. `checkpoint` runs once per unit: the
    /// place where a GIL-holding thread may be asked to let another run, or stopped.
    @inline(__always)
    public static func run<Stop: Error>(units: Int, checkpoint: () throws(Stop) -> Void) throws(Stop) -> UInt64 {
        var state = 0x9E37_79B9_7F4A_7C15 ^ UInt64(truncatingIfNeeded: units)
        for _ in 0..<units {
            for _ in 0..<roundsPerUnit {
                state = mix(state)
            }
            try checkpoint()
        }
        return state
    }

    /// The same with no check points: C code that needs no lock.
    @inline(__always)
    public static func run(units: Int) -> UInt64 {
        run(units: units) { () throws(Never) in }
    }

    @inline(__always)
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The result as sixteen lower-case hex digits.
    public static func hex(_ value: UInt64) -> String {
        var digits: [UInt8] = []
        appendHex(value, to: &digits)
        return String(decoding: digits, as: UTF8.self)
    }

    static func appendHex(_ value: UInt64, to output: inout [UInt8]) {
        for position in 0..<16 {
            let nibble = UInt8((value >> UInt64(60 - 4 * position)) & 0xF)
            output.append(nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10)
        }
    }
}
