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
        public init(name: String, weight: Double, guarantee: BitRate = .zero, cap: BitRate? = nil, demand: BitRate) {
            self.name = name; self.weight = weight; self.guarantee = guarantee; self.cap = cap; self.demand = demand
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

    public static func allocate(capacity: BitRate, _ vms: [Input], headroom: Bool = true) -> [Output] {
        let c = Double(capacity.bitsPerSecond)
        let n = vms.count
        guard n > 0 else { return [] }
        let caps = vms.map { min(Double(($0.cap ?? capacity).bitsPerSecond), c) }
        let weights = vms.map { $0.weight.isFinite && $0.weight > 0 ? $0.weight : 1 }
        let floor = min(c * floorFraction, c / 2 / Double(n))
        let floors = (0..<n).map { min(floor, caps[$0]) }
        // What each VM would take at most: its demand (floored), within its cap.
        let want = (0..<n).map { min(max(Double(vms[$0].demand.bitsPerSecond), floors[$0]), caps[$0]) }
        var a = (0..<n).map { min(Double(vms[$0].guarantee.bitsPerSecond), want[$0]) }
        // If guarantees alone overflow (a config the parser refuses), scale them down.
        let g = a.reduce(0, +)
        if g > c { a = a.map { $0 * c / g } }
        waterFill(&a, limits: want, weights: weights, capacity: c)
        var limit = a
        if headroom { waterFill(&limit, limits: caps, weights: weights, capacity: c) }
        return (0..<n).map { Output(name: vms[$0].name, allocation: BitRate(clamping: a[$0]), limit: BitRate(clamping: limit[$0])) }
    }

    /// Raises `a` by weight, each up to `limits`, until the sum reaches `capacity` or all
    /// are at their limits.
    static func waterFill(_ a: inout [Double], limits: [Double], weights: [Double], capacity: Double) {
        var remaining = capacity - a.reduce(0, +)
        var active = Set(a.indices.filter { a[$0] < limits[$0] - 0.5 })
        while remaining > 0.5, !active.isEmpty {
            let wsum = active.reduce(0) { $0 + weights[$1] }
            // The smallest step at which some active VM reaches its limit.
            var step = remaining / wsum
            for i in active { step = min(step, (limits[i] - a[i]) / weights[i]) }
            for i in active {
                a[i] += step * weights[i]
                remaining -= step * weights[i]
            }
            active = active.filter { a[$0] < limits[$0] - 0.5 }
        }
    }

    /// Each VM's fair share: what it would get if every VM wanted everything (guarantees,
    /// weights and caps respected). A guest's own claims never move it beyond this.
    public static func fairShares(capacity: BitRate, _ vms: [Input]) -> [String: BitRate] {
        let all = vms.map { var v = $0; v.demand = capacity; return v }
        return Dictionary(allocate(capacity: capacity, all, headroom: false).map { ($0.name, $0.allocation) }, uniquingKeysWith: { a, _ in a })
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
