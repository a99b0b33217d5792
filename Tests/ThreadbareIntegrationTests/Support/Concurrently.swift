import Foundation

/// Runs `body` on `count` OS threads at once and returns their results in order. Real threads,
/// because each blocks on a socket.
func concurrently<T: Sendable>(_ count: Int, _ body: @escaping @Sendable (Int) throws -> T) throws -> [T] {
    let results = ResultBox<T>(count: count)
    let group = DispatchGroup()
    for index in 0..<count {
        group.enter()
        Thread.detachNewThread {
            results.set(index, Result { try body(index) })
            group.leave()
        }
    }
    group.wait()
    return try results.values()
}

private final class ResultBox<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [Result<T, any Error>?]
    init(count: Int) { results = Array(repeating: nil, count: count) }
    func set(_ index: Int, _ result: Result<T, any Error>) { lock.withLock { results[index] = result } }
    func values() throws -> [T] { try lock.withLock { try results.map { try $0!.get() } } }
}
