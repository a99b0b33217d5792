import Foundation
import Testing

/// The suites that load both cores (CPU work, many processes, load generation) or judge the
/// server by how it shares them. They run one at a time, so none of them skews another's
/// figures on a 2-core machine; lighter suites still run alongside.
@Suite(.serialized) struct LoadSensitive {}

/// True in `swift test --sanitize=thread` or `=address`, whose runtime (and the servers', built
/// alike) is linked in.
let underSanitizer = ["__tsan_init", "__asan_init"].contains { (symbol: String) in dlsym(UnsafeMutableRawPointer(bitPattern: 0), symbol) != nil }
