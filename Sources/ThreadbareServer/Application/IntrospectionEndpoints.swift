import ProcessInspection
import Prometheus
#if canImport(Glibc)
import Glibc
#endif

/// The server describing itself. These run on the loop thread: they never block and read only
/// counters, like nginx's stub_status.
enum IntrospectionEndpoints {
    static let health = Route.server(
        name: "health", pattern: .exact("/health"), methods: [.get],
        summary: "liveness: 200 ok"
    ) { _, _ throws(RequestError) in
        ok
    }

    /// Made once: the answer a load balancer asks for thousands of times a second.
    private static let ok = HTTPResponse.text("ok")

    static let index = Route.server(
        name: "index", pattern: .exact("/"), methods: [.get],
        summary: "this description"
    ) { _, context throws(RequestError) in
        let status = context.status
        let endpoints: [JSONValue] = status.routes.flatMap { route in
            route.methods.map { ["method": .string($0.rawValue), "path": .string(route.displayPath), "summary": .string(route.summary)] }
        }
        return .json([
            "name": "threadbare", "version": .string(ServerStatus.version), "mode": .string(status.mode.name),
            "spelled_out": .string(status.mode.spelledOut), "executor": .string(status.mode.executor.rawValue),
            "pid": .integer(Int(getpid())), "loops": .integer(status.loops), "threads": .integer(status.mode.threads),
            "endpoints": .array(endpoints),
        ])
    }

    static let stats = Route.server(
        name: "stats", pattern: .exact("/stats"), methods: [.get],
        summary: "requests by endpoint and status, in flight, queue depth, uptime, memory (RSS, Pss, shared and private dirty)",
        guarded: [.get]
    ) { _, context throws(RequestError) in
        let status = context.status
        let requests = status.accounting.countsByEndpoint().sorted { $0.key < $1.key }.map { endpoint, byStatus in
            (endpoint, JSONValue.object(byStatus.sorted { $0.key < $1.key }.map { ($0.key, .integer($0.value)) }))
        }
        return .json([
            "mode": .string(status.mode.name), "pid": .integer(Int(getpid())),
            "uptime_s": .number(status.uptimeSeconds), "rss_bytes": .integer(ProcessMemory.residentBytes()),
            "in_flight": .integer(status.counters.inFlight.current), "most_in_flight": .integer(status.counters.mostInFlight.current),
            "queue_depth": .integer(status.queueDepth()),
            "connections_open": .integer(status.counters.openConnections.current),
            "connections_total": .integer(status.counters.acceptedConnections.current),
            "connections_refused": .integer(status.counters.refusedConnections.current),
            "accept_pauses": .integer(status.counters.acceptPauses.current),
            "read_timeouts": .integer(status.counters.readTimeouts.current),
            "refused_framing": .object(status.counters.framingRefusals.sorted { $0.key.rawValue < $1.key.rawValue }
                .map { ($0.key.rawValue, .integer($0.value.current)) }),
            "log_lines_lost": .integer(LogFile.linesLost.load(ordering: .relaxed)),
            "request_timeouts": .integer(status.requestTimeouts.current),
            "handlers_past_deadline": .integer(max(0, status.requestTimeouts.current - status.lateHandlersDone.current)),
            "requests_total": .integer(status.accounting.total), "requests": .object(requests),
            "memory": memoryJSON(ProcessMemory.rollup()),
            "lock": lockJSON(status, interpreter: context.interpreter),
            "workers": status.seat.map { workersJSON($0, status) } ?? .null,
        ])
    }

    /// prefork: every worker on the master's scoreboard, whichever worker answers, and their
    /// sums. Other workers' connection counts are as of their last heartbeat (at most 1 s old). Pss divides each shared page among the processes sharing it, so its sum is what the
    /// workers really cost; the sum of RSS counts shared pages once per worker.
    private static func workersJSON(_ seat: ScoreboardSeat, _ status: ServerStatus) -> JSONValue {
        seat.publish(status)
        let workers = seat.scoreboard.workers()
        var requests = 0, connections = 0, resident = 0, proportional = 0, privateDirty = 0
        let each: [JSONValue] = workers.map { worker in
            let memory = ProcessMemory.rollup(of: String(worker.pid))
            requests += worker.requests
            connections += worker.connections
            resident += memory.resident
            proportional += memory.proportional
            privateDirty += memory.privateDirty
            return [
                "slot": .integer(worker.slot), "pid": .integer(Int(worker.pid)), "state": .string(worker.state.name),
                "requests": .integer(worker.requests), "connections": .integer(worker.connections),
                "rss_bytes": .integer(memory.resident), "pss_bytes": .integer(memory.proportional),
                "memory": memoryJSON(memory),
                "started_unix_s": .integer(worker.startedAt), "answered_this": .bool(worker.slot == seat.slot),
            ]
        }
        return [
            "count": .integer(workers.count), "requests": .integer(requests), "connections": .integer(connections),
            "rss_bytes": .integer(resident), "pss_bytes": .integer(proportional), "private_dirty_bytes": .integer(privateDirty),
            "each": .array(each),
        ]
    }

