#if canImport(Glibc)
import Glibc
#endif

/// Everything a deployment can set. The defaults serve with no config file at all.
public struct ServerConfiguration: Sendable, Equatable {
    /// The `mode` key: a preset that fills in the axes below which are not set themselves.
    public var mode: Mode.Preset?
    /// The axes of the mode (see `Mode`); the defaults are nogil's.
    public var master = false
    public var executor: ExecutorModel = .threads
    public var lock: LockModel = .none
    public var host = "127.0.0.1"
    public var port = 8080
    public var loops = 1
    public var threads = 8
    /// How requests reach the handler threads; the loader fills it in from the mode.
    public var dispatch: DispatchModel = .direct
    public var switchIntervalMilliseconds = 5.0
    /// lock none: how much slower a free-threaded build runs single-threaded Python than a GIL
    /// build, in percent of each work unit. The loader sets it from the lock unless it is set.
    public var freeThreadingOverheadPercent = ConfigurationKey.freeThreading314t
    public var interpreters = 2
    /// Worker processes under a master; the loader makes it the machine's cores when `master`
    /// is true and nothing set it.
    public var workers = 1
    /// prefork: `shared` (one listening socket every worker accepts on) or `reuseport` (a
    /// SO_REUSEPORT socket per worker, the kernel spreading connections).
    public var accept = "reuseport"
    /// prefork: seconds a worker's loop may go without a heartbeat before it is replaced.
    public var workerTimeout = 30.0
    /// prefork: a worker retires after this many requests (0: never), plus a random 0...jitter
    /// of its own so the workers do not all retire at once.
    public var maxRequests = 0
    public var maxRequestsJitter = 0
    /// prefork: a worker whose resident memory passes this many MiB retires (0: never).
    public var maxRSSMegabytes = 0
    public var queueLimit = 1024
    public var backlog = 2048
    public var maxConnections = 1000
    /// False: every response closes its connection (gunicorn's sync worker, nginx's
    /// `keepalive_timeout 0`).
    public var keepAlive = true
    /// False: a process holds no more connections than it has handler threads and accepts the
    /// next only when one closes, so a new connection waits in the listen backlog for whichever
    /// process is free (gunicorn's sync worker, which accepts only when idle).
    public var acceptWhileBusy = true
    /// Seconds a handler thread has to answer; 0 for no limit.
    public var requestTimeout = 30.0
    /// Seconds a request has to arrive whole, from its first byte; 0 for no limit.
    public var requestReadTimeout = 60.0
    public var gracefulTimeout = 30.0
    public var timeout = 30.0
    public var logLevel = "info"
    /// Where logs go: a file path, or `-` for stderr.
    public var logFile = "-"
    /// The whole head, as nginx's four 8 KiB header buffers allow; the parts' limits are gunicorn's.
    public var maxHeaderBytes = 32 * 1024
    public var requestLineBytes = 4094
    public var requestFields = 100
    public var requestFieldBytes = 8190
    public var maxBodyBytes = 1024 * 1024
    public var ioMaxMilliseconds = 10_000
    public var cpuMaxWork = 1_000_000
    /// When set, PUT and DELETE on /cache/{key} and GET /stats and /metrics need
    /// `Authorization: Bearer <token>`.
    public var authToken = ""
    public var cacheBackend = "local"
    public var cacheMaxEntries = 10_000
    public var cacheMaxBytes = 64 * 1024 * 1024
    /// Entries made at start (before the fork in prefork), and each one's value bytes.
    /// memcached: where it listens, connections per process, and how long an operation may take.
    public var cacheMemcachedServers = ["127.0.0.1:11211"]
    public var cacheMemcachedConnections = 4
    public var cacheMemcachedTimeoutMilliseconds = 500
    public var cachePreload = 0
    public var cachePreloadBytes = 1024
    /// What a read of a cache entry writes into it; the loader sets it from the lock unless
    /// it is set: atomic with lock none, plain with a lock.
    public var cacheRefcount: ReferenceCounting = .atomic

    public init() {}

    public static var onlineCores: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    public var limits: HTTPLimits {
        HTTPLimits(maxHeaderBytes: maxHeaderBytes,
                   head: RequestHeadLimits(requestLineBytes: requestLineBytes, fields: requestFields, fieldBytes: requestFieldBytes),
                   maxBodyBytes: maxBodyBytes, maxConnections: maxConnections,
                   keepAlive: keepAlive, acceptsUpTo: acceptWhileBusy ? nil : threads,
                   requestTimeoutSeconds: requestTimeout, requestReadTimeoutSeconds: requestReadTimeout, timeoutSeconds: timeout)
    }

    public var endpointLimits: EndpointLimits {
        EndpointLimits(ioMaxMilliseconds: ioMaxMilliseconds, cpuMaxWork: cpuMaxWork)
    }

    public var interpreterCost: InterpreterCost { InterpreterCost(overheadPercent: freeThreadingOverheadPercent) }

    public var switchInterval: Duration { .nanoseconds(Int64((switchIntervalMilliseconds * 1e6).rounded())) }

    /// A cache as `cache.*` describes it, with the preloaded entries put in unless `preloading`
    /// is false (a prefork master did it before forking).
    public func makeCache(preloading: Bool = true) throws -> any CacheBackend {
        switch cacheBackend {
        case "shm", "memcached":
            let cache: any CacheBackend = cacheBackend == "shm"
                ? try SharedMemoryCache(maxEntries: cacheMaxEntries, maxBytes: cacheMaxBytes, counting: cacheRefcount)
                : try MemcachedCache(servers: cacheMemcachedServers, connections: cacheMemcachedConnections,
                                     timeoutMilliseconds: cacheMemcachedTimeoutMilliseconds)
            if preloading { try CachePreload.fill(cache, entries: cachePreload, valueBytes: cachePreloadBytes) }
            return cache
        default:
            let startup = preloading && cachePreload > 0 ? StartupData(entries: cachePreload, valueBytes: cachePreloadBytes) : nil
            return ShardedCache(maxEntries: cacheMaxEntries, maxBytes: cacheMaxBytes, counting: cacheRefcount, startup: startup)
        }
    }

    /// What a prefork master makes before it forks, for its workers to inherit: the shm
    /// segment, or a preloaded local cache whose pages the workers then share copy-on-write,
    /// like gunicorn's `--preload`. nil: each worker makes its own. The master preloads
    /// memcached through connections of its own, closed before any fork, so no worker shares
    /// a socket with another.
    public func makeCacheBeforeFork() throws -> (any CacheBackend)? {
        switch cacheBackend {
        case "shm":
            return try makeCache()
        case "memcached":
            if cachePreload > 0 { _ = try makeCache() }
            return nil
        default:
            return cachePreload > 0 ? try makeCache() : nil
        }
    }

    /// The mode these keys spell; `interpreters` counts only with `lock: per-interpreter`.
    public func makeMode() throws(ModeError) -> Mode {
        try Mode(supervised: master, workers: workers, executor: executor, lock: lock,
                 interpreters: lock == .perInterpreter ? interpreters : 1, threads: threads, loops: loops).validated()
    }
}
