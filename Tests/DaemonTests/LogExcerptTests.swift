import Testing
import TandemTestSupport

/// What a failing test prints of a daemon's log.
struct LogExcerptTests {
    @Test func aCrashShowsItsHeadAndTheTail() {
        let threads = (0..<200).map { "Thread \($0):\n  0 poll + 79 in libc.so.6\n" }.joined()
        let log = "info: agent started\nFatal error: Index out of range\n💣 Program crashed: Illegal instruction\nThread 3 crashed:\n  0 Agent.tick()\n" + threads + "Backtrace took 1s\n"
        let e = LogExcerpt.of(log)
        #expect(e.hasPrefix("Fatal error: Index out of range"))
        #expect(e.contains("Thread 3 crashed"))
        #expect(e.hasSuffix("Backtrace took 1s\n"))
        #expect(!e.contains("agent started"))
    }

    @Test func withoutACrashItIsTheTail() {
        let log = String(repeating: "debug: tick\n", count: 1000)
        #expect(LogExcerpt.of(log, tail: 100) == String(log.suffix(100)))
        let short = "x\nFatal error: boom\n"
        #expect(LogExcerpt.of(short) == "Fatal error: boom\n")
    }
}
