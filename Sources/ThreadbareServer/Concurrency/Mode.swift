/// What a handler thread must hold to run handler code.
public enum LockModel: String, Sendable, CaseIterable {
    /// Free threads, as in CPython 3.13t: shared state is safe without a global lock.
    case none
    /// One lock for the whole process: CPython's GIL.
    case global
    /// One lock per interpreter (PEP 684).
    case perInterpreter = "per-interpreter"
}

/// How a deployment uses the machine's cores: a process model times a lock model. The server
/// is written once; the named modes are presets of this value.
public struct Mode: Sendable, Equatable {
    public enum Name: String, Sendable, CaseIterable {
        case nogil, gil, subinterpreters, prefork
    }

    public var name: Name
    public var processes: Int
    public var threadsPerProcess: Int
    public var lock: LockModel
    /// Lock domains per process: one lock (or none) and one cache each.
    public var interpreters: Int

    /// The preset `name` with `threads` handler threads per process; `interpreters` counts only
    /// for subinterpreters.
    public static func preset(_ name: Name, threads: Int, interpreters: Int = 1, workers: Int = 1) throws(ModeError) -> Mode {
        switch name {
        case .nogil:
            return Mode(name: .nogil, processes: 1, threadsPerProcess: threads, lock: .none, interpreters: 1)
        case .gil:
            return Mode(name: .gil, processes: 1, threadsPerProcess: threads, lock: .global, interpreters: 1)
        case .subinterpreters:
            guard threads >= interpreters else {
                throw ModeError("subinterpreters needs at least one handler thread per interpreter: threads \(threads) < interpreters \(interpreters)")
            }
            return Mode(name: .subinterpreters, processes: 1, threadsPerProcess: threads, lock: .perInterpreter, interpreters: interpreters)
        case .prefork:
            // Each worker is a whole CPython-like process: its own GIL, its own memory.
            return Mode(name: .prefork, processes: workers, threadsPerProcess: threads, lock: .global, interpreters: 1)
        }
    }
}

/// A combination of settings no mode can run with.
public struct ModeError: Error, CustomStringConvertible {
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}
