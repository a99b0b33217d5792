import Foundation

/// The repository's root, where .build and Tests/reference are.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

/// The python of a virtual environment under .build/NAME with `requirement` from PyPI in it
/// (made the first time; kept for the next run), which imports as `module`.
func pythonEnvironment(_ name: String, installing requirement: String, module: String) throws -> URL {
    let venv = repositoryRoot.appendingPathComponent(".build/\(name)")
    let python = venv.appendingPathComponent("bin/python")
    let ready = try FileManager.default.isExecutableFile(atPath: python.path) && runToCompletion(python, ["-c", "import \(module)"]).status == 0
    if !ready {
        guard try runToCompletion(URL(fileURLWithPath: "/usr/bin/python3"), ["-m", "venv", venv.path]).status == 0,
              try runToCompletion(python, ["-m", "pip", "install", "-q", requirement]).status == 0 else {
            throw HTTPConnection.Failure("could not set up \(requirement) in \(venv.path): python3's venv module (apt-get install python3-venv) and PyPI are needed")
        }
    }
    return python
}
