import TandemProtocol

/// The host's demand estimate for one VM: pure, called by the controller each round.
public enum DemandEstimate {
    /// Measured traffic is trusted; a VM sending at its limit (or losing packets to it) is
    /// probed upward: to at least its fair share at once (a VM below it that wants more is
    /// owed it now, not after rounds of doubling), and beyond by doubling. The guest's
    /// report may add to that, but never beyond the VM's fair share: one that wants more is
    /// taken to want its fair share.
    /// `limitMeasured`: the lowest limit in force while `measured` was measured (nil: `limit`).
    /// A VM is at its limit against that one: a limit raised since (between rounds) must not
    /// make a VM that was held back look as if it no longer wanted more.
    ///
    /// `reportIsNewer`: the report came after the start of the interval the host measured. A guest that says
    /// it sends less than the host last measured, and wants no more, is taken at its word
    /// for the demand (the rest goes to the others now, not a round later): a guest that
    /// under-claims only holds itself back.
    public static func host(measured: BitRate, limit: BitRate, limitMeasured: BitRate? = nil, drops: UInt64, report: DemandReport?, reportIsNewer: Bool = false,
                            fairShare: BitRate, capacity: BitRate, reserved: BitRate) -> BitRate {
        var measured = measured
        if reportIsNewer, let r = report, !r.wantsMore, r.unmetReservations == .zero, r.rate < measured { measured = r.rate }
        // The margin (1.1) and the at-limit threshold (0.95) must not meet: a VM given exactly
        // 1.1 x what it sends sends at 0.91 of its limit, which must not read as "at limit",
        // or the estimate would swing between the probe and the margin every round.
        var d = measured.scaled(by: 1.1)
        let held = limitMeasured ?? limit
        let atLimit = held > .zero && (measured >= held.scaled(by: 0.95) || drops > 0)
        // (From the limit it was measured under: between rounds the measurement is the same,
        // and a reallocation there must not double the probe again.)
        if atLimit { d = max(d, max(held.scaled(by: 2), held + capacity.scaled(by: 0.05), fairShare)) }
        if let r = report {
            var claim = r.rate
            if r.wantsMore { claim = max(max(claim, limit).scaled(by: 1.5), fairShare) }
            claim = claim + r.unmetReservations
            d = max(d, min(claim, fairShare))
        }
        return max(d, min(reserved, fairShare))
    }
}
