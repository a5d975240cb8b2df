import TandemProtocol

/// Weighted max-min allocation of one link's capacity. Pure.
///
/// 1. Guarantees first, up to demand.
/// 2. The rest by weight ("water-filling"), each VM up to min(demand, cap).
/// 3. What is left unused is spread by weight as headroom, up to each cap, so that a VM
///    whose demand rises can be seen rising.
/// Every VM's demand is taken as at least a small floor (2% of the link, within its cap,
/// and no more than half the link shared among all VMs), so an idle VM keeps a limit it can
/// start sending with. (Without the last bound, past 50 VMs the floors alone filled the link
/// and every VM was pinned at capacity / n whatever its demand.)
public enum Allocator {
    public struct Input: Equatable, Sendable {
        public var name: String
        public var weight: Double
        public var guarantee: BitRate
        /// nil: the link's capacity.
        public var cap: BitRate?
        public var demand: BitRate
        /// The group the VM shares with (a ``Group`` of the same call), or nil.
        public var group: String?
        public init(name: String, weight: Double, guarantee: BitRate = .zero, cap: BitRate? = nil, demand: BitRate, group: String? = nil) {
            self.name = name; self.weight = weight; self.guarantee = guarantee; self.cap = cap; self.demand = demand; self.group = group
        }
    }

    /// VMs that share a budget: the link is shared among the groups (and the VMs in none) by
    /// weight first, then each group's share among its VMs.
    public struct Group: Equatable, Sendable {
        public var name: String
        public var weight: Double
        public var guarantee: BitRate
        /// nil: the link's capacity.
        public var cap: BitRate?
        public init(name: String, weight: Double, guarantee: BitRate = .zero, cap: BitRate? = nil) {
            self.name = name; self.weight = weight; self.guarantee = guarantee; self.cap = cap
        }
    }

    public struct Output: Equatable, Sendable {
        public var name: String
        /// What the VM is given for its demand (max-min fair).
        public var allocation: BitRate
        /// The limit to enforce: the allocation plus its share of unused capacity.
        public var limit: BitRate
    }

    public static let floorFraction = 0.02