    private static func memoryJSON(_ memory: ProcessMemory.Rollup) -> JSONValue {
        ["rss_bytes": .integer(memory.resident), "pss_bytes": .integer(memory.proportional),
         "shared_clean_bytes": .integer(memory.sharedClean), "shared_dirty_bytes": .integer(memory.sharedDirty),
         "private_clean_bytes": .integer(memory.privateClean), "private_dirty_bytes": .integer(memory.privateDirty)]
    }

    /// The lock model and, per domain, what its lock did. Times in milliseconds.
    private static func lockJSON(_ status: ServerStatus, interpreter: InterpreterCost) -> JSONValue {
        func milliseconds(_ nanoseconds: UInt64) -> JSONValue { .number(Double(nanoseconds) / 1e6) }
        func summary(_ summary: LockStatistics.Summary) -> JSONValue {
            ["count": .integer(Int(summary.count)), "mean_ms": .number(summary.mean / 1e6), "p50_ms": milliseconds(summary.p50),
             "p99_ms": milliseconds(summary.p99), "max_ms": milliseconds(summary.max)]
        }
        let domains: [JSONValue] = status.domains.map { domain in
            let figures = domain.lock.statistics.snapshot()
            return [
                "domain": .integer(figures.domain), "threads": .integer(domain.pool.threadCount),
                "acquisitions": .integer(figures.acquisitions), "handovers": .integer(figures.handovers),
                "drop_requests": .integer(figures.dropRequests), "drops_honoured": .integer(figures.dropsHonoured),
                "most_holders": .integer(figures.mostHolders),
                // Handler code letting go of the lock itself (blocking calls, C extensions), and
                // the /cpu work units run holding it and without it.
                "releases": .integer(figures.releases), "released_ms": .number(Double(figures.releasedNanoseconds) / 1e6),
                "work_units": ["held": .integer(figures.heldUnits), "released": .integer(figures.releasedUnits)],
                "wait": summary(figures.wait), "hold": summary(figures.hold),
            ]
        }
        let interval = status.switchInterval.components
        let intervalMilliseconds = Double(interval.seconds) * 1e3 + Double(interval.attoseconds) / 1e15
        return [
            "model": .string(status.mode.lock.rawValue),
            "switch_interval_ms": status.mode.lock == .none ? .null : .number(intervalMilliseconds),
            // A free-threaded build's own cost: extra work in every unit of Python.
            "free_threading_overhead_percent": .number(interpreter.overheadPercent),
            // Whether a dispatcher thread takes the lock to hand requests over (and so shows in
            // the acquisitions), as gunicorn gthread's main thread does.
            "dispatch": status.domains.first?.dispatcher == nil ? "direct" : "locked",
            "domains": .array(domains),
        ]
    }

    static let metrics = Route.server(
        name: "metrics", pattern: .exact("/metrics"), methods: [.get],
        summary: "Prometheus text exposition: request counts and latency histograms",
        guarded: [.get]
    ) { _, context throws(RequestError) in
        let status = context.status
        let registry = status.metrics.registry
        // Gauges are sampled at scrape time rather than kept up to date on every request.
        var gauges: [(name: String, help: String, labels: [(String, String)], value: Int)] = [
            ("in_flight_requests", "Requests read and not yet fully answered", [], status.counters.inFlight.current),
            ("handler_queue_depth", "Requests waiting for a handler thread", [], status.queueDepth()),
            ("resident_memory_bytes", "Resident set size of this process", [], ProcessMemory.residentBytes()),
        ]
        for domain in status.domains {
            // Counted now where that waits on nothing; memcached's as last seen.
            let cache = domain.cache.blocksOnNetwork ? domain.cache.processStatistics : (try? domain.cache.statistics) ?? domain.cache.processStatistics
            let labels = [("domain", String(domain.index))]
            gauges.append(("cache_entries", "Entries in this domain's cache", labels, cache.entries))
            gauges.append(("cache_bytes", "Key plus value bytes in this domain's cache", labels, cache.bytes))
        }
        for gauge in gauges {
            registry.makeGauge(
                descriptor: MetricNameDescriptor(namespace: "threadbare", metricName: gauge.name, unitName: "", helpText: gauge.help),
                labels: gauge.labels
            ).set(Int64(gauge.value))
        }
        return HTTPResponse(
            status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: registry.emitToBuffer())
    }
}
