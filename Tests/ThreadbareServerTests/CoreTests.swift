import Synchronization
#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import ThreadbareServer

@Suite("CPU work, timing, parameters, routing, the handler pool")
struct CoreTests {
    @Test func cpuWorkIsDeterministic() {
        #expect(CPUWork.run(units: 0) == 0x9E37_79B9_7F4A_7C15)
        #expect(CPUWork.run(units: 1000) == CPUWork.run(units: 1000))
        #expect(CPUWork.run(units: 1000) != CPUWork.run(units: 1001))
        // A fixed vector: a change to the unit changes this and must be deliberate.
        #expect(CPUWork.hex(CPUWork.run(units: 1000)) == "d2986e5b1bc691cd")
        #expect(CPUWork.hex(1) == "0000000000000001")
    }

    @Test func cpuWorkCallsTheCheckpointOncePerUnit() {
        var checkpoints = 0
        _ = CPUWork.run(units: 37) { checkpoints += 1 }
        #expect(checkpoints == 37)
    }

    @Test func serverTimingIsMillisecondsWithMicroseconds() {
        #expect(ServerTiming(queue: 12_345, app: 2_000_000_000).headerValue == "queue;dur=0.012, lock;dur=0.000, app;dur=2000.000, loop;dur=0.000")
        #expect(ServerTiming(queue: 1_500, app: 999_999, lock: 5_000_001).headerValue == "queue;dur=0.001, lock;dur=5.000, app;dur=0.999, loop;dur=0.000")
        #expect(ServerTiming(queue: 0, app: 12_345_678_901, lock: .max, loop: 7_000).headerValue
            == "queue;dur=0.000, lock;dur=18446744073709.551, app;dur=12345.678, loop;dur=0.007")
        #expect(ServerTiming(queue: .max, app: .max, lock: .max, loop: .max).headerValue.count == 114, "the widest values fit the buffer")
    }

    @Test func jsonEscapesWhatRFC8259Requires() {
        let value: JSONValue = ["text": .string("a\"b\\c\nd\u{01}é"), "n": .integer(-3), "x": .number(.infinity), "ok": .bool(true)]
        #expect(String(decoding: value.bytes, as: UTF8.self) == #"{"text":"a\"b\\c\nd\u0001é","n":-3,"x":null,"ok":true}"#)
    }

    @Test func queryParametersDecodeAndCheck() throws {
        let parameters = try QueryParameters("ms=12&name=a%20b")
        #expect(try parameters.integer("ms", in: 0...100) == 12)
        #expect(try parameters.integer("absent", in: 0...1, default: 1) == 1)
        #expect(throws: RequestError.self) { try parameters.integer("ms", in: 0...5) }
        #expect(throws: RequestError.self) { try parameters.allowOnly(["ms"]) }
        try parameters.allowOnly(["ms", "name"])
        #expect(throws: RequestError.self) { try QueryParameters("ms") }
        #expect(try QueryParameters(nil).integer("x", in: 0...1, default: 0) == 0)
    }

    @Test func routerFindsRoutesAndExplainsMisses() {
        let router = Router(routes: Endpoints.all)
        guard case .found(let route, _) = router.match(method: .put, path: "/cache/k") else {
            Issue.record("PUT /cache/k should match")
            return
        }
        #expect(route.name == "cache")
        guard case .methodNotAllowed(let allowed) = router.match(method: .post, path: "/io") else {
            Issue.record("POST /io should be 405")
            return
        }
        #expect(Router.allowHeader(allowed) == "GET, HEAD")
        guard case .notFound = router.match(method: .get, path: "/iox") else {
            Issue.record("/iox should be 404")
            return
        }
    }

    @Test func handlerPoolRunsJobsAndRefusesWhenFull() throws {
        let pool = try HandlerPool(threads: 1, queueLimit: 2)
        let gate = Atomic<Bool>(false)
        let done = Atomic<Int>(0)
        // Occupy the only thread, then fill the queue.
        #expect(pool.submit {
            while !gate.load(ordering: .acquiring) { usleep(1_000) }
            done.add(1, ordering: .relaxed)
        })
        while pool.depth > 0 { usleep(1_000) }
        #expect(pool.submit { done.add(1, ordering: .relaxed) })
        #expect(pool.submit { done.add(1, ordering: .relaxed) })
        #expect(!pool.submit { done.add(1, ordering: .relaxed) }, "a third waiting job exceeds queue_limit 2")
        gate.store(true, ordering: .releasing)
        for _ in 0..<5_000 where done.load(ordering: .relaxed) < 3 { usleep(1_000) }
        #expect(done.load(ordering: .relaxed) == 3)
        #expect(pool.depth == 0)
    }
}
