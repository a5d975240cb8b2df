import TandemProtocol

/// Admission of a guest's reservation: pure, over the VM's policy, what it holds, its link
/// and what the link's other VMs have committed.
public enum Admission {
    /// What another VM on the link has committed: its guarantee, or its reservations if more.
    public struct Commitment: Sendable, Equatable {
        public var guarantee: BitRate
        public var reserved: BitRate
        public init(guarantee: BitRate, reserved: BitRate) { self.guarantee = guarantee; self.reserved = reserved }
    }

    public enum Decision: Sendable, Equatable {
        /// The same reservation (id, rate, selector) is held already: granted again.
        case alreadyHeld
        case granted(GrantedReservation)
        /// Refused, with the reason the guest is told.
        case refused(String)
    }

    /// A VM's reservations stay within its guarantee, or (if its link allows) within the
    /// link's unreserved capacity, the VM's cap and its fair share: the allocator backs a
    /// VM's reservations up to its fair share, and one VM cannot take the capacity that the
    /// others' fair shares would reserve.
    public static func decide(_ r: ReserveRequest, held: [String: GrantedReservation], maxHeld: Int, policy: VMPolicy,
                              link: HostConfig.LinkConfig, others: [Commitment], fairShare: BitRate) -> Decision {
        if let existing = held[r.id] {
            if existing.rate == r.rate && existing.selector == r.selector { return .alreadyHeld }
            return .refused("id \(r.id) is already a reservation of \(existing.rate) for \(existing.selector)")
        }
        guard held.count < maxHeld else {
            return .refused("the VM already holds \(held.count) reservations, the most allowed")
        }
        let used = held.values.reduce(BitRate.zero) { $0 + $1.rate }
        let g = policy.guarantee
        var fits = used + r.rate <= g
        if !fits && link.reserveBeyondGuarantee {
            let committed = others.reduce(BitRate.zero) { $0 + max($1.guarantee, $1.reserved) }
            fits = committed + max(g, used + r.rate) <= link.capacity && (policy.cap.map { used + r.rate <= $0 } ?? true)
                && used + r.rate <= max(g, fairShare)
        }
        guard fits else {
            let beyond = link.reserveBeyondGuarantee
                ? (used + r.rate > max(g, fairShare) ? " nor in its fair share \(fairShare)" : " and the link has no unreserved capacity for it") : ""
            return .refused("\(used) already reserved of the VM's \(g) guarantee; \(r.rate) more does not fit\(beyond)")
        }
        return .granted(GrantedReservation(id: r.id, rate: r.rate, selector: r.selector))
    }
}
