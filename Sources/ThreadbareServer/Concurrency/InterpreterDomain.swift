/// One lock domain: a lock, the handler threads that take it, and the objects only they touch.
/// gil and nogil have one domain; subinterpreters has one per interpreter (PEP 684), and like
/// interpreters the domains share no objects: each has its own cache.
public final class InterpreterDomain: Sendable {
    public let index: Int
    public let lock: any InterpreterLock
    public let cache: any CacheBackend
    let pool: HandlerPool
    /// `dispatch: locked`: the thread that hands this domain's requests to its pool.
    let dispatcher: LockedDispatcher?

    init(index: Int, lock: any InterpreterLock, cache: any CacheBackend, pool: HandlerPool, dispatcher: LockedDispatcher? = nil) {
        self.index = index
        self.lock = lock
        self.cache = cache
        self.pool = pool
        self.dispatcher = dispatcher
    }

    /// Makes the `mode.interpreters` domains of a process, splitting its threads among them as
    /// evenly as they go: handler threads, or with `executor: loop` each domain's
    /// `run_in_executor` pool, started on its first job. `cache` gives domain N its cache.
    static func make(
        mode: Mode, switchInterval: Duration, queueLimit: Int, lockedDispatch: Bool = false,
        cache: (Int) throws -> any CacheBackend, metrics: MetricsExport
    ) throws -> [InterpreterDomain] {
        let count = mode.interpreters
        return try (0..<count).map { index in
            let statistics = LockStatistics(domain: index, metrics: metrics)
            let lock: any InterpreterLock = switch mode.lock {
            case .none: NoInterpreterLock(statistics: statistics)
            case .global, .perInterpreter: GlobalInterpreterLock(switchInterval: switchInterval, statistics: statistics)
            }
            let threads = max(1, mode.threads / count + (index < mode.threads % count ? 1 : 0))
            let role = mode.executor == .loop ? "offload" : "handler"
            let prefix = count > 1 ? "tb-i\(index)-" : "tb-"
            return InterpreterDomain(
                index: index, lock: lock,
                cache: try cache(index),
                pool: try HandlerPool(threads: threads, queueLimit: queueLimit, name: prefix + role, startingOnFirstJob: mode.executor == .loop),
                dispatcher: lockedDispatch ? try LockedDispatcher(lock: lock, name: prefix + "dispatch") : nil)
        }
    }
}
