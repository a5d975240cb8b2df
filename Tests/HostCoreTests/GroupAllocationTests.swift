import Testing
import TandemTestSupport
import TandemProtocol
@testable import HostCore

/// The allocator's second level (issue #17): groups share the link by weight, then each
/// group's share is split among its VMs by theirs, work conserving at both levels.
@Suite struct GroupAllocationTests {
    let link = BitRate.gbit(1)

    func mbit(_ outs: [Allocator.Output]) -> [String: Double] {
        Dictionary(uniqueKeysWithValues: outs.map { ($0.name, Double($0.allocation.bitsPerSecond) / 1e6) })
    }

    @Test func twoTenantsShareTheLinkThenTheirVMsShareTheirHalf() {
        let groups = [Allocator.Group(name: "a", weight: 1), Allocator.Group(name: "b", weight: 1)]
        let vms = [Allocator.Input(name: "a1", weight: 1, demand: link, group: "a"),
                   Allocator.Input(name: "a2", weight: 3, demand: link, group: "a"),
                   Allocator.Input(name: "b1", weight: 1, demand: link, group: "b")]
        let a = mbit(Allocator.allocate(capacity: link, vms, groups: groups))
        #expect(abs(a["a1"]! - 125) < 0.01 && abs(a["a2"]! - 375) < 0.01 && abs(a["b1"]! - 500) < 0.01, "\(a)")
        // Without groups the same VMs share by their own weights: 200 / 600 / 200.
        let flat = mbit(Allocator.allocate(capacity: link, vms.map { var v = $0; v.group = nil; return v }))
        #expect(abs(flat["a2"]! - 600) < 0.01 && abs(flat["b1"]! - 200) < 0.01, "\(flat)")
    }

    @Test func whatAGroupLeavesGoesToTheOthersAndWithinAGroupToItsBusyVMs() {
        let groups = [Allocator.Group(name: "a", weight: 1), Allocator.Group(name: "b", weight: 1)]
        let vms = [Allocator.Input(name: "a1", weight: 1, demand: .mbit(50), group: "a"),
                   Allocator.Input(name: "a2", weight: 1, demand: .mbit(100), group: "a"),
                   Allocator.Input(name: "b1", weight: 1, demand: link, group: "b"),
                   Allocator.Input(name: "b2", weight: 1, demand: .mbit(100), group: "b")]
        let a = mbit(Allocator.allocate(capacity: link, vms, groups: groups))
        // a wants 150 in all and gets it; b gets the 850 left, b2 its 100, b1 the rest.
        #expect(abs(a["a1"]! - 50) < 0.01 && abs(a["a2"]! - 100) < 0.01 && abs(a["b2"]! - 100) < 0.01 && abs(a["b1"]! - 750) < 0.01, "\(a)")
    }

    @Test func aGroupsCapAndGuaranteeHoldForItsVMsTogether() {
        let groups = [Allocator.Group(name: "capped", weight: 3, cap: .mbit(300)), Allocator.Group(name: "sure", weight: 1, guarantee: .mbit(600))]
        let vms = [Allocator.Input(name: "c1", weight: 1, demand: link, group: "capped"),
                   Allocator.Input(name: "c2", weight: 1, demand: link, group: "capped"),
                   Allocator.Input(name: "s1", weight: 1, guarantee: .mbit(100), demand: link, group: "sure"),
                   Allocator.Input(name: "s2", weight: 1, demand: link, group: "sure"),
                   Allocator.Input(name: "alone", weight: 1, demand: link)]
        let outs = Allocator.allocate(capacity: link, vms, groups: groups)
        let a = mbit(outs)
        #expect(a["c1"]! + a["c2"]! <= 300.001, "the group's cap over both its VMs: \(a)")
        #expect(a["s1"]! + a["s2"]! >= 600 - 0.001, "the group's guarantee: \(a)")
        #expect(a["s1"]! >= 100, "a VM's own guarantee within its group's")
        #expect(abs(a.values.reduce(0, +) - 1000) < 0.01, "work conserving: \(a)")
        // Limits: the capped group's headroom is within its cap too.
        let limits = outs.filter { $0.name.hasPrefix("c") }.reduce(0) { $0 + Double($1.limit.bitsPerSecond) / 1e6 }
        #expect(limits <= 300.001)
    }

