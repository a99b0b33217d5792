import Foundation
import Histogram
import Synchronization

/// What one interval of a run measured (one thread's, or all threads' merged), per endpoint:
/// a stall, a reload or a worker's crash shows here as a moment, where the whole run's
/// percentiles smear it out.
public struct IntervalSlice: Sendable {
    /// From 0, counted from the end of the warm-up.
    public var index: Int
    public var endpoints: [IntervalCounts]

    init(index: Int, endpoints: Int, openModel: Bool) {
        self.index = index
        self.endpoints = (0..<endpoints).map { _ in IntervalCounts(openModel: openModel) }
    }

    public init(index: Int, endpoints: [IntervalCounts]) {
        self.index = index
        self.endpoints = endpoints
    }

    public var total: IntervalCounts {
        var total = IntervalCounts(openModel: endpoints.first?.uncorrected != nil)
        for endpoint in endpoints { total.merge(endpoint) }
        return total
    }

    mutating func merge(_ other: IntervalSlice) {
        for index in endpoints.indices where index < other.endpoints.count { endpoints[index].merge(other.endpoints[index]) }
    }
}

/// One endpoint's answers and errors in one interval.
public struct IntervalCounts: Sendable {
    /// Corrected in the open model, as the run's own latency is.
    public var latency = Results.histogram()
    /// Open model only: from the actual send.
    public var uncorrected: Histogram<UInt64>?
    public var completed = 0
    public var errors: [String: Int] = [:]

    public init(openModel: Bool) {
        uncorrected = openModel ? Results.histogram() : nil
    }

    public var errorTotal: Int { errors.values.reduce(0, +) }

    public mutating func merge(_ other: IntervalCounts) {
        latency.add(other.latency)
        if let theirs = other.uncorrected {
            if uncorrected == nil { uncorrected = Results.histogram() }
            uncorrected!.add(theirs)
        }
        completed += other.completed
        errors.merge(other.errors, uniquingKeysWith: +)
    }
}

/// One interval as `--json` shows it: its start (seconds after the warm-up), length, answers,
/// errors and latency.
public struct IntervalSummary: Codable, Sendable, Equatable {
    public var startS: Double
    public var lengthS: Double
    public var requests: Int
    public var errors: Int
    public var p50Ms: Double
    public var p99Ms: Double
    public var maxMs: Double

    enum CodingKeys: String, CodingKey {
        case startS = "start_s", lengthS = "length_s", requests, errors
        case p50Ms = "p50_ms", p99Ms = "p99_ms", maxMs = "max_ms"
    }

    public init(_ slice: IntervalSlice, start: Double, length: Double) {
        let total = slice.total
        startS = start
        lengthS = length
        requests = total.completed
        errors = total.errorTotal
        let latency = Report.Percentiles(total.latency)
        p50Ms = latency.p50
        p99Ms = latency.p99
        maxMs = latency.max
    }
}

/// A run's intervals: where each begins and how long it is. The last may be shorter, when the
/// run's duration is not a whole number of them.
public struct IntervalClock: Sendable {
    public let length: Double
    public let duration: Double

    public init(length: Double, duration: Double) {
        self.length = length
        self.duration = duration
    }

    /// A hair under a whole number of intervals is that number: 10 s in 1 s intervals is 10, not 11.
    public var count: Int { max(1, Int((duration / length - 1e-9).rounded(.up))) }

    public func start(_ index: Int) -> Double { Double(index) * length }

    public func length(_ index: Int) -> Double { min(length, duration - start(index)) }

    /// The interval of a moment `elapsed` seconds after the warm-up.
    func index(nanoseconds elapsed: UInt64) -> Int {
        min(count - 1, Int(Double(elapsed) / 1e9 / length))
    }
}

