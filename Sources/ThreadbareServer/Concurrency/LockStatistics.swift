import CoreMetrics
import Histogram
import Synchronization

/// What one lock domain's lock did: how long threads waited in `acquire` and held the lock,
/// how often it changed hands, how often a waiter asked the holder to drop it (once per
/// holder, however many waiters time out) and how often a holder let go with such a request
/// pending.
///
/// `/stats` reads percentiles from HdrHistograms; `/metrics` gets the same figures through
/// swift-metrics timers and counters labelled with the domain.
public final class LockStatistics: Sendable {
    public let domain: Int

    private let acquisitions = Atomic<Int>(0)
    private let handovers = Atomic<Int>(0)
    private let dropRequests = Atomic<Int>(0)
    private let dropsHonoured = Atomic<Int>(0)
    /// Threads holding the lock right now, and the most there ever were: a lock that works
    /// keeps the second at 1, and with no lock it shows how many threads ran handler code at once.
    private let holders = Atomic<Int>(0)
    private let mostHolders = Atomic<Int>(0)
    /// Handler code's own releases (blocking calls, C extensions) and their time, and the work
    /// units run holding the lock and without it: what `/cpu?native=F` splits.
    private let releases = Atomic<Int>(0)
    private let releasedNanoseconds = Atomic<Int>(0)
    private let heldUnits = Atomic<Int>(0)
    private let releasedUnits = Atomic<Int>(0)
    /// How long the holder had held the lock when a waiter asked it to drop, at the least. The
    /// switch-number rule keeps this at a full interval or more for threads that only compute. Signed, because
    /// `Atomic<UInt64>.min` in Swift 6.3.1 compares as signed and never replaces `UInt64.max`.
    private let shortestTenureAtDropRequest = Atomic<Int>(.max)

    /// Longer waits and holds are counted as this long (one hour, in ns).
    private static let longest: UInt64 = 3_600_000_000_000
    private struct Distributions {
        var wait = Histogram<UInt64>(lowestDiscernibleValue: 1_000, highestTrackableValue: longest, numberOfSignificantValueDigits: .two)
        var hold = Histogram<UInt64>(lowestDiscernibleValue: 1_000, highestTrackableValue: longest, numberOfSignificantValueDigits: .two)
    }
    private let distributions = Locked(Distributions())

    private let waitTimer: CoreMetrics.Timer
    private let holdTimer: CoreMetrics.Timer
    private let handoverCounter: CoreMetrics.Counter
    private let dropRequestCounter: CoreMetrics.Counter
    private let dropHonouredCounter: CoreMetrics.Counter

    public init(domain: Int, metrics: MetricsExport) {
        self.domain = domain
        let dimensions = [("domain", String(domain))]
        let factory = metrics.factory
        waitTimer = CoreMetrics.Timer(label: "threadbare_lock_wait_seconds", dimensions: dimensions, factory: factory)
        holdTimer = CoreMetrics.Timer(label: "threadbare_lock_hold_seconds", dimensions: dimensions, factory: factory)
        handoverCounter = CoreMetrics.Counter(label: "threadbare_lock_handovers_total", dimensions: dimensions, factory: factory)
        dropRequestCounter = CoreMetrics.Counter(label: "threadbare_lock_drop_requests_total", dimensions: dimensions, factory: factory)
        dropHonouredCounter = CoreMetrics.Counter(label: "threadbare_lock_drops_honoured_total", dimensions: dimensions, factory: factory)
    }

    // MARK: Recording, by the lock

    /// A thread entered handler code (with no lock to take, only this is counted).
    func recordEntry() {
        acquisitions.add(1, ordering: .relaxed)
        mostHolders.max(holders.add(1, ordering: .relaxed).newValue, ordering: .relaxed)
    }

    func recordExit() {
        holders.subtract(1, ordering: .relaxed)
    }

    /// A thread took the lock after waiting `waited` ns; `handover` if it was not the last holder.
    func recordAcquisition(waited: UInt64, handover: Bool) {
        recordEntry()
        if handover {
            handovers.add(1, ordering: .relaxed)
            handoverCounter.increment()
        }
        distributions.withLock { _ = $0.wait.record(min(waited, Self.longest)) }
        waitTimer.recordNanoseconds(Int64(clamping: waited))
    }

    /// The holder is letting go after holding the lock `held` ns (called before it does).
    func recordRelease(held: UInt64) {
        recordExit()
        distributions.withLock { _ = $0.hold.record(min(held, Self.longest)) }
        holdTimer.recordNanoseconds(Int64(clamping: held))
    }

    /// Handler code let go of the lock for `nanoseconds` around a blocking call or C code.
    func recordReleased(nanoseconds: UInt64) {
        releases.add(1, ordering: .relaxed)
        releasedNanoseconds.add(Int(clamping: nanoseconds), ordering: .relaxed)
    }

    /// Work units run in Python (holding the lock) or in C with it released.
    func recordWork(heldUnits units: Int) {
        heldUnits.add(units, ordering: .relaxed)
    }

    func recordWork(releasedUnits units: Int) {
        releasedUnits.add(units, ordering: .relaxed)
    }

    func recordDropRequest(holderTenure: UInt64) {
        dropRequests.add(1, ordering: .relaxed)
        dropRequestCounter.increment()
        shortestTenureAtDropRequest.min(Int(clamping: holderTenure), ordering: .relaxed)
    }

    func recordDropHonoured() {
        dropsHonoured.add(1, ordering: .relaxed)
        dropHonouredCounter.increment()
    }

    // MARK: Reading

    public struct Snapshot: Sendable {
        public var domain: Int
        public var acquisitions: Int
        public var handovers: Int
        public var dropRequests: Int
        public var dropsHonoured: Int
        public var mostHolders: Int
        public var releases: Int
        public var releasedNanoseconds: Int
        public var heldUnits: Int
        public var releasedUnits: Int
        /// Nanoseconds; nil before the first drop request.
        public var shortestTenureAtDropRequest: UInt64?
        public var wait: Summary
        public var hold: Summary
    }

    /// Nanoseconds.
    public struct Summary: Sendable {
        public var count: UInt64
        public var mean: Double
        public var p50: UInt64
        public var p99: UInt64
        public var max: UInt64
    }

    public func snapshot() -> Snapshot {
        let (wait, hold) = distributions.withLock { (Self.summary($0.wait), Self.summary($0.hold)) }
        let tenure = shortestTenureAtDropRequest.load(ordering: .relaxed)
        return Snapshot(
            domain: domain, acquisitions: acquisitions.load(ordering: .relaxed),
            handovers: handovers.load(ordering: .relaxed), dropRequests: dropRequests.load(ordering: .relaxed),
            dropsHonoured: dropsHonoured.load(ordering: .relaxed), mostHolders: mostHolders.load(ordering: .relaxed),
            releases: releases.load(ordering: .relaxed), releasedNanoseconds: releasedNanoseconds.load(ordering: .relaxed),
            heldUnits: heldUnits.load(ordering: .relaxed), releasedUnits: releasedUnits.load(ordering: .relaxed),
            shortestTenureAtDropRequest: tenure == .max ? nil : UInt64(tenure), wait: wait, hold: hold)
    }

    private static func summary(_ histogram: Histogram<UInt64>) -> Summary {
        guard histogram.totalCount > 0 else { return Summary(count: 0, mean: 0, p50: 0, p99: 0, max: 0) }
        return Summary(
            count: histogram.totalCount, mean: histogram.mean, p50: histogram.valueAtPercentile(50),
            p99: histogram.valueAtPercentile(99), max: histogram.max)
    }
}
