import Foundation
import Histogram

/// A run as an HdrHistogram interval log (.hlog, the format of HdrHistogram's
/// HistogramLogWriter): one compressed histogram per interval, read by HdrHistogram's own
/// tools. Values are latencies in microseconds; each line's Interval_Max is in milliseconds.
///
/// The untagged histograms are the whole run's (corrected in the open model), `Tag=uncorrected`
/// the whole run's from the actual send, and each endpoint has its tag (`Tag=NAME`,
/// `Tag=NAME|uncorrected`). What a histogram cannot hold, loadtest keeps in comment lines that
/// HdrHistogram's readers skip: the run (`#[Loadtest: {…}]`), each interval's errors
/// (`#[Errors: {…}]`) and the end (`#[Loadtest end: {…}]`), so `loadtest merge` can rebuild
/// the whole report from logs written on several machines.
public enum IntervalLog {
    static let legend = "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
    static let uncorrectedTag = "uncorrected"

    /// The run a log describes.
    public struct Run: Codable, Sendable {
        public struct EndpointEntry: Codable, Sendable {
            public var name: String
            public var url: String
            public var method: String
            public var weight: Int
            public var tag: String
            /// What `{key}` in the URL stood for, so a merge knows the endpoint as it ran.
            public var keys: Int?
            public var zipf: Double?
        }

        public var model: String
        public var rate: Double?
        public var connections: Int
        public var threads: Int
        public var durationS: Double
        public var intervalS: Double
        public var endpoints: [EndpointEntry]

        enum CodingKeys: String, CodingKey {
            case model, rate, connections, threads, endpoints
            case durationS = "duration_s", intervalS = "interval_s"
        }

        init(_ plan: LoadPlan) {
            model = plan.rate == nil ? "closed" : "open"
            rate = plan.rate
            connections = plan.connections
            threads = plan.effectiveThreads
            durationS = plan.duration
            intervalS = plan.interval
            var tags = Set<String>()
            endpoints = plan.endpoints.map { endpoint in
                // A tag ends at the first comma, and the reader splits on whitespace: neither may be in it.
                var tag = String(endpoint.target.pathAndQuery.map { $0 == "," || $0.isWhitespace ? "_" : $0 })
                if endpoint.method != "GET" { tag = endpoint.method + ":" + tag }
                let base = tag
                var suffix = 2
                while !tags.insert(tag).inserted {
                    tag = "\(base)#\(suffix)"
                    suffix += 1
                }
                return EndpointEntry(name: endpoint.name, url: endpoint.target.origin + endpoint.target.pathAndQuery,
                                     method: endpoint.method, weight: endpoint.weight, tag: tag,
                                     keys: endpoint.keys?.count, zipf: endpoint.keys?.zipfExponent)
            }
        }
    }

    /// What a log's end says: what no interval holds.
    struct End: Codable {
        var inFlightAtEnd: [Int]
        var lateSends: [Int]

        enum CodingKeys: String, CodingKey {
            case inFlightAtEnd = "in_flight_at_end", lateSends = "late_sends"
        }
    }

    struct IntervalErrors: Codable {
        var start: Double
        /// The endpoint's index in the run's list.
        var endpoint: Int
        var errors: [String: Int]
    }

    /// Writes a log as the run goes, an interval at a time.
    public final class Writer {
        private let handle: FileHandle
        private let run: Run
        private let clock: IntervalClock
        private var headerWritten = false
        public let path: String

        /// Creates (or empties) the file at `path`, before the run, so that a path that cannot
        /// be written is an error before anything runs.
        public init(path: String, plan: LoadPlan) throws(LoadError) {
            guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
                throw LoadError("--interval-log: cannot write \(path)")
            }
            self.path = path
            self.handle = handle
            run = Run(plan)
            clock = plan.intervalClock
        }

