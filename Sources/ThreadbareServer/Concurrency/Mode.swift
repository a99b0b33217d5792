/// What a thread must hold to run handler code.
public enum LockModel: String, Sendable, CaseIterable {
    /// Free threads, as in CPython 3.13t: shared state is safe without a global lock.
    case none
    /// One lock for the whole process: CPython's GIL.
    case global
    /// One lock per interpreter (PEP 684).
    case perInterpreter = "per-interpreter"
}

/// Which thread runs a request's handler code.
public enum ExecutorModel: String, Sendable, CaseIterable {
    /// A pool of handler threads behind a bounded queue: a threaded WSGI server (gunicorn's
    /// gthread worker, waitress).
    case threads
    /// The event-loop thread that read the request, as asyncio runs a coroutine: waiting holds
    /// no thread, computing holds the loop. The pool then serves `run_in_executor` only.
    case loop
}

/// How a deployment uses the machine's cores: worker processes × executor × lock. The server is
/// written once; `gil`, `prefork`, `async` and the rest are presets of this value.
public struct Mode: Sendable, Equatable {
    /// A prefork master supervising `workers` processes; without one, this process serves.
    public var supervised: Bool
    public var workers: Int
    public var executor: ExecutorModel
    public var lock: LockModel
    /// Lock domains per process: one lock (or none) and one cache each.
    public var interpreters: Int
    /// Handler threads per process (`threads`), or `run_in_executor`'s pool (`loop`).
    public var threads: Int
    /// Event-loop threads per process.
    public var loops: Int

    /// The named shapes, as a Python service would be deployed.
    public enum Preset: String, Sendable, CaseIterable {
        case nogil, gil, subinterpreters, prefork
        case async
        case preforkAsync = "prefork-async"
        case nogilAsync = "nogil-async"

        public var supervised: Bool { self == .prefork || self == .preforkAsync }

        public var executor: ExecutorModel {
            switch self {
            case .async, .preforkAsync, .nogilAsync: .loop
            case .nogil, .gil, .subinterpreters, .prefork: .threads
            }
        }

        public var lock: LockModel {
            switch self {
            case .nogil, .nogilAsync: .none
            case .gil, .prefork, .async, .preforkAsync: .global
            case .subinterpreters: .perInterpreter
            }
        }

        /// What the preset stands for, for `GET /` and the logs.
        public var summary: String {
            switch self {
            case .nogil: "free handler threads, no global lock (CPython 3.13t)"
            case .gil: "handler threads behind one global lock (CPython's GIL)"
            case .subinterpreters: "K lock domains in one process (PEP 684)"
            case .prefork: "a master and N worker processes, each with its own GIL (gunicorn)"
            case .async: "one asyncio event loop runs the handlers (uvicorn)"
            case .preforkAsync: "a master and N workers, each one event loop (gunicorn with uvicorn workers)"
            case .nogilAsync: "an event loop per thread, no global lock (granian on 3.14t)"
            }
        }
    }

    /// The preset this value is, if any.
    public var preset: Preset? {
        Preset.allCases.first { $0.supervised == supervised && $0.executor == executor && $0.lock == lock }
    }

    /// The preset's name, or `custom` for a combination no preset names (prefork of free threads).
    public var name: String { preset?.rawValue ?? "custom" }

    /// The value spelled out: `2 workers × loop × global`.
    public var spelledOut: String {
        "\(supervised ? "\(workers) worker\(workers == 1 ? "" : "s")" : "1 process") × \(executor.rawValue) × \(lock.rawValue)"
            + (lock == .perInterpreter ? " (\(interpreters) interpreters)" : "")
    }

    public init(supervised: Bool = false, workers: Int = 1, executor: ExecutorModel = .threads, lock: LockModel = .none,
                interpreters: Int = 1, threads: Int = 8, loops: Int = 1) {
        self.supervised = supervised
        self.workers = workers
        self.executor = executor
        self.lock = lock
        self.interpreters = interpreters
        self.threads = threads
        self.loops = loops
    }

    /// Refuses a combination that cannot run, naming the keys that clash.
    public func validated() throws(ModeError) -> Mode {
        if workers > 1 && !supervised {
            throw ModeError("workers: \(workers) needs master: true (a prefork master supervises worker processes); workers: 1 serves from one process")
        }
        if lock != .perInterpreter && interpreters > 1 {
            throw ModeError("interpreters: \(interpreters) needs lock: per-interpreter; with lock: \(lock.rawValue) there are no interpreters to split into")
        }
        if lock == .perInterpreter {
            switch executor {
            case .threads where threads < interpreters:
                throw ModeError("lock: per-interpreter with executor: threads needs at least one handler thread per interpreter: threads \(threads) < interpreters \(interpreters)")
            case .loop where loops != interpreters:
                throw ModeError("lock: per-interpreter with executor: loop runs one interpreter per loop thread: loops \(loops) must equal interpreters \(interpreters)")
            default: break
            }
        }
        return self
    }
}

/// A combination of settings no mode can run with.
public struct ModeError: Error, CustomStringConvertible {
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}
