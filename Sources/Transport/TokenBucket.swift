/// A token bucket: `rate` a second, up to `burst` at once (a guest's frames at the host, a
/// client's lines at a line server, reservation requests in the agent). Pure: the caller
/// gives the time.
public struct TokenBucket: Sendable, Equatable {
    public let rate: Double
    public let burst: Double
    var tokens: Double
    var last: Double?

    public init(rate: Double, burst: Double) { self.rate = rate; self.burst = burst; tokens = burst }

    /// Takes one token at `now` if there is one.
    public mutating func take(at now: Double) -> Bool {
        refill(now)
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }

    /// Full again (nothing taken for a while): such a bucket can be forgotten.
    public mutating func isFull(at now: Double) -> Bool { refill(now); return tokens >= burst }

    mutating func refill(_ now: Double) {
        if let last, now > last { tokens = min(burst, tokens + (now - last) * rate) }
        last = now
    }
}