        /// `startedAt`: when measuring began, in seconds since the epoch.
        private func writeHeader(startedAt: Double) {
            guard !headerWritten else { return }
            headerWritten = true
            let formatter = ISO8601DateFormatter()
            formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
            let date = formatter.string(from: Date(timeIntervalSince1970: startedAt))
            write([
                "#[Histogram log format version 1.3]",
                String(format: "#[StartTime: %.3f (seconds since epoch), %@]", startedAt, date),
                String(format: "#[BaseTime: %.3f (seconds since epoch)]", startedAt),
                "#[Loadtest: \(IntervalLog.json(run))]",
                "#[Values are latencies in microseconds; Interval_Max is in milliseconds]",
                IntervalLog.legend,
            ])
        }

        public func write(_ slice: IntervalSlice, startedAt: Double) {
            writeHeader(startedAt: startedAt)
            let start = clock.start(slice.index), length = clock.length(slice.index)
            var lines: [String] = []
            func line(_ tag: String?, _ histogram: Histogram<UInt64>) {
                let max = histogram.totalCount > 0 ? Double(histogram.max) / 1000 : 0
                lines.append((tag.map { "Tag=\($0)," } ?? "") + String(format: "%.3f,%.3f,%.3f,", start, length, max) + HistogramCodec.base64(histogram))
            }
            let total = slice.total
            line(nil, total.latency)
            if let uncorrected = total.uncorrected { line(IntervalLog.uncorrectedTag, uncorrected) }
            for (index, (counts, entry)) in zip(slice.endpoints, run.endpoints).enumerated() {
                line(entry.tag, counts.latency)
                if let uncorrected = counts.uncorrected { line(entry.tag + "|" + IntervalLog.uncorrectedTag, uncorrected) }
                if !counts.errors.isEmpty {
                    lines.append("#[Errors: \(IntervalLog.json(IntervalErrors(start: IntervalLog.millisecondPrecision(start), endpoint: index, errors: counts.errors)))]")
                }
            }
            write(lines)
        }

        /// The end: what was still in flight and how many sends were late.
        public func finish(_ summary: LoadRun.Summary) {
            writeHeader(startedAt: summary.startedAt)
            write(["#[Loadtest end: \(IntervalLog.json(End(inFlightAtEnd: summary.endpoints.map(\.inFlightAtEnd), lateSends: summary.endpoints.map(\.lateSends))))]"])
            try? handle.close()
        }

