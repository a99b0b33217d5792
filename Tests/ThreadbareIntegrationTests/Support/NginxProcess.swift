import Foundation

/// Debian's nginx in the foreground on a configuration rendered into `directory`
/// (`DeployFilesTests.renderNginx`), what it says on stderr kept in `directory/stderr`.
final class NginxProcess {
    let process: ChildProcess
    private let errors: URL

    /// `directives` go on the command line (`-g`): at least `daemon off;`.
    init(conf: URL, in directory: URL, directives: String = "daemon off;") throws {
        errors = directory.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: errors.path, contents: nil)
        process = try ChildProcess(DeployFilesTests.nginx, ["-p", directory.path, "-c", conf.path, "-e", "stderr", "-g", directives],
                                   environment: ServerProcess.cleanEnvironment(adding: [:]), standardError: errors.path)
    }

    var standardError: String { (try? String(contentsOf: errors, encoding: .utf8)) ?? "" }

    /// TERM (the master stops its workers), and a kill if that takes over 10 s.
    func stop() {
        kill(process.pid, SIGTERM)
        if !process.waitForExit(within: 10) { _ = BoundedWait.killStuck(process) }
    }
}
