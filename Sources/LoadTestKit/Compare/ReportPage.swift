import Foundation

/// The comparison as one self-contained page (report/index.html): inline SVG charts, the
/// tables and the verdicts, no script and nothing fetched, so it opens offline and in any
/// browser. It is well-formed XML (XHTML), which the tests check with an XML parser.
extension Comparison {
    /// One colour per mode, the same in every chart.
    static let colours = ["gil": "#d62728", "subinterpreters": "#ff7f0e", "prefork": "#1f77b4", "nogil": "#2ca02c",
                          "async": "#9467bd", "prefork-async": "#8c564b", "nogil-async": "#17becf"]
    static let fallbackColours = ["#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]

    func colour(_ mode: String) -> String {
        Self.colours[mode] ?? Self.fallbackColours[(modes.firstIndex { $0.mode == mode } ?? 0) % Self.fallbackColours.count]
    }

    public func page() -> String {
        var body = """
            <h1>Threadbare: the modes compared</h1>
            <p>\(cores) cores, \(escape(timing)) timings; modes in the order run: \(modes.map { legendEntry($0.mode) }.joined(separator: " "))</p>

            """
        for scenario in scenarios {
            body += "<section>\n<h2>\(escape(scenario.title))</h2>\n"
            if !scenario.question.isEmpty { body += "<p class=\"question\">\(escape(scenario.question))</p>\n" }
            body += charts(scenario)
            body += tableHTML(scenario)
            for mode in modes {
                if let failure = mode.scenarioFailures[scenario.name] {
                    body += "<p class=\"failure\">\(escape(mode.mode)): not measured: \(escape(failure))</p>\n"
                }
            }
            if let verdict = verdict(scenario) { body += "<p class=\"verdict\">\(escape(verdict))</p>\n" }
            for note in memoryNotes(scenario) { body += "<p>\(escape(note))</p>\n" }
            body += "</section>\n"
        }
        for mode in modes where mode.failure != nil {
            body += "<p class=\"failure\">\(escape(mode.mode)) was not measured: \(escape(mode.failure!))</p>\n"
        }
        return """
            <?xml version="1.0" encoding="UTF-8"?>
            <!DOCTYPE html>
            <html xmlns="http://www.w3.org/1999/xhtml" lang="en">
            <head>
            <meta charset="UTF-8"/>
            <title>Threadbare: the modes compared</title>
            <style>
            body { font: 15px/1.45 system-ui, sans-serif; max-width: 980px; margin: 2em auto; padding: 0 1em; color: #222; }
            h2 { margin-top: 2.2em; border-bottom: 1px solid #ddd; }
            .question { color: #555; font-style: italic; }
            .verdict { background: #f4f7fb; border-left: 4px solid #1f77b4; padding: .6em .8em; }
            .failure { color: #b00; }
            table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
            th, td { padding: .25em .6em; border-bottom: 1px solid #eee; text-align: right; }
            th:first-child, td:first-child { text-align: left; white-space: nowrap; }
            .swatch { display: inline-block; width: .8em; height: .8em; margin: 0 .3em 0 .6em; vertical-align: middle; }
            svg { display: block; margin: 1em 0; }
            svg text { font: 12px system-ui, sans-serif; fill: #333; }
            </style>
            </head>
            <body>
            \(body)</body>
            </html>

            """
    }

    private func legendEntry(_ mode: String) -> String {
        "<span class=\"swatch\" style=\"background:\(colour(mode))\"></span>\(escape(mode))"
    }

    private func tableHTML(_ scenario: ScenarioInfo) -> String {
        let rows = measured(scenario.name)
        guard let first = rows.first?.outcome else { return "<p>No mode measured this.</p>\n" }
        var html = "<table>\n<tr><th>mode</th>"
        for figure in first.figures {
            html += "<th>\(escape(figure.namesItsUnit ? figure.label : "\(figure.label) (\(figure.unit))"))</th>"
        }
        html += "<th>vs best</th></tr>\n"
        for (mode, outcome) in rows {
            html += "<tr><td>\(legendEntry(mode))</td>" + outcome.figures.map { "<td>\($0.cell)</td>" }.joined()
            html += "<td>\(ratioToBest(outcome, in: scenario.name))</td></tr>\n"
        }
        return html + "</table>\n"
    }

    // MARK: Charts

    private func charts(_ scenario: ScenarioInfo) -> String {
        let rows = measured(scenario.name)
        guard !rows.isEmpty else { return "" }
        switch scenario.kind {
        case .scaling, .hot:
            // Throughput against concurrency, one line per mode.
            let series = rows.map { mode, outcome in
                (mode, outcome.throughputByConnections.compactMap { step in step.value.map { (Double(step.connections), $0) } })
            }
            return lineChart(series, xTitle: "connections", yTitle: "requests/s", logX: true) + timeBars(rows, title: "where a request's time went, at the most connections")
        case .convoy:
            let spectra = rows.compactMap { mode, outcome in outcome.reports.first.map { (mode, spectrum($0.measured.latencyMs)) } }
            return lineChart(spectra, xTitle: "percentile", yTitle: "quick request latency, ms", percentileX: true)
                + lineChart(rows.map { mode, outcome in (mode, overTime(Array(outcome.reports.prefix(1)))) },
                            xTitle: "seconds into the run", yTitle: "quick request p99 per interval, ms")
                + timeBars(rows, title: "where the quick request's time went")
        case .capacity:
            let series = rows.map { mode, outcome in
                (mode, outcome.p99ByRate.map { step in (step.rate, step.p99) })
            }
            return lineChart(series, xTitle: "offered requests/s", yTitle: "p99 latency, ms", logX: true, logY: true,
                             threshold: scenario.slaP99Milliseconds.map { ($0, "SLA") })
                + lineChart(rows.map { mode, outcome in (mode, overTime(outcome.reports)) },
                            xTitle: "seconds into the search, step after step", yTitle: "p99 per interval, ms", logY: true,
                            threshold: scenario.slaP99Milliseconds.map { ($0, "SLA") })
        case .cache:
            return barChart(rows.map { mode, outcome in (mode, [("hit ratio %", outcome.value(.hitRatio) ?? 0)]) },
                            title: "share of reads that hit the cache, %")
        case .native:
            return barChart(rows.map { mode, outcome in
                (mode, outcome.figures.compactMap { figure in
                    guard case .nativeSpeedup = figure.measure else { return nil }
                    return (figure.label, figure.value ?? 0)
                })
            }, title: "speedup over one connection, by the share of the work in a C extension that releases the lock")
        case .memory:
            return barChart(rows.map { mode, outcome in
                (mode, [("idle", outcome.value(.idleOwn) ?? 0), ("loaded", outcome.value(.loadedOwn) ?? 0)])
            }, title: "own memory (anonymous Pss) over all processes, MB")
        }
    }

    /// Each interval's p99 at its middle, the runs one after another: a stall, or the moment a
    /// step's queue began to grow, shows where it happened.
    private func overTime(_ reports: [Report]) -> [(Double, Double)] {
        var offset = 0.0
        var points: [(Double, Double)] = []
        for report in reports {
            for interval in report.intervals ?? [] where interval.requests > 0 {
                points.append((offset + interval.startS + interval.lengthS / 2, interval.p99Ms))
            }
            offset += report.durationS
        }
        return points
    }

    /// Latency at each percentile HdrHistogram reports, for a 1/(1−p) axis.
    private func spectrum(_ latency: Report.Percentiles) -> [(Double, Double)] {
        [(50, latency.p50), (90, latency.p90), (99, latency.p99), (99.9, latency.p999), (99.99, latency.p9999)]
    }

    private static let width = 680.0, height = 300.0, left = 110.0, right = 130.0, top = 20.0, bottom = 45.0

    /// Lines with markers; a log scale where asked, and for percentiles HdrHistogram's
    /// log 1/(1−p) axis, on which the tail is as wide as the body.
    private func lineChart(_ series: [(String, [(Double, Double)])], xTitle: String, yTitle: String,
                           logX: Bool = false, logY: Bool = false, percentileX: Bool = false,
                           threshold: (value: Double, label: String)? = nil) -> String {
        let points = series.flatMap(\.1) + (threshold.map { [(series.flatMap(\.1).first?.0 ?? 1, $0.value)] } ?? [])
        guard !points.isEmpty else { return "" }
        let xValue = { (x: Double) in percentileX ? log10(1 / (1 - x / 100)) : (logX ? log2(max(x, 1e-9)) : x) }
        let yValue = { (y: Double) in logY ? log10(max(y, 0.01)) : y }
        let xs = points.map { xValue($0.0) }, ys = points.map { yValue($0.1) }
        let xMin = xs.min()!, xMax = max(xs.max()!, xMin + 1e-9)
        let yMin = logY ? ys.min()! : 0, yMax = max(ys.max()! * (logY ? 1 : 1.08), yMin + 1e-9)
        let plotWidth = Self.width - Self.left - Self.right, plotHeight = Self.height - Self.top - Self.bottom
        let px = { (x: Double) in Self.left + (xValue(x) - xMin) / (xMax - xMin) * plotWidth }
        let py = { (y: Double) in Self.top + plotHeight - (yValue(y) - yMin) / (yMax - yMin) * plotHeight }
        var svg = svgOpen(height: Self.height)
        svg += axes(plotWidth: plotWidth, plotHeight: plotHeight, xTitle: xTitle, yTitle: yTitle)
        // x ticks at the measured x values, or at five even steps when there are too many to
        // read (a capacity search's rates, a run's intervals); y ticks at five even steps.
        let measuredXs = Set(points.map(\.0)).sorted()
        let tickXs = measuredXs.count <= 8 || percentileX ? measuredXs : (0...4).map { step in
            let scaled = xMin + (xMax - xMin) * Double(step) / 4
            return logX ? pow(2, scaled) : scaled
        }
        for x in tickXs {
            let label = percentileX ? String(format: "%g%%", x) : tick(x)
            svg += "<text x=\"\(f(px(x)))\" y=\"\(f(Self.top + plotHeight + 16))\" text-anchor=\"middle\">\(label)</text>\n"
        }
        for step in 0...4 {
            let scaled = yMin + (yMax - yMin) * Double(step) / 4
            let y = logY ? pow(10, scaled) : scaled
            svg += "<text x=\"\(f(Self.left - 6))\" y=\"\(f(py(y) + 4))\" text-anchor=\"end\">\(tick(y))</text>\n"
            svg += "<line x1=\"\(f(Self.left))\" x2=\"\(f(Self.left + plotWidth))\" y1=\"\(f(py(y)))\" y2=\"\(f(py(y)))\" stroke=\"#eee\"/>\n"
        }
        if let threshold {
            let y = py(threshold.value)
            svg += "<line x1=\"\(f(Self.left))\" x2=\"\(f(Self.left + plotWidth))\" y1=\"\(f(y))\" y2=\"\(f(y))\" stroke=\"#555\" stroke-dasharray=\"5 4\"/>\n"
            svg += "<text x=\"\(f(Self.left + plotWidth + 4))\" y=\"\(f(y + 4))\">\(escape(threshold.label)) \(tick(threshold.value))</text>\n"
        }
        for (index, (mode, line)) in series.enumerated() where !line.isEmpty {
            let path = line.map { "\(f(px($0.0))),\(f(py($0.1)))" }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(colour(mode))\" stroke-width=\"2\" points=\"\(path)\"/>\n"
            for point in line {
                svg += "<circle cx=\"\(f(px(point.0)))\" cy=\"\(f(py(point.1)))\" r=\"3\" fill=\"\(colour(mode))\"/>\n"
            }
            svg += legend(mode, index: index)
        }
        return svg + "</svg>\n"
    }

    /// Stacked bars of a request's time (see `ScenarioOutcome.serverTimeMs`), one per mode.
    private func timeBars(_ rows: [(mode: String, outcome: ScenarioOutcome)], title: String) -> String {
        let parts = [("loop", "#9467bd"), ("queue", "#9ecae1"), ("lock", "#d62728"), ("work", "#31a354"), ("rest", "#bdbdbd")]
        let totals = rows.map { row in parts.map { row.outcome.serverTimeMs[$0.0] ?? 0 }.reduce(0, +) }
        guard let most = totals.max(), most > 0 else { return "" }
        let barHeight = 22.0, gap = 10.0
        let height = Self.top + Double(rows.count) * (barHeight + gap) + 40
        let plotWidth = Self.width - Self.left - Self.right
        var svg = svgOpen(height: height)
        svg += "<text x=\"\(f(Self.left))\" y=\"14\">\(escape(title)) (mean ms per request)</text>\n"
        for (index, row) in rows.enumerated() {
            let y = Self.top + 8 + Double(index) * (barHeight + gap)
            svg += "<text x=\"\(f(Self.left - 6))\" y=\"\(f(y + 15))\" text-anchor=\"end\">\(escape(row.mode))</text>\n"
            var x = Self.left
            for (name, colour) in parts {
                let width = (row.outcome.serverTimeMs[name] ?? 0) / most * plotWidth
                if width > 0 {
                    svg += "<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(width))\" height=\"\(f(barHeight))\" fill=\"\(colour)\"><title>\(name)</title></rect>\n"
                }
                x += width
            }
            svg += "<text x=\"\(f(x + 6))\" y=\"\(f(y + 15))\">\(Self.format(totals[index]))</text>\n"
        }
        for (index, (name, colour)) in parts.enumerated() {
            let x = Self.left + Double(index) * 80
            svg += "<rect x=\"\(f(x))\" y=\"\(f(height - 18))\" width=\"10\" height=\"10\" fill=\"\(colour)\"/>"
            svg += "<text x=\"\(f(x + 14))\" y=\"\(f(height - 9))\">\(name)</text>\n"
        }
        return svg + "</svg>\n"
    }

    /// Grouped bars: for each mode, its values side by side.
    private func barChart(_ groups: [(String, [(String, Double)])], title: String) -> String {
        let most = groups.flatMap { $0.1.map(\.1) }.max() ?? 0
        guard most > 0 else { return "" }
        let barHeight = 14.0, gap = 12.0
        let perGroup = Double(groups.first?.1.count ?? 1) * barHeight + gap
        let height = Self.top + Double(groups.count) * perGroup + 24
        let plotWidth = Self.width - Self.left - Self.right
        var svg = svgOpen(height: height)
        svg += "<text x=\"\(f(Self.left))\" y=\"14\">\(escape(title))</text>\n"
        for (index, (mode, values)) in groups.enumerated() {
            let y = Self.top + 8 + Double(index) * perGroup
            svg += "<text x=\"\(f(Self.left - 6))\" y=\"\(f(y + barHeight))\" text-anchor=\"end\">\(escape(mode))</text>\n"
            for (row, (name, value)) in values.enumerated() {
                let barY = y + Double(row) * barHeight
                svg += "<rect x=\"\(f(Self.left))\" y=\"\(f(barY))\" width=\"\(f(value / most * plotWidth))\" height=\"\(f(barHeight - 2))\" "
                    + "fill=\"\(colour(mode))\" fill-opacity=\"\(row == 0 && values.count > 1 ? "0.45" : "1")\"/>\n"
                svg += "<text x=\"\(f(Self.left + value / most * plotWidth + 6))\" y=\"\(f(barY + barHeight - 3))\">\(escape(name)) \(Self.format(value))</text>\n"
            }
        }
        return svg + "</svg>\n"
    }

    private func svgOpen(height: Double) -> String {
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(f(Self.width))\" height=\"\(f(height))\" viewBox=\"0 0 \(f(Self.width)) \(f(height))\">\n"
    }

    private func axes(plotWidth: Double, plotHeight: Double, xTitle: String, yTitle: String) -> String {
        let bottomY = Self.top + plotHeight
        return "<line x1=\"\(f(Self.left))\" y1=\"\(f(Self.top))\" x2=\"\(f(Self.left))\" y2=\"\(f(bottomY))\" stroke=\"#999\"/>\n"
            + "<line x1=\"\(f(Self.left))\" y1=\"\(f(bottomY))\" x2=\"\(f(Self.left + plotWidth))\" y2=\"\(f(bottomY))\" stroke=\"#999\"/>\n"
            + "<text x=\"\(f(Self.left + plotWidth / 2))\" y=\"\(f(Self.height - 8))\" text-anchor=\"middle\">\(escape(xTitle))</text>\n"
            + "<text x=\"14\" y=\"\(f(Self.top + plotHeight / 2))\" text-anchor=\"middle\" transform=\"rotate(-90 14 \(f(Self.top + plotHeight / 2)))\">\(escape(yTitle))</text>\n"
    }

    private func legend(_ mode: String, index: Int) -> String {
        let x = Self.width - Self.right + 14, y = Self.top + 10 + Double(index) * 18
        return "<rect x=\"\(f(x))\" y=\"\(f(y - 9))\" width=\"10\" height=\"10\" fill=\"\(colour(mode))\"/>"
            + "<text x=\"\(f(x + 14))\" y=\"\(f(y))\">\(escape(mode))</text>\n"
    }

    private func f(_ value: Double) -> String { String(format: "%.1f", value) }

    /// An axis label: whole numbers without decimals, others with up to two.
    private func tick(_ value: Double) -> String {
        if value == value.rounded() && abs(value) < 1e15 { return String(Int(value)) }
        if abs(value) >= 10 { return String(format: "%.0f", value) }
        return String(format: "%.2f", value).replacingOccurrences(of: #"\.?0+$"#, with: "", options: .regularExpression)
    }

    /// XML's five, and the control characters XML forbids even escaped (a log line with
    /// colours, say) become spaces.
    private func escape(_ text: String) -> String {
        String(text.unicodeScalars.map { $0.value < 0x20 && $0 != "\n" && $0 != "\t" ? " " : Character($0) })
            .replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
