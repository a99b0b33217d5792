import Foundation

/// Interval logs written at the same time by loadtest on several machines, as one run: the
/// histograms added bucket by bucket (so every percentile is exact, not an average of
/// percentiles), the intervals lined up by their wall-clock start, the rates, connections and
/// threads summed.
public enum LogMerge {
    public struct Merged: Sendable {
        public var plan: LoadPlan
        public var summary: LoadRun.Summary
        public var sources: Int
    }

    public static func merge(_ logs: [IntervalLog.Contents]) throws(LoadError) -> Merged {
        guard let first = logs.first else { throw LoadError("give at least one interval log") }
        for log in logs.dropFirst() {
            guard log.run.model == first.run.model else {
                throw LoadError("\(log.path) is an \(log.run.model)-model run and \(first.path) a \(first.run.model)-model one: their latencies mean different things")
            }
            guard abs(log.run.intervalS - first.run.intervalS) < 1e-9 else {
                throw LoadError("\(log.path) has \(log.run.intervalS) s intervals and \(first.path) \(first.run.intervalS) s: intervals must match to line up")
            }
        }
        let openModel = first.run.model == "open"
        let length = first.run.intervalS
        // Endpoints by tag, in the order they first appear.
        var entries: [IntervalLog.Run.EndpointEntry] = []
        for log in logs {
            for entry in log.run.endpoints where !entries.contains(where: { $0.tag == entry.tag }) { entries.append(entry) }
        }
        let start = logs.map(\.startTime).min()!
        let end = logs.map { $0.startTime + $0.run.durationS }.max()!
        let longest = logs.map(\.run.durationS).max()!
        guard end - start <= 2 * longest + 60 else {
            throw LoadError("these logs were not written at the same time: they span \(Comparison.format(end - start)) s, and the longest run is \(Comparison.format(longest)) s")
        }
        let duration = ((end - start) * 1000).rounded() / 1000
        var results = entries.map { _ in Results() }
        var slices: [Int: IntervalSlice] = [:]
        for log in logs {
            let map = log.run.endpoints.map { entry in entries.firstIndex { $0.tag == entry.tag }! }
            for interval in log.intervals {
                let index = max(0, Int(((interval.start - start) / length).rounded()))
                for (own, counts) in interval.slice.endpoints.enumerated() {
                    let merged = map[own]
                    slices[index, default: IntervalSlice(index: index, endpoints: entries.count, openModel: openModel)].endpoints[merged].merge(counts)
                    results[merged].latency.add(counts.latency)
                    if let uncorrected = counts.uncorrected { results[merged].uncorrected.add(uncorrected) }
                    results[merged].completed += counts.completed
                    results[merged].errors.merge(counts.errors, uniquingKeysWith: +)
                }
            }
            for (own, merged) in map.enumerated() {
                results[merged].inFlightAtEnd += log.inFlightAtEnd[safe: own] ?? 0
                results[merged].lateSends += log.lateSends[safe: own] ?? 0
            }
        }
        let clock = IntervalClock(length: length, duration: duration)
        // As many as the logs hold: clocks a few milliseconds apart add to the span, not an interval.
        let intervals = (0..<((slices.keys.max() ?? -1) + 1)).map { index in
            IntervalSummary(slices[index] ?? IntervalSlice(index: index, endpoints: entries.count, openModel: openModel),
                            start: clock.start(index), length: clock.length(index))
        }
        let endpoints = try entries.map { entry throws(LoadError) in
            var endpoint: Endpoint
            do { endpoint = Endpoint(target: try Target(url: entry.url), name: entry.name) } catch { throw LoadError("\(entry.url): \(error)") }
            endpoint.method = entry.method
            endpoint.weight = entry.weight
            endpoint.keys = entry.keys.map { KeySpace(count: $0, zipfExponent: entry.zipf ?? 0) }
            return endpoint
        }
        var plan = try LoadPlan(endpoints: endpoints, connections: logs.reduce(0) { $0 + $1.run.connections },
                                threads: logs.reduce(0) { $0 + $1.run.threads }, duration: duration)
        plan.rate = openModel ? logs.reduce(0) { $0 + ($1.run.rate ?? 0) } : nil
        plan.interval = length
        return Merged(plan: plan, summary: LoadRun.Summary(endpoints: results, duration: duration, intervals: intervals, startedAt: start),
                      sources: logs.count)
    }
}

extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
