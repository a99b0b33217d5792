import Histogram

/// What one thread measured, or the merge of all of them. Latencies are in microseconds, in
/// HdrHistograms with three significant digits; a value beyond an hour is counted as an hour,
/// never dropped.
public struct Results: Sendable {
    public static let longestMicroseconds: UInt64 = 3_600_000_000

    /// In the open model, from each request's intended send time (corrected for coordinated
    /// omission); in the closed model, from its send.
    public var latency = Results.histogram()
    /// Open model only: from the actual send, as an uncorrected tool would report.
    public var uncorrected = Results.histogram()
    /// Open model: requests that could not be sent at their intended time for want of a free
    /// connection (sent later, their wait counted in `latency`).
    public var lateSends = 0
    public var completed = 0
    /// Errors by kind: connect, read, write, timeout, bad_response, and "status_NNN" for
    /// non-2xx answers (which are also latency samples: the server did answer).
    public var errors: [String: Int] = [:]
    /// Server-Timing metrics by name (queue, lock, app, …), in microseconds.
    public var serverTiming: [String: Histogram<UInt64>] = [:]
    /// Requests sent but not answered when the run ended; neither completed nor errors.
    public var inFlightAtEnd = 0
    /// Open model: of those, the requests still waiting for a free connection, never sent:
    /// the schedule, not the server, held them.
    public var backlogAtEnd = 0
    /// What the first error of a kind said, where there is more to say than its kind (a TLS
    /// failure's reason).
    public var errorReasons: [String: String] = [:]
    /// https: handshakes finished after the warm-up, and how many of them resumed a session.
    public var tlsHandshakes = 0
    public var tlsResumed = 0

    public init() {}

    static func histogram() -> Histogram<UInt64> {
        Histogram(lowestDiscernibleValue: 1, highestTrackableValue: longestMicroseconds, numberOfSignificantValueDigits: .three)
    }

    /// One answered request: its status (non-2xx also counts as an error of its kind), its
    /// latencies in microseconds, and the server's own timings from its Server-Timing header.
    mutating func record(status: Int, latency: UInt64, uncorrected: UInt64?, serverTiming: [UInt8]) {
        completed += 1
        recordLatency(latency)
        if let uncorrected { recordUncorrected(uncorrected) }
        if let kind = Self.errorKind(status: status) { count(error: kind) }
        if !serverTiming.isEmpty {
            serverTiming.withUnsafeBytes { header in
                ServerTiming.forEachDuration(in: header) { name, milliseconds in
                    recordServerTiming(String(decoding: name, as: UTF8.self), milliseconds: milliseconds)
                }
            }
        }
    }

    /// The error names of the statuses, made once rather than per answer.
    private static let statusKinds = Dictionary(uniqueKeysWithValues: (100...599).map { ($0, "status_\($0)") })

    /// The error kind of an answer's status: nil for 2xx, else `status_NNN`.
    static func errorKind(status: Int) -> String? {
        (200..<300).contains(status) ? nil : statusKinds[status] ?? "status_\(status)"
    }

    mutating func recordLatency(_ microseconds: UInt64) {
        latency.record(min(microseconds, Self.longestMicroseconds))
    }

    mutating func recordUncorrected(_ microseconds: UInt64) {
        uncorrected.record(min(microseconds, Self.longestMicroseconds))
    }

    mutating func recordServerTiming(_ name: String, milliseconds: Double) {
        guard milliseconds.isFinite, milliseconds >= 0 else { return }
        // Clamped before the conversion: a server may send any number.
        let microseconds = UInt64(min((milliseconds * 1000).rounded(), Double(Self.longestMicroseconds)))
        serverTiming[name, default: Self.histogram()].record(microseconds)
    }

    mutating func count(error kind: String) {
        errors[kind, default: 0] += 1
    }

    public var errorTotal: Int { errors.values.reduce(0, +) }

    /// Adds another thread's results to these.
    public mutating func merge(_ other: Results) {
        latency.add(other.latency)
        uncorrected.add(other.uncorrected)
        lateSends += other.lateSends
        completed += other.completed
        inFlightAtEnd += other.inFlightAtEnd
        backlogAtEnd += other.backlogAtEnd
        errors.merge(other.errors, uniquingKeysWith: +)
        errorReasons.merge(other.errorReasons) { mine, _ in mine }
        tlsHandshakes += other.tlsHandshakes
        tlsResumed += other.tlsResumed
        for (name, histogram) in other.serverTiming {
            serverTiming[name, default: Self.histogram()].add(histogram)
        }
    }
}
