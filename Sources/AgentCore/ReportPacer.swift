import TandemProtocol

/// Decides which demand reports go to the host: those that change what the host would do,
/// and one at least every ``Limits/reportKeepaliveSeconds``. A steady or idle VM then costs
/// the host one report a second instead of ten, and a change still goes out on the next
/// report interval. Pure: the caller gives the time.
public struct ReportPacer: Sendable {
    var last: DemandReport?
    var lastTime = -1e9

    public init() {}

    /// Forget what was sent: the next report goes out (a new session or welcome).
    public mutating func reset() { last = nil }

    /// Whether `r` should be sent at `now`; if so, it is remembered as sent. `slack` is how
    /// early a keepalive may go (half a tick, as ticks come a hair early or late).
    public mutating func shouldSend(_ r: DemandReport, at now: Double, slack: Double = 0) -> Bool {
        guard let l = last, now - lastTime < Limits.reportKeepaliveSeconds - slack, !Self.differs(r, l) else {
            last = r
            lastTime = now
            return true
        }
        return false
    }

    /// What the host acts on: the epoch it enforces (a lost allocation shows as an old one),
    /// whether it wants more (overall and per class), reservations not met, the rate
    /// (by more than 10%, and 100 kbit/s), and freshly sampled flows.
    static func differs(_ r: DemandReport, _ l: DemandReport) -> Bool {
        if r.epoch != l.epoch || r.wantsMore != l.wantsMore || r.unmetReservations != l.unmetReservations || !r.flows.isEmpty { return true }
        let a = Double(r.rate.bitsPerSecond), b = Double(l.rate.bitsPerSecond)
        if abs(a - b) > max(0.1 * max(a, b), 100_000) { return true }
        if r.classes.count != l.classes.count { return true }
        for (x, y) in zip(r.classes, l.classes) where x.name != y.name || x.wantsMore != y.wantsMore { return true }
        return false
    }
}
