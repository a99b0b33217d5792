import ArgumentParser
import ThreadbareServer

struct Config: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Work with configuration files.", subcommands: [Check.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the effective configuration of a file (with environment and flags applied), or its error (exit 2).")

        @Argument(help: "The YAML config file to check.") var file: String
        @OptionGroup var options: ConfigurationOptions

        func run() throws {
            var options = options
            options.config = file
            do {
                print(try options.load().rendered(), terminator: "")
            } catch {
                exitWithConfigurationError(error)
            }
        }
    }
}
