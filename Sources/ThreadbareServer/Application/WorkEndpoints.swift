/// The two workloads of the GIL debate: waiting (I/O-bound) and computing (CPU-bound).
enum WorkEndpoints {
    /// Made once: these lists are checked for every request.
    private static let ioParameters = ["ms"], cpuParameters = ["work", "release", "offload"]

    static let io = Route.application(
        name: "io", pattern: .exact("/io"), methods: [.get],
        summary: "wait ms milliseconds, like a database query: a blocking call with the lock released on a handler thread, a timer on an event loop"
    ) { request, context throws(RequestError) in
        let parameters = try QueryParameters(request.query)
        try parameters.allowOnly(ioParameters)
        let milliseconds = try parameters.integer("ms", in: 0...context.limits.ioMaxMilliseconds)
        return .waits(milliseconds: milliseconds) { _ throws(RequestError) in .response(.json(["slept_ms": .integer(milliseconds)])) }
    }

    static let cpu = Route.application(
        name: "cpu", pattern: .exact("/cpu"), methods: [.get],
        summary: "do work units of deterministic CPU work (about 1 µs each) and return the result; release=1 computes without the lock; offload=1 runs it in the executor pool (run_in_executor) when handlers run on an event loop"
    ) { request, context throws(RequestError) in
        let parameters = try QueryParameters(request.query)
        try parameters.allowOnly(cpuParameters)
        let work = try parameters.integer("work", in: 0...context.limits.cpuMaxWork)
        let releases = try parameters.integer("release", in: 0...1, default: 0) == 1
        let offloads = try parameters.integer("offload", in: 0...1, default: 0) == 1
        guard offloads else { return try compute(work: work, releasing: releases, context) }
        return .offloads { context throws(RequestError) in try compute(work: work, releasing: releases, context) }
    }

    private static func compute(work: Int, releasing: Bool, _ context: HandlerContext) throws(RequestError) -> HandlerResult {
        // release=1 is a C extension that lets go of the GIL for its loop (hashlib, numpy):
        // the same work, with no check points because nothing else needs the lock back.
        let result = releasing
            ? context.lock.withReleased { CPUWork.run(units: work) }
            : try CPUWork.run(units: work) { () throws(RequestError) in try context.checkpoint() }
        return .response(HTTPResponse(status: 200, contentType: "application/json", body: answer(work: work, result: result)))
    }

    /// `{"work":N,"result":"<16 hex digits>"}`, written straight into the body: the answer to
    /// the cheapest request there is, where building a JSONValue and its strings first cost a
    /// measurable share (bench/http_core.sh, async /cpu?work=0).
    static func answer(work: Int, result: UInt64) -> [UInt8] {
        var body: [UInt8] = []
        body.reserveCapacity(48)
        body.append(contentsOf: #"{"work":"#.utf8)
        JSONValue.writeInteger(work, into: &body)
        body.append(contentsOf: #","result":""#.utf8)
        CPUWork.appendHex(result, to: &body)
        body.append(contentsOf: #""}"#.utf8)
        return body
    }
}
