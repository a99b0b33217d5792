import ArgumentParser
import Foundation
import LoadTestKit

struct Knee: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find the highest open-model rate that meets the objectives (--slo): short steps, doubling the rate until one misses, then bisecting to within --precision.",
        discussion: "A step also misses when its answers fall behind the schedule (fewer than 95% of the requests due end within it). Exits 1 when even the lowest rate tried misses.")

    @OptionGroup var requests: RequestOptions
    @OptionGroup var objectives: ObjectiveOptions
    @Option(name: .short, help: "Connections the requests are sent on: enough that a free one is there when a request is due.") var c: Int = 64
    @Option(help: "The first step's rate, in requests per second.") var start: Double = 100
    @Option(help: "Never step above this rate.") var maxRate: Double = 1_000_000
    @Option(help: "Each step's measured duration.") var step: Duration = Duration(argument: "5s")!
    @Option(help: "Each step's warm-up, not measured.") var warmup: Duration = Duration(argument: "1s")!
    @Option(help: "Stop bisecting when the rates met and missed are this close, as a share (0.05 is 5%).") var precision: Double = 0.05
    @Flag(help: "JSON instead of text: max_rate and steps.") var json = false

    func validate() throws {
        guard !objectives.slo.isEmpty else { throw ValidationError("give at least one objective, such as --slo 'p99<50ms'") }
        guard c >= 1 else { throw ValidationError("-c must be at least 1, got \(c)") }
        guard start.isFinite && start >= 1 && start <= 10_000_000 else { throw ValidationError("--start must be from 1 to 10000000, got \(start)") }
        guard maxRate.isFinite && maxRate >= start && maxRate <= 10_000_000 else {
            throw ValidationError("--max-rate must be from --start (\(start)) to 10000000, got \(maxRate)")
        }
        guard step.seconds > 0 else { throw ValidationError("--step must be longer than 0") }
        guard precision > 0 && precision < 1 else { throw ValidationError("--precision must be above 0 and below 1, got \(precision)") }
    }

    func run() throws {
        let plan = try requests.plan(connections: c, duration: step.seconds, warmup: warmup.seconds)
        let objectives = try objectives.objectives()
        if let problem = Objective.problem(objectives, endpoints: plan.endpoints) { throw ValidationError(problem) }
        do {
            try LoadRun.checkReachable(plan.target, tls: plan.tls)
        } catch {
            FileHandle.standardError.write(Data("loadtest: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let search = KneeSearch(plan: plan, objectives: objectives, startRate: start, highestRate: maxRate, precision: precision)
        if !json {
            print("searching for the highest rate meeting \(objectives.map(\.description).joined(separator: ", ")) at \(plan.endpoints.map(\.name).joined(separator: ", "))")
            print(KneeSearch.Step.header)
        }
        let outcome = try search.run(step: { step in
            if !json {
                print(step.text)
                fflush(nil)
            }
        })
        if json {
            print(outcome.json())
        } else if let rate = outcome.maxRate {
            print(String(format: "highest rate meeting the objectives: %.1f requests/s", rate)
                  + (outcome.atCeiling ? " (the --max-rate ceiling: the server may sustain more)" : ""))
        } else {
            print("no rate tried met the objectives, down to \(KneeSearch.Step.lowestTried(outcome)) requests/s")
        }
        if outcome.maxRate == nil { throw ExitCode(1) }
    }
}
