import ArgumentParser
import Foundation
import LoadTestKit

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge interval logs (--interval-log) written at the same time on several machines into one report: histograms added exactly, intervals lined up by their timestamps, objectives judged on the merged run.")

    @Argument(help: "The interval logs (.hlog), one per machine.") var files: [String]
    @OptionGroup var objectives: ObjectiveOptions
    @Flag(help: "JSON instead of text (the same schema as run's).") var json = false

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("give at least one interval log") }
    }

    func run() throws {
        let merged: LogMerge.Merged
        do {
            merged = try LogMerge.merge(try files.map { path throws(IntervalLog.Invalid) in try IntervalLog.read(path: path) })
        } catch {
            throw ValidationError("\(error)")
        }
        let objectives = try objectives.objectives()
        if let problem = Objective.problem(objectives, endpoints: merged.plan.endpoints) { throw ValidationError(problem) }
        let report = Report(plan: merged.plan, summary: merged.summary, objectives: objectives)
        if json {
            print(report.json())
        } else {
            print("merged from \(merged.sources) interval log\(merged.sources == 1 ? "" : "s")")
            print(report.text())
        }
        if !report.metObjectives { throw ExitCode(1) }
    }
}