/// A load thread's side of the intervals: what it measured in the current one, handed to the
/// run's thread (through `outbox`) as each ends, so a long run holds a few intervals, not all.
final class IntervalRecorder: @unchecked Sendable {
    private let clock: IntervalClock
    private let origin: UInt64
    private let endpoints: Int
    private let openModel: Bool
    private var current: IntervalSlice
    /// The moment (monotonic ns) the current interval ends.
    private var currentEnd: UInt64

    /// The ended intervals not yet taken, and the highest index this thread will not write
    /// to again (-1 before the first ends; `Int.max` once the run has ended).
    let outbox = Mutex<(slices: [IntervalSlice], through: Int)>(([], -1))

    init(clock: IntervalClock, origin: UInt64, endpoints: Int, openModel: Bool) {
        self.clock = clock
        self.origin = origin
        self.endpoints = endpoints
        self.openModel = openModel
        current = IntervalSlice(index: 0, endpoints: endpoints, openModel: openModel)
        currentEnd = origin + UInt64(clock.length(0) * 1e9)
    }

    /// When the next interval begins: the thread's timer hands the current one on then,
    /// answers or not.
    var nextBoundary: UInt64 { currentEnd }

    func answered(endpoint: Int, status: Int, latency: UInt64, uncorrected: UInt64?, at now: UInt64) {
        roll(to: now)
        current.endpoints[endpoint].completed += 1
        current.endpoints[endpoint].latency.record(min(latency, Results.longestMicroseconds))
        if let uncorrected { current.endpoints[endpoint].uncorrected?.record(min(uncorrected, Results.longestMicroseconds)) }
        if let kind = Results.errorKind(status: status) { current.endpoints[endpoint].errors[kind, default: 0] += 1 }
    }

    func failed(endpoint: Int, kind: String, at now: UInt64) {
        roll(to: now)
        current.endpoints[endpoint].errors[kind, default: 0] += 1
    }

    /// Hands on every interval that has ended by `now`.
    func roll(to now: UInt64) {
        guard now >= currentEnd else { return }
        let index = clock.index(nanoseconds: now - origin)
        guard index > current.index else { return }
        let ended = current
        current = IntervalSlice(index: index, endpoints: endpoints, openModel: openModel)
        currentEnd = origin + UInt64((clock.start(index) + clock.length(index)) * 1e9)
        outbox.withLock {
            $0.slices.append(ended)
            $0.through = index - 1
        }
    }

    /// The run has ended: the last interval goes too.
    func finish() {
        let last = current
        outbox.withLock {
            $0.slices.append(last)
            $0.through = Int.max
        }
    }
}

/// The run's thread's side: merges the threads' slices of each interval and hands on an
/// interval once every thread has moved past it, in order.
final class IntervalCollector {
    private let recorders: [IntervalRecorder]
    private var pending: [Int: IntervalSlice] = [:]
    private var nextIndex = 0
    private let clock: IntervalClock
    private let endpoints: Int
    private let openModel: Bool

    init(recorders: [IntervalRecorder], clock: IntervalClock, endpoints: Int, openModel: Bool) {
        self.recorders = recorders
        self.clock = clock
        self.endpoints = endpoints
        self.openModel = openModel
    }

    /// The intervals that are now whole, in order.
    func collect() -> [IntervalSlice] {
        var through = Int.max
        for recorder in recorders {
            let (slices, done) = recorder.outbox.withLock { outbox in
                defer { outbox.slices.removeAll() }
                return (outbox.slices, outbox.through)
            }
            for slice in slices { pending[slice.index, default: IntervalSlice(index: slice.index, endpoints: endpoints, openModel: openModel)].merge(slice) }
            through = min(through, done)
        }
        var whole: [IntervalSlice] = []
        while nextIndex < clock.count && nextIndex <= through {
            // An interval no thread measured anything in is still an interval: an empty one.
            whole.append(pending.removeValue(forKey: nextIndex) ?? IntervalSlice(index: nextIndex, endpoints: endpoints, openModel: openModel))
            nextIndex += 1
        }
        return whole
    }
}
