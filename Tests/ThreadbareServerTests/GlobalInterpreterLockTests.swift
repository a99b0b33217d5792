import Foundation
import Synchronization
import Testing
@testable import ThreadbareServer

/// The GIL's own rules, checked with threads that do nothing but compute and pass check points,
/// and with the lock's own figures rather than wall-clock bounds.
@Suite("GlobalInterpreterLock follows CPython's algorithm", .serialized)
struct GlobalInterpreterLockTests {
    /// State only a lock holder touches; the GIL is what makes it safe.
    final class HeldByTheLock: @unchecked Sendable {
        var lastRunner = -1
        var retakenWithoutAnotherRunner = 0
        var forcedDrops = 0
    }

    /// Runs `threads` threads that take the lock and compute through check points until
    /// `duration` has passed, as CPU-bound Python threads do.
    private func runComputingThreads(_ threads: Int, on lock: GlobalInterpreterLock, for duration: TimeInterval,
                                     held: HeldByTheLock) {
        let deadline = Date().addingTimeInterval(duration)
        let group = DispatchGroup()
        for me in 0..<threads {
            group.enter()
            Thread.detachNewThread {
                _ = lock.acquire()
                held.lastRunner = me
                while Date() < deadline {
                    _ = CPUWork.run(units: 20)
                    if lock.checkpoint() > 0 {
                        held.forcedDrops += 1
                        // Back with the lock after being asked to drop it: someone else must
                        // have run in between.
                        if held.lastRunner == me { held.retakenWithoutAnotherRunner += 1 }
                    }
                    held.lastRunner = me
                }
                lock.release()
                group.leave()
            }
        }
        group.wait()
    }

    @Test func aHolderAskedToDropDoesNotTakeTheLockStraightBack() {
        let lock = GlobalInterpreterLock(switchInterval: .milliseconds(1), statistics: LockStatistics(domain: 0, metrics: MetricsExport()))
        let held = HeldByTheLock()
        runComputingThreads(2, on: lock, for: 0.3, held: held)
        let figures = lock.statistics.snapshot()
        #expect(held.forcedDrops >= 5, "the threads should have been made to switch")
        #expect(held.retakenWithoutAnotherRunner == 0)
        // Each forced drop answered a request; so may the final release.
        #expect(figures.dropsHonoured >= held.forcedDrops)
        #expect(figures.dropRequests >= held.forcedDrops)
        #expect(figures.mostHolders == 1)
        #expect(figures.handovers >= held.forcedDrops)
    }

    /// Three computing threads: when one waiter's interval runs out just after another waiter
    /// took over, the switch number has moved and it must wait a whole new interval instead of
    /// cutting the new holder short. So no holder is asked to drop before one full interval.
    @Test func noHolderIsAskedToDropBeforeAFullInterval() throws {
        let interval = Duration.milliseconds(2)
        let lock = GlobalInterpreterLock(switchInterval: interval, statistics: LockStatistics(domain: 0, metrics: MetricsExport()))
        runComputingThreads(3, on: lock, for: 0.3, held: HeldByTheLock())
        let figures = lock.statistics.snapshot()
        #expect(figures.dropRequests >= 5)
        let shortest = try #require(figures.shortestTenureAtDropRequest)
        #expect(shortest >= 2_000_000, "a holder was asked to drop after \(shortest) ns")
        #expect(figures.mostHolders == 1)
    }

    @Test func aVoluntaryReleaseLetsAWaiterIn() {
        let lock = GlobalInterpreterLock(switchInterval: .seconds(10), statistics: LockStatistics(domain: 0, metrics: MetricsExport()))
        _ = lock.acquire()
        let waiterHasIt = Atomic<Bool>(false)
        let waiter = Thread {
            _ = lock.acquire()
            waiterHasIt.store(true, ordering: .releasing)
            lock.release()
        }
        waiter.start()
        Thread.sleep(forTimeInterval: 0.05)
        let tooEarly = waiterHasIt.load(ordering: .acquiring)
        #expect(!tooEarly)
        // Releasing wakes the waiter long before its 10 s interval, and asks nothing of it.
        lock.release()
        let deadline = Date().addingTimeInterval(5)
        while !waiterHasIt.load(ordering: .acquiring) && Date() < deadline { Thread.sleep(forTimeInterval: 0.005) }
        let inTime = waiterHasIt.load(ordering: .acquiring)
        #expect(inTime)
        #expect(lock.statistics.snapshot().dropRequests == 0)
    }
}
