import Foundation
import Testing
@testable import TandemTransport
#if canImport(Glibc)
import Glibc
#endif

/// The daemon's loop thread (issue #17): the loop's task, what it awaits, and the timers
/// that drive it run on one thread.
// (A loop that is never woken leaves its test waiting: the limit makes that a failure.)
@Suite(.serialized, .timeLimit(.minutes(1))) struct DaemonLoopTests {
    actor Counter {
        var n = 0
        var onLoop: [Bool] = []
        func bump(_ loop: DaemonLoop) { n += 1; onLoop.append(loop.isCurrent) }
    }

    static func nonisolatedWork(_ loop: DaemonLoop) async -> Bool { await Task.yield(); return loop.isCurrent }

    @Test func theTaskAndWhatItAwaitsRunOnTheLoopThread() async throws {
        let loop = DaemonLoop(name: "test-loop")
        loop.start()
        defer { loop.stop() }
        let (ticks, sink) = AsyncStream.makeStream(of: Int.self)
        loop.every(0.01) { sink.yield(0) }
        let counter = Counter()
        let seen: [Bool] = await withTaskGroup(of: [Bool].self) { group in
            group.addTask(executorPreference: loop) {
                var seen: [Bool] = []
                var n = 0
                for await _ in ticks {
                    seen.append(loop.isCurrent)
                    await counter.bump(loop)
                    seen.append(await Self.nonisolatedWork(loop))
                    n += 1
                    if n == 5 { break }
                }
                return seen
            }
            return await group.next() ?? []
        }
        sink.finish()
        #expect(seen.count == 10 && seen.allSatisfy { $0 }, "\(seen)")
        #expect(await counter.onLoop == [true, true, true, true, true], "the actor ran on its caller's task executor")
        #expect(!loop.isCurrent)
    }

    @Test func aYieldFromAnotherThreadWakesTheLoop() async throws {
        let loop = DaemonLoop(name: "test-loop")
        loop.start()
        defer { loop.stop() }
        let (events, sink) = AsyncStream.makeStream(of: Double.self)
        let t = Thread { for _ in 0..<3 { usleep(20_000); sink.yield(POSIX.now()) } }
        let lags: [Double] = await withTaskGroup(of: [Double].self) { group in
            group.addTask(executorPreference: loop) {
                var lags: [Double] = []
                for await sent in events {
                    #expect(loop.isCurrent)
                    lags.append(POSIX.now() - sent)
                    if lags.count == 3 { break }
                }
                return lags
            }
            t.start()
            return await group.next() ?? []
        }
        #expect(lags.count == 3)
        // (Woken by the yield, not by a timeout: nothing else would ever wake it.)
        print("daemon loop: resumed \(lags.map { String(format: "%.3f", $0 * 1000) }) ms after a yield from another thread")
    }

    @Test func timersFireOnTheirDeadlinesAndCancel() async throws {
        let loop = DaemonLoop(name: "test-loop")
        loop.start()
        defer { loop.stop() }
        final class Log: @unchecked Sendable { let lock = NSLock(); var events: [(String, Double, Bool)] = [] }
        let log = Log()
        let t0 = POSIX.now()
        let periodic = loop.every(0.02) { log.lock.withLock { log.events.append(("every", POSIX.now() - t0, loop.isCurrent)) } }
        loop.after(0.05) { log.lock.withLock { log.events.append(("after", POSIX.now() - t0, loop.isCurrent)) } }
        let cancelled = loop.after(0.06) { log.lock.withLock { log.events.append(("cancelled", POSIX.now() - t0, loop.isCurrent)) } }
        loop.cancel(cancelled)
        try await Task.sleep(for: .milliseconds(210))
        loop.cancel(periodic)
        // (A firing already taken from the list when cancel came may still land: one period.)
        try await Task.sleep(for: .milliseconds(25))
        let frozen = log.lock.withLock { log.events }
        try await Task.sleep(for: .milliseconds(60))
        let events = log.lock.withLock { log.events }
        #expect(events.count == frozen.count, "nothing fires after cancel")
        #expect(events.allSatisfy { $0.2 }, "timers fire on the loop's thread")
        #expect(!events.contains { $0.0 == "cancelled" })
        let after = events.filter { $0.0 == "after" }
        #expect(after.count == 1 && after[0].1 >= 0.05)
        let every = events.filter { $0.0 == "every" }.map(\.1)
        // Deadlines are absolute: the k-th firing is never before k periods.
        #expect(every.count >= 5)
        for (k, at) in every.enumerated() { #expect(at >= 0.02 * Double(k + 1) - 0.001, "firing \(k + 1) at \(at)") }
    }

    /// A timer cancelled by one fired before it in the same turn does not fire (found in
    /// review: due timers were collected first and all fired).
    @Test func aTimerCancelledInTheSameTurnDoesNotFire() async throws {
        let loop = DaemonLoop(name: "test-loop")
        loop.start()
        defer { loop.stop() }
        final class Log: @unchecked Sendable { let lock = NSLock(); var fired: [String] = [] }
        let log = Log()
        // Both made on the loop's thread inside one callback: both are due in its next turn.
        loop.after(0) {
            final class Box: @unchecked Sendable { var id = 0 }
            let second = Box()
            loop.after(0) { log.lock.withLock { log.fired.append("first") }; loop.cancel(second.id) }
            second.id = loop.after(0) { log.lock.withLock { log.fired.append("second") } }
        }
        try await Task.sleep(for: .milliseconds(50))
        #expect(log.lock.withLock { log.fired } == ["first"])
    }

    /// A task that prefers a loop which stopped meanwhile still finishes (elsewhere) rather
    /// than hang: its job goes to the global executor.
    @Test func aTaskResumedAfterStopStillRuns() async throws {
        let loop = DaemonLoop(name: "test-loop")
        loop.start()
        let (stream, sink) = AsyncStream.makeStream(of: Int.self)
        let task = Task(executorPreference: loop) { () -> Bool in
            var it = stream.makeAsyncIterator()
            _ = await it.next()
            return loop.isCurrent
        }
        try await Task.sleep(for: .milliseconds(50))
        loop.stop()
        sink.yield(1)
        #expect(await task.value == false, "ran, and not on the stopped loop")
    }

    @Test func stopEndsTheThread() async throws {
        let loop = DaemonLoop(name: "test-loop")
        loop.start()
        final class Flag: @unchecked Sendable { var fired = false }
        let flag = Flag()
        loop.after(0) { flag.fired = true }
        try await Task.sleep(for: .milliseconds(50))
        loop.stop()
        #expect(flag.fired)
        loop.after(0) { flag.fired = false }
        try await Task.sleep(for: .milliseconds(30))
        #expect(flag.fired, "a stopped loop fires nothing")
    }
}
