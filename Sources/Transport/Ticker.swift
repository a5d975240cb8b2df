#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Calls `tick` every `period` seconds from a thread of its own, on absolute deadlines of
/// the monotonic clock (no drift; a late tick is not made up twice). A daemon's round timer:
/// cheaper than `Task.sleep` in a loop, which goes through the dispatch manager's timers and
/// a worker thread each time.
public final class Ticker: @unchecked Sendable {
    let period: Double
    let tick: @Sendable () -> Void
    private let lock = NSLock()
    private var stopped = false
    private let wake = WakePipe()

    public init(period: Double, _ tick: @escaping @Sendable () -> Void) {
        self.period = max(period, 0.001)
        self.tick = tick
    }

    public func start() {
        let t = Thread { [self] in
            var next = POSIX.now() + period
            while !lock.withLock({ stopped }) {
                let wait = next - POSIX.now()
                if wait > 0 {
                    // poll on the wake pipe: stop() ends the wait at once.
                    _ = POSIX.poll([(wake.readFD, Int16(POLLIN))], timeoutMilliseconds: Int32((wait * 1000).rounded(.up)))
                    if POSIX.now() < next { continue }
                }
                if lock.withLock({ stopped }) { break }
                tick()
                next += period
                // Fell behind (a stalled process): start again from now rather than burst.
                if next < POSIX.now() { next = POSIX.now() + period }
            }
        }
        t.name = "tandem-ticker"
        t.start()
    }

    public func stop() {
        lock.withLock { stopped = true }
        wake.wake()
    }
}
