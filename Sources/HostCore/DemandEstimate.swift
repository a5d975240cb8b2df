import TandemProtocol

/// The host's demand estimate for one VM: pure, called by the controller each round.
public enum DemandEstimate {
    /// Measured traffic is trusted; a VM sending at its limit (or losing packets to it) is
    /// probed upward. The guest's report may add to that, but never beyond the VM's fair share.
    public static func host(measured: BitRate, limit: BitRate, drops: UInt64, report: DemandReport?, fairShare: BitRate,
                            capacity: BitRate, reserved: BitRate) -> BitRate {
        // The margin (1.1) and the at-limit threshold (0.95) must not meet: a VM given exactly
        // 1.1 x what it sends sends at 0.91 of its limit, which must not read as "at limit",
        // or the estimate would swing between the probe and the margin every round.
        var d = measured.scaled(by: 1.1)
        let atLimit = limit > .zero && (measured >= limit.scaled(by: 0.95) || drops > 0)
        if atLimit { d = max(d, max(limit.scaled(by: 2), limit + capacity.scaled(by: 0.05))) }
        if let r = report {
            var claim = r.rate
            if r.wantsMore { claim = max(claim, limit).scaled(by: 1.5) }
            claim = claim + r.unmetReservations
            d = max(d, min(claim, fairShare))
        }
        return max(d, min(reserved, fairShare))
    }
}
