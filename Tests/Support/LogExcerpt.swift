/// What a failing test shows of a daemon's log: its tail, and, when the daemon crashed, the
/// head of the crash report too (the runtime's "Fatal error" line and the crashed thread
/// come first in it; with every thread's backtrace after them, a tail alone shows only the
/// last thread's, as a VM test's failure in CI did on 2026-12-07).
public enum LogExcerpt {
    static let crashMarkers = ["Fatal error", "Assertion failed", "Precondition failed", "💣 Program crashed", "*** Program crashed"]

    public static func of(_ log: String, tail: Int = 2000, crash: Int = 4000) -> String {
        guard let start = crashMarkers.compactMap({ log.range(of: $0)?.lowerBound }).min() else { return String(log.suffix(tail)) }
        // From the start of the line the first marker is on.
        let line = log[..<start].lastIndex(of: "\n").map { log.index(after: $0) } ?? log.startIndex
        let head = log[line...].prefix(crash)
        if head.endIndex == log.endIndex { return String(log[line...]) }
        return "\(log[line...].prefix(crash))\n[… crash report cut …]\n\(log.suffix(tail))"
    }
}