    /// Allocates the link among `vms`. With `groups`, in two levels, work conserving at
    /// both: the groups and the VMs in none share the link as above (a group's demand is
    /// what its VMs want together, within the group's cap; its guarantee is its own `min`),
    /// then each group's allocation (and limit) is shared among its VMs the same way. A VM
    /// naming a group not given is taken as in none. Without groups, every VM is a group of
    /// one and the result is the one-level allocation.
    public static func allocate(capacity: BitRate, _ vms: [Input], groups: [Group] = [], headroom: Bool = true) -> [Output] {
        let c = Double(capacity.bitsPerSecond)
        let n = vms.count
        guard n > 0 else { return [] }
        let caps = vms.map { min(Double(($0.cap ?? capacity).bitsPerSecond), c) }
        let weights = vms.map { Self.weight($0.weight) }
        let floor = min(c * floorFraction, c / 2 / Double(n))
        let floors = (0..<n).map { min(floor, caps[$0]) }
        // What each VM would take at most: its demand (floored), within its cap.
        let want = (0..<n).map { min(max(Double(vms[$0].demand.bitsPerSecond), floors[$0]), caps[$0]) }
        let guarantees = vms.map { Double($0.guarantee.bitsPerSecond) }

        // Each VM's group, by its place in `groups` (one lookup per VM); without any, one level.
        var groupOf = [Int](repeating: -1, count: n)
        if !groups.isEmpty {
            let index = Dictionary(groups.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
            for i in 0..<n { if let name = vms[i].group, let k = index[name] { groupOf[i] = k } }
        }
        func done(_ allocation: [Double], _ limit: [Double]) -> [Output] {
            (0..<n).map { Output(name: vms[$0].name, allocation: BitRate(clamping: allocation[$0]), limit: BitRate(clamping: limit[$0])) }
        }
        guard groupOf.contains(where: { $0 >= 0 }) else {
            let (a, l) = share(capacity: c, weights: weights, guarantees: guarantees, wants: want, caps: caps, headroom: headroom)
            return done(a, l)
        }

        // The first level's parties: each group with VMs in it, and each VM in none (a
        // party's entry is the VM, or -1 - the group's place in `members`).
        var members: [[Int]] = []
        var memberGroup: [Group] = []
        var slot = [Int](repeating: -1, count: groups.count)
        var party: [Int] = []
        for i in 0..<n {
            let k = groupOf[i]
            guard k >= 0 else { party.append(i); continue }
            if slot[k] >= 0 { members[slot[k]].append(i); continue }
            slot[k] = members.count
            party.append(-1 - members.count)
            members.append([i]); memberGroup.append(groups[k])
        }
        var pWeight: [Double] = [], pGuarantee: [Double] = [], pWant: [Double] = [], pCap: [Double] = []
        for p in party {
            if p >= 0 {
                pWeight.append(weights[p]); pCap.append(caps[p]); pWant.append(want[p]); pGuarantee.append(guarantees[p])
            } else {
                let g = memberGroup[-1 - p], m = members[-1 - p]
                let cap = min(Double((g.cap ?? capacity).bitsPerSecond), c, m.reduce(0) { $0 + caps[$1] })
                pWeight.append(Self.weight(g.weight)); pCap.append(cap)
                pWant.append(min(m.reduce(0) { $0 + want[$1] }, cap))
                pGuarantee.append(Double(g.guarantee.bitsPerSecond))
            }
        }
        let (pAllocation, pLimit) = share(capacity: c, weights: pWeight, guarantees: pGuarantee, wants: pWant, caps: pCap, headroom: headroom)

        // The second level: a group's allocation and limit among its VMs.
        var allocation = [Double](repeating: 0, count: n), limit = allocation
        for (k, p) in party.enumerated() {
            guard p < 0 else { allocation[p] = pAllocation[k]; limit[p] = pLimit[k]; continue }
            let m = members[-1 - p]
            let (a, l) = share(capacity: pAllocation[k], weights: m.map { weights[$0] }, guarantees: m.map { guarantees[$0] },
                               wants: m.map { want[$0] }, caps: m.map { caps[$0] }, headroom: headroom, headroomCapacity: pLimit[k])
            for (j, i) in m.enumerated() { allocation[i] = a[j]; limit[i] = l[j] }
        }
        return done(allocation, limit)
    }

    static func weight(_ w: Double) -> Double { w.isFinite && w > 0 ? w : 1 }

    /// One level: guarantees first (up to what each wants), then `capacity` by weight up to
    /// what each wants; the limits add what is left by weight up to each cap, out of
    /// `headroomCapacity` (the same capacity at the first level; a group's limit at the second).
    static func share(capacity: Double, weights: [Double], guarantees: [Double], wants: [Double], caps: [Double], headroom: Bool,
                      headroomCapacity: Double? = nil) -> (allocation: [Double], limit: [Double]) {
        var a = zip(guarantees, wants).map { min($0, $1) }
        // If guarantees alone overflow (a configuration the parser refuses), scale them down.
        let g = a.reduce(0, +)
        if g > capacity && g > 0 { a = a.map { $0 * capacity / g } }
        waterFill(&a, limits: wants, weights: weights, capacity: capacity)
        var limit = a
        if headroom { waterFill(&limit, limits: caps, weights: weights, capacity: headroomCapacity ?? capacity) }
        return (a, limit)
    }

    /// Raises `a` by weight, each up to `limits`, until the sum reaches `capacity` or all
    /// are at their limits: every one still below its limit rises by `level × weight`, the
    /// same level for all. Sorted by the level at which each reaches its limit, that is
    /// O(n log n) (raising step by step, one VM reaching its limit per step, was O(n²)).
    static func waterFill(_ a: inout [Double], limits: [Double], weights: [Double], capacity: Double) {
        var remaining = capacity - a.reduce(0, +)
        guard remaining > 0.5 else { return }
        // The level at which each VM below its limit gets there.
        var rising: [(level: Double, i: Int)] = []
        rising.reserveCapacity(a.count)
        for i in a.indices where a[i] < limits[i] - 0.5 { rising.append(((limits[i] - a[i]) / weights[i], i)) }
        rising.sort { $0.level < $1.level }
        // The weight still rising from each place on, summed from the end (not a running
        // total taken down: with weights far apart that rounds to 0, or below).
        var still = [Double](repeating: 0, count: rising.count + 1)
        for k in stride(from: rising.count - 1, through: 0, by: -1) { still[k] = still[k + 1] + weights[rising[k].i] }
        var level = 0.0
        var k = 0
        while k < rising.count {
            let (top, i) = rising[k]
            let cost = (top - level) * still[k]
            // Not enough left to bring the next one to its limit: all still rising share it.
            guard cost <= remaining else { break }
            remaining -= cost
            level = top
            a[i] = limits[i]
            k += 1
        }
        guard k < rising.count, still[k] > 0 else { return }
        let final = level + remaining / still[k]
        for (_, i) in rising[k...] { a[i] = min(limits[i], a[i] + final * weights[i]) }
    }

    /// Each VM's fair share: what it would get if every VM wanted everything (guarantees,
    /// weights and caps respected). A guest's own claims never move it beyond this.
    public static func fairShares(capacity: BitRate, _ vms: [Input], groups: [Group] = []) -> [String: BitRate] {
        let all = vms.map { var v = $0; v.demand = capacity; return v }
        return Dictionary(allocate(capacity: capacity, all, groups: groups, headroom: false).map { ($0.name, $0.allocation) }, uniquingKeysWith: { a, _ in a })
    }

    /// Jain's fairness index of rates normalised by weight: 1 is perfectly fair, 1/n is one
    /// VM taking everything. nil without at least one positive rate.
    public static func jainIndex(_ samples: [(rate: BitRate, weight: Double)]) -> Double? {
        let x = samples.map { Double($0.rate.bitsPerSecond) / ($0.weight > 0 ? $0.weight : 1) }
        let s = x.reduce(0, +), s2 = x.reduce(0) { $0 + $1 * $1 }
        guard !x.isEmpty, s2 > 0 else { return nil }
        return s * s / (Double(x.count) * s2)
    }
}