        private func write(_ lines: [String]) {
            handle.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        }
    }

    /// A timestamp as a line writes it (to the millisecond), so that an interval's histograms
    /// and its errors meet under one key when read.
    static func millisecondPrecision(_ seconds: Double) -> Double { (seconds * 1000).rounded() / 1000 }

    static func json(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(value)) ?? Data(), as: UTF8.self)
    }

    // MARK: Reading

    /// One log as read back: the run, when it began, its intervals and its end.
    public struct Contents: Sendable {
        public var path: String
        public var run: Run
        /// Seconds since the epoch.
        public var startTime: Double
        public var intervals: [(start: Double, length: Double, slice: IntervalSlice)]
        public var inFlightAtEnd: [Int]
        public var lateSends: [Int]
    }

    public struct Invalid: Error, CustomStringConvertible {
        public let description: String
    }

    /// Reads a log loadtest wrote (`--interval-log`); one from elsewhere lacks the run's
    /// description, which a report needs.
    public static func read(path: String) throws(Invalid) -> Contents {
        guard let data = FileManager.default.contents(atPath: path) else { throw Invalid(description: "\(path): cannot read it") }
        var run: Run?
        var startTime: Double?
        var baseTime: Double?
        var end: End?
        var slices: [Double: IntervalSlice] = [:]
        var lengths: [Double: Double] = [:]
        let decoder = JSONDecoder()
        for (number, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            func invalid(_ reason: String) -> Invalid { Invalid(description: "\(path):\(number + 1): \(reason)") }
            func payload(_ prefix: String) -> Data? {
                line.hasPrefix(prefix) && line.hasSuffix("]") ? Data(line.dropFirst(prefix.count).dropLast().utf8) : nil
            }
            if line.hasPrefix("#") {
                if let json = payload("#[Loadtest: ") {
                    do { run = try decoder.decode(Run.self, from: json) } catch { throw invalid("the run's description is not loadtest's: \(error)") }
                } else if let json = payload("#[Loadtest end: ") {
                    end = try? decoder.decode(End.self, from: json)
                } else if let json = payload("#[Errors: ") {
                    guard let run, let errors = try? decoder.decode(IntervalErrors.self, from: json), run.endpoints.indices.contains(errors.endpoint) else {
                        throw invalid("an Errors line that is not loadtest's")
                    }
                    slices[millisecondPrecision(errors.start), default: IntervalSlice(index: 0, endpoints: run.endpoints.count, openModel: run.model == "open")]
                        .endpoints[errors.endpoint].errors.merge(errors.errors, uniquingKeysWith: +)
                } else if line.hasPrefix("#[StartTime: ") {
                    startTime = Double(line.dropFirst(13).prefix { !$0.isWhitespace })
                } else if line.hasPrefix("#[BaseTime: ") {
                    baseTime = Double(line.dropFirst(12).prefix { !$0.isWhitespace })
                }
                continue
            }
            if line.hasPrefix("\"") { continue }
            guard let run else { throw invalid("a histogram before the run's description (#[Loadtest: …]): was this log written by loadtest --interval-log?") }
            var rest = Substring(line)
            var tag: Substring?
            if rest.hasPrefix("Tag=") {
                guard let comma = rest.firstIndex(of: ",") else { throw invalid("a tag with no histogram after it") }
                tag = rest[rest.index(rest.startIndex, offsetBy: 4)..<comma]
                rest = rest[rest.index(after: comma)...]
            }
            let fields = rest.split(separator: ",", maxSplits: 3, omittingEmptySubsequences: false)
            guard fields.count == 4, let stamp = Double(fields[0]), let length = Double(fields[1]) else {
                throw invalid("expected StartTimestamp,Interval_Length,Interval_Max,histogram")
            }
            let start = millisecondPrecision(stamp)
            let decoded: (layout: HistogramLayout, buckets: [(value: UInt64, count: UInt64)])
            do { decoded = try HistogramCodec.decode(base64: fields[3]) } catch { throw invalid("the histogram: \(error)") }
            var histogram = Results.histogram()
            for bucket in decoded.buckets { histogram.record(min(bucket.value, Results.longestMicroseconds), count: bucket.count) }
            lengths[start] = length
            var slice = slices[start] ?? IntervalSlice(index: 0, endpoints: run.endpoints.count, openModel: run.model == "open")
            switch tag.map(String.init) {
            case nil, IntervalLog.uncorrectedTag?:
                break // The totals: the sum of the endpoints' own, which are read instead.
            case let tag?:
                let uncorrected = tag.hasSuffix("|" + IntervalLog.uncorrectedTag)
                let endpointTag = uncorrected ? String(tag.dropLast(IntervalLog.uncorrectedTag.count + 1)) : tag
                guard let index = run.endpoints.firstIndex(where: { $0.tag == endpointTag }) else {
                    throw invalid("Tag=\(tag) is no endpoint of the run's")
                }
                if uncorrected {
                    slice.endpoints[index].uncorrected = histogram
                } else {
                    slice.endpoints[index].latency = histogram
                    slice.endpoints[index].completed = Int(histogram.totalCount)
                }
            }
            slices[start] = slice
        }
        guard let run else { throw Invalid(description: "\(path): no run description (#[Loadtest: …]); was it written by loadtest --interval-log?") }
        guard let start = startTime ?? baseTime else { throw Invalid(description: "\(path): no #[StartTime: …] line") }
        let relativeTo = baseTime ?? start
        let intervals = slices.keys.sorted().map { offset in
            (start: relativeTo + offset, length: lengths[offset] ?? run.intervalS, slice: slices[offset]!)
        }
        return Contents(path: path, run: run, startTime: start, intervals: intervals,
                        inFlightAtEnd: end?.inFlightAtEnd ?? run.endpoints.map { _ in 0 },
                        lateSends: end?.lateSends ?? run.endpoints.map { _ in 0 })
    }
}
