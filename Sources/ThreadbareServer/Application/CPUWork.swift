/// The unit of `/cpu` work.
///
/// One unit is `roundsPerUnit` rounds of the SplitMix64 finaliser, each round feeding the next,
/// so the work is serial, cannot be vectorised or skipped, and gives the same result on every
/// machine and in every mode. On the 2-core x86-64 machine this project is measured on, one unit
/// takes about one microsecond (see README, "The /cpu unit").
public enum CPUWork {
    public static let roundsPerUnit = 300

    /// Runs `units` units from `state` (a new chain when nil: the result depends only on the
    /// total work, however it is split) and returns the final state. Each unit may cost
    /// `extraRounds` more, which leave the result as it is in every mode. `checkpoint` runs
    /// once per unit: the place where a GIL-holding thread may be asked to let another run,
    /// or stopped.
    @inline(__always)
    public static func run<Stop: Error>(units: Int, from state: UInt64? = nil, extraRounds: Int = 0,
                                        checkpoint: () throws(Stop) -> Void) throws(Stop) -> UInt64 {
        var state = state ?? start(units: units)
        let zero = extraRounds > 0 ? opaqueZero : 0
        for _ in 0..<units {
            for _ in 0..<roundsPerUnit {
                state = mix(state)
            }
            if extraRounds > 0 {
                // A chain from the state and back into it, through a zero the compiler cannot
                // see: the extra rounds lie on the unit's critical path, as a slower
                // interpreter's would, instead of running beside it on a spare execution unit.
                var extra = state
                for _ in 0..<extraRounds {
                    extra = mix(extra)
                }
                state ^= extra & zero
            }
            try checkpoint()
        }
        return state
    }

    /// Always 0. Public and variable, so no optimiser can prove it and fold `x & opaqueZero`
    /// (with the extra rounds behind it) away; nothing writes it.
    public nonisolated(unsafe) static var opaqueZero: UInt64 = 0

    /// The state a chain of `units` units starts from.
    public static func start(units: Int) -> UInt64 {
        0x9E37_79B9_7F4A_7C15 ^ UInt64(truncatingIfNeeded: units)
    }

    /// The same with no check points: C code that needs no lock.
    @inline(__always)
    public static func run(units: Int, from state: UInt64? = nil) -> UInt64 {
        run(units: units, from: state) { () throws(Never) in }
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

/// What one unit of handler code costs the interpreter running it. A free-threaded build runs
/// single-threaded Python slower than a GIL build (biased reference counting, per-object locks:
/// PEP 703), so under `lock: none` each unit does `free_threading_overhead` more rounds: real
/// extra work, which more threads share out as they share the rest. C code called from Python
/// (`native`) runs the same in either build and pays none of it.
public struct InterpreterCost: Sendable, Equatable {
    /// Extra work per unit of Python, in percent of a unit.
    public let overheadPercent: Double
    /// CPUWork rounds each unit of Python costs beyond the unit itself.
    public let extraRounds: Int

    public init(overheadPercent: Double) {
        self.overheadPercent = overheadPercent
        extraRounds = Int((Double(CPUWork.roundsPerUnit) * overheadPercent / 100).rounded())
    }
}
