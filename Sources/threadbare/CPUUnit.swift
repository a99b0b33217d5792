import ArgumentParser
import Foundation
import ThreadbareServer

/// `threadbare cpu-unit`: what one `/cpu` unit costs on this machine, for a reference app that
/// must make its own unit cost the same (loadtest/python reads it as CPU_UNIT_NS).
struct CPUUnit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cpu-unit",
        abstract: "Print the nanoseconds one /cpu work unit takes on this machine: the median of several timed runs, as loadtest/python calibrates its own.")

    @Option(help: "Timed runs; the median is printed.") var runs = 9
    @Option(help: "Units per run.") var units = 5_000

    func validate() throws {
        guard (1...1_000).contains(runs) else { throw ValidationError("--runs must be between 1 and 1000") }
        guard (1...10_000_000).contains(units) else { throw ValidationError("--units must be between 1 and 10000000") }
    }

    func run() {
        var sink: UInt64 = 0
        var times: [Double] = []
        for _ in 0..<runs {
            let started = ContinuousClock.now
            sink ^= CPUWork.run(units: units)
            let elapsed = ContinuousClock.now - started
            times.append(Double(elapsed.components.seconds) * 1e9 + Double(elapsed.components.attoseconds) / 1e9)
        }
        // The result is used, so the optimiser cannot drop the work.
        if sink == 0x5EED { FileHandle.standardError.write(Data("\n".utf8)) }
        print(String(format: "%.1f", times.sorted()[times.count / 2] / Double(units)))
    }
}
