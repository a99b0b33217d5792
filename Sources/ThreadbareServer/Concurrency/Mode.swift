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

    /// The preset `name` with `threads` handler threads per process.
    public static func preset(_ name: Name, threads: Int) throws(ModeError) -> Mode {
        switch name {
        case .nogil:
            return Mode(name: .nogil, processes: 1, threadsPerProcess: threads, lock: .none)
        case .gil, .subinterpreters, .prefork:
            throw ModeError.notImplemented(name)
        }
    }
}

public enum ModeError: Error, CustomStringConvertible {
    case notImplemented(Mode.Name)

    public var description: String {
        switch self {
        case .notImplemented(let name):
            let implemented = Mode.Name.allCases.filter { (try? Mode.preset($0, threads: 1)) != nil }
            return "mode '\(name.rawValue)' is not implemented yet; implemented: "
                + implemented.map(\.rawValue).joined(separator: ", ")
        }
    }
}
