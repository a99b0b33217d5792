/// One cache operation as a value, so an executor can run it where its mode says: in place on
/// a handler thread (with the lock released while it waits on the network), or, on an event
/// loop, started there with its answer coming back to the loop, as an asyncio client
/// (aiomcache) awaits its socket.
public enum CacheOperation: Sendable {
    /// Read `touches` times by the handler.
    case get(CacheKey, touches: Int)
    case put(CacheKey, CacheEntry, timeToLive: Int)
    case remove(CacheKey)
    case statistics
}

/// What an operation answered.
public enum CacheOutcome: Sendable {
    case entry(CacheEntry?)
    case stored(CachePutOutcome)
    case removed(Bool)
    case statistics(CacheStatistics)
}

extension CacheBackend {
    /// The operation, done now on this thread.
    public func perform(_ operation: CacheOperation) throws(CacheFailure) -> CacheOutcome {
        switch operation {
        case .get(let key, let touches): .entry(try get(key, touches: touches))
        case .put(let key, let entry, let timeToLive): .stored(try put(key, entry, timeToLive: timeToLive))
        case .remove(let key): .removed(try remove(key))
        case .statistics: .statistics(try statistics)
        }
    }

    /// A backend in memory answers at once, on the loop's thread, before this returns.
    public func start(_ operation: CacheOperation, on loop: LoopHandle,
                      completion: @escaping @Sendable (Result<CacheOutcome, CacheFailure>) -> Void) {
        completion(Result { () throws(CacheFailure) in try perform(operation) })
    }
}
