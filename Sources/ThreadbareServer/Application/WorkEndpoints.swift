/// The two workloads of the GIL debate: waiting (I/O-bound) and computing (CPU-bound).
enum WorkEndpoints {
    /// Made once: these lists are checked for every request.
    private static let ioParameters = ["ms"], cpuParameters = ["work", "release", "native", "offload"]

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
        summary: "do work units of deterministic CPU work (about 1 µs each) and return the result; native=F runs the share F in a C extension that lets go of the lock, a step at a time (release=1 is native=1); offload=1 runs it in the executor pool (run_in_executor) when handlers run on an event loop"
    ) { request, context throws(RequestError) in
        let parameters = try QueryParameters(request.query)
        try parameters.allowOnly(cpuParameters)
        let work = try parameters.integer("work", in: 0...context.limits.cpuMaxWork)
        if parameters.has("release") && parameters.has("native") {
            throw RequestError(400, "release=1 is native=1: give one of them")
        }
        let native = parameters.has("release") ? Double(try parameters.integer("release", in: 0...1))
            : try parameters.fraction("native", default: 0)
        let offloads = try parameters.integer("offload", in: 0...1, default: 0) == 1
        guard offloads else { return try compute(work: work, native: native, context) }
        return .offloads { context throws(RequestError) in try compute(work: work, native: native, context) }
    }

    /// Units per step of a handler that calls a C extension in a loop: each step runs its
    /// Python share holding the lock, then its native share without it, and takes the lock
    /// back to return to Python.
    static let nativeStepUnits = 100

    /// The share `native` of the work runs in C without the lock, the rest in Python with it.
    /// Wholly native (release=1) is one call, as hashlib hashing one large buffer is.
    private static func compute(work: Int, native: Double, _ context: HandlerContext) throws(RequestError) -> HandlerResult {
        let nativeUnits = Int((Double(work) * native).rounded()), pythonUnits = work - nativeUnits
        var state = CPUWork.start(units: work)
        if nativeUnits == 0 || pythonUnits == 0 {
            state = nativeUnits == 0 ? try context.runPython(units: work, from: state) : context.runNative(units: work, from: state)
        } else {
            let steps = (work + nativeStepUnits - 1) / nativeStepUnits
            // Each step's share, spread so the steps add up to exactly the totals.
            let share = { (total: Int, step: Int) in total * (step + 1) / steps - total * step / steps }
            for step in 0..<steps {
                state = try context.runPython(units: share(pythonUnits, step), from: state)
                let units = share(nativeUnits, step)
                if units > 0 { state = context.runNative(units: units, from: state) }
            }
        }
        return .response(HTTPResponse(status: 200, contentType: "application/json", body: answer(work: work, result: state)))
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