    @Test func withoutGroupsOrWithGroupsOfOneTheAllocationIsTheFlatOne() {
        var rng = SplitMix(seed: 7)
        for _ in 0..<200 {
            let n = Int.random(in: 1...12, using: &rng)
            let vms = (0..<n).map { i in
                Allocator.Input(name: "v\(i)", weight: Double.random(in: 0.5...4, using: &rng), guarantee: .mbit(UInt64.random(in: 0...50, using: &rng)),
                                cap: Bool.random(using: &rng) ? .mbit(UInt64.random(in: 60...1000, using: &rng)) : nil,
                                demand: .mbit(UInt64.random(in: 0...800, using: &rng)))
            }
            // Each VM alone in a group with its own weight, guarantee and cap.
            let groups = vms.map { Allocator.Group(name: "g-" + $0.name, weight: $0.weight, guarantee: $0.guarantee, cap: $0.cap) }
            let grouped = vms.map { var v = $0; v.group = "g-" + $0.name; return v }
            let flat = Allocator.allocate(capacity: link, vms)
            let ones = Allocator.allocate(capacity: link, grouped, groups: groups)
            for (f, o) in zip(flat, ones) {
                #expect(abs(Double(f.allocation.bitsPerSecond) - Double(o.allocation.bitsPerSecond)) <= 2, "\(f) against \(o)")
                #expect(abs(Double(f.limit.bitsPerSecond) - Double(o.limit.bitsPerSecond)) <= 2, "\(f) against \(o)")
            }
            // Groups that no VM names change nothing either.
            #expect(Allocator.allocate(capacity: link, vms, groups: [Allocator.Group(name: "nobody", weight: 9, guarantee: .mbit(500))]) == flat)
        }
    }

