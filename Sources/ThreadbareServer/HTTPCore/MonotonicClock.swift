#if canImport(Glibc)
import Glibc
#endif

/// Nanoseconds on CLOCK_MONOTONIC: the one clock every timestamp in the server uses,
/// so stamps taken on a loop thread and a handler thread subtract meaningfully.
enum MonotonicClock {
    @inline(__always)
    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }

    static func elapsed(since start: UInt64) -> UInt64 {
        let end = now()
        return end > start ? end - start : 0
    }
}

extension timeval {
    /// A duration in seconds as libevent takes it.
    init(seconds: Double) {
        self.init(tv_sec: Int(seconds), tv_usec: Int((seconds - seconds.rounded(.down)) * 1_000_000))
    }
}
