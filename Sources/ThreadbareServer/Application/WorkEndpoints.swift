#if canImport(Glibc)
import Glibc
#endif

/// The two workloads of the GIL debate: waiting (I/O-bound) and computing (CPU-bound).
enum WorkEndpoints {
    static let io = Route(
        name: "io", pattern: .exact("/io"), methods: [.get], placement: .handler,
        summary: "block the handler thread ms milliseconds in a real blocking call, like a database query"
    ) { request, context throws(RequestError) in
        let parameters = try QueryParameters(request.query)
        try parameters.allowOnly(["ms"])
        let milliseconds = try parameters.integer("ms", in: 0...context.limits.ioMaxMilliseconds)
        // A blocking call releases the interpreter lock, as CPython does around system calls.
        context.lock.withReleased { sleepBlocking(milliseconds: milliseconds) }
        return .json(["slept_ms": .integer(milliseconds)])
    }

    static let cpu = Route(
        name: "cpu", pattern: .exact("/cpu"), methods: [.get], placement: .handler,
        summary: "do work units of deterministic CPU work (about 1 µs each) and return the result; release=1 computes without the lock"
    ) { request, context throws(RequestError) in
        let parameters = try QueryParameters(request.query)
        try parameters.allowOnly(["work", "release"])
        let work = try parameters.integer("work", in: 0...context.limits.cpuMaxWork)
        let releases = try parameters.integer("release", in: 0...1, default: 0) == 1
        // release=1 is a C extension that lets go of the GIL for its loop (hashlib, numpy):
        // the same work, with no check points because nothing else needs the lock back.
        let result = releases
            ? context.lock.withReleased { CPUWork.run(units: work) }
            : try CPUWork.run(units: work) { () throws(RequestError) in try context.checkpoint() }
        return .json(["work": .integer(work), "result": .string(CPUWork.hex(result))])
    }

    /// nanosleep, resumed after signals until the whole time has passed.
    static func sleepBlocking(milliseconds: Int) {
        var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR {
            request = remaining
        }
    }
}