    /// Randomized inputs against a reference written another way: at each level the
    /// allocation is `min(want, guarantee + λ·weight)` with the water level λ found by
    /// bisection (the allocator raises levels step by step instead). Plus the properties
    /// the issue names.
    @Test func matchesAReferenceWaterFillingOnRandomInputs() {
        var rng = SplitMix(seed: 2026)
        let c = Double(link.bitsPerSecond)
        for round in 0..<300 {
            var groups: [Allocator.Group] = []
            var vms: [Allocator.Input] = []
            var linkHeld = 0.0
            for g in 0..<Int.random(in: 0...6, using: &rng) {
                let gMin = Bool.random(using: &rng) ? Double.random(in: 0...(c / 8), using: &rng) : 0
                guard linkHeld + gMin <= c else { continue }
                linkHeld += gMin
                let cap: BitRate? = Int.random(in: 0..<3, using: &rng) == 0 ? BitRate(clamping: Double.random(in: (gMin + 1)...c, using: &rng)) : nil
                groups.append(Allocator.Group(name: "g\(g)", weight: Double.random(in: 0.25...4, using: &rng), guarantee: BitRate(clamping: gMin), cap: cap))
                var inGroup = 0.0
                for v in 0..<Int.random(in: 1...5, using: &rng) {
                    let vMin = Bool.random(using: &rng) ? Double.random(in: 0...max(0, gMin - inGroup), using: &rng) : 0
                    inGroup += vMin
                    vms.append(Self.randomVM("g\(g)v\(v)", group: "g\(g)", guarantee: vMin, &rng))
                }
            }
            for v in 0..<Int.random(in: 0...5, using: &rng) {
                let vMin = Bool.random(using: &rng) ? Double.random(in: 0...max(0, (c - linkHeld) / 4), using: &rng) : 0
                linkHeld += vMin
                vms.append(Self.randomVM("u\(v)", group: nil, guarantee: vMin, &rng))
            }
            guard !vms.isEmpty else { continue }
            let outs = Allocator.allocate(capacity: link, vms, groups: groups)
            let ref = Reference.allocate(capacity: c, vms, groups: groups)
            let n = Double(vms.count)
            let floor = min(c * Allocator.floorFraction, c / 2 / n)
            for (i, o) in outs.enumerated() {
                let v = vms[i]
                let a = Double(o.allocation.bitsPerSecond)
                let cap = min(Double((v.cap ?? link).bitsPerSecond), c)
                let want = min(max(Double(v.demand.bitsPerSecond), min(floor, cap)), cap)
                #expect(abs(a - ref[i]) <= 2 + 1e-6 * c, "round \(round) \(v.name): \(a) against the reference's \(ref[i])")
                #expect(a <= want + 1 && Double(o.limit.bitsPerSecond) <= cap + 1, "round \(round) \(v.name): within its demand and cap")
                #expect(a >= min(Double(v.guarantee.bitsPerSecond), want) - 2, "round \(round) \(v.name): its guarantee when it wants it")
                #expect(o.limit >= o.allocation)
            }
            for g in groups {
                let members = outs.indices.filter { vms[$0].group == g.name }
                let total = members.reduce(0.0) { $0 + Double(outs[$1].allocation.bitsPerSecond) }
                let limits = members.reduce(0.0) { $0 + Double(outs[$1].limit.bitsPerSecond) }
                if let cap = g.cap { #expect(total <= Double(cap.bitsPerSecond) + 8 && limits <= Double(cap.bitsPerSecond) + 8, "round \(round) group \(g.name) within its cap") }
                let wants = members.reduce(0.0) { i, m in
                    let v = vms[m]; let cap = min(Double((v.cap ?? link).bitsPerSecond), c)
                    return i + min(max(Double(v.demand.bitsPerSecond), min(floor, cap)), cap)
                }
                #expect(total >= min(Double(g.guarantee.bitsPerSecond), wants) - 8, "round \(round) group \(g.name): its guarantee when wanted")
            }
            // Work conserving: the link is full unless every party has what it wants.
            let total = outs.reduce(0.0) { $0 + Double($1.allocation.bitsPerSecond) }
            #expect(abs(total - Reference.wanted(capacity: c, vms, groups: groups)) <= 2 * n + 1e-6 * c, "round \(round): \(total) allocated")
        }
    }

    static func randomVM(_ name: String, group: String?, guarantee: Double, _ rng: inout SplitMix) -> Allocator.Input {
        let cap: BitRate? = Int.random(in: 0..<3, using: &rng) == 0 ? BitRate(clamping: Double.random(in: max(guarantee, 1e6)...1e9, using: &rng)) : nil
        let demand: BitRate = switch Int.random(in: 0..<4, using: &rng) {
        case 0: .zero
        case 1: .gbit(1)
        default: BitRate(clamping: Double.random(in: 0...6e8, using: &rng))
        }
        return Allocator.Input(name: name, weight: Double.random(in: 0.25...4, using: &rng), guarantee: BitRate(clamping: guarantee), cap: cap, demand: demand, group: group)
    }

    /// Two-level weighted max-min with guarantees, by bisection on each level's water level.
    enum Reference {
        static func level(capacity: Double, wants: [Double], guarantees: [Double], weights: [Double]) -> [Double] {
            let g = zip(guarantees, wants).map { min($0, $1) }
            if wants.reduce(0, +) <= capacity { return wants }
            var lo = 0.0, hi = capacity / (weights.min() ?? 1) + 1
            for _ in 0..<200 {
                let mid = (lo + hi) / 2
                let sum = wants.indices.reduce(0.0) { $0 + min(wants[$1], g[$1] + mid * weights[$1]) }
                if sum > capacity { hi = mid } else { lo = mid }
            }
            return wants.indices.map { min(wants[$0], g[$0] + lo * weights[$0]) }
        }

        static func wants(capacity c: Double, _ vms: [Allocator.Input]) -> [Double] {
            let floor = min(c * Allocator.floorFraction, c / 2 / Double(vms.count))
            return vms.map { v in
                let cap = min(Double((v.cap ?? BitRate(clamping: c)).bitsPerSecond), c)
                return min(max(Double(v.demand.bitsPerSecond), min(floor, cap)), cap)
            }
        }

        static func parties(_ vms: [Allocator.Input], groups: [Allocator.Group]) -> [[Int]] {
            var out: [[Int]] = []
            for g in groups { let m = vms.indices.filter { vms[$0].group == g.name }; if !m.isEmpty { out.append(m) } }
            for i in vms.indices where vms[i].group == nil { out.append([i]) }
            return out
        }

        static func allocate(capacity c: Double, _ vms: [Allocator.Input], groups: [Allocator.Group]) -> [Double] {
            let want = wants(capacity: c, vms)
            let ps = parties(vms, groups: groups)
            func group(_ p: [Int]) -> Allocator.Group? { vms[p[0]].group.flatMap { n in groups.first { $0.name == n } } }
            let pw = ps.map { p in group(p).map { g in min(p.reduce(0) { $0 + want[$1] }, Double((g.cap ?? BitRate(clamping: c)).bitsPerSecond)) } ?? want[p[0]] }
            let pg = ps.map { p in Double((group(p)?.guarantee ?? vms[p[0]].guarantee).bitsPerSecond) }
            let pweight = ps.map { p in group(p)?.weight ?? vms[p[0]].weight }
            let top = level(capacity: c, wants: pw, guarantees: pg, weights: pweight)
            var out = [Double](repeating: 0, count: vms.count)
            for (k, p) in ps.enumerated() {
                let inner = level(capacity: top[k], wants: p.map { want[$0] }, guarantees: p.map { Double(vms[$0].guarantee.bitsPerSecond) }, weights: p.map { vms[$0].weight })
                for (j, i) in p.enumerated() { out[i] = group(p) == nil ? top[k] : inner[j] }
            }
            return out
        }

        /// What the allocation must add up to: the link, or all that is wanted if less.
        static func wanted(capacity c: Double, _ vms: [Allocator.Input], groups: [Allocator.Group]) -> Double {
            let want = wants(capacity: c, vms)
            let total = parties(vms, groups: groups).reduce(0.0) { sum, p in
                let w = p.reduce(0) { $0 + want[$1] }
                let g = vms[p[0]].group.flatMap { n in groups.first { $0.name == n } }
                return sum + min(w, Double((g?.cap ?? BitRate(clamping: c)).bitsPerSecond))
            }
            return min(c, total)
        }
    }
}

