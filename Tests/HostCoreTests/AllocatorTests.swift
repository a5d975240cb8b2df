import Testing
import TandemProtocol
@testable import HostCore

@Suite struct AllocatorTests {
    typealias I = Allocator.Input
    static let C = BitRate.mbit(200)

    static func alloc(_ vms: [I], capacity: BitRate = C) -> [String: (a: Double, l: Double)] {
        Dictionary(uniqueKeysWithValues: Allocator.allocate(capacity: capacity, vms).map { ($0.name, (Double($0.allocation.bitsPerSecond) / 1e6, Double($0.limit.bitsPerSecond) / 1e6)) })
    }

    static func near(_ x: Double, _ y: Double) -> Bool { abs(x - y) < 0.01 }

    @Test(arguments: [
        // name, inputs, expected allocations (Mbit/s), expected limits (Mbit/s)
        ("equal weights, both greedy", [I(name: "a", weight: 1, demand: .gbit(1)), I(name: "b", weight: 1, demand: .gbit(1))], [100.0, 100], [100.0, 100]),
        ("weights 1:3", [I(name: "a", weight: 1, demand: .gbit(1)), I(name: "b", weight: 3, demand: .gbit(1))], [50, 150], [50, 150]),
        ("guarantee first, the rest by weight", [I(name: "a", weight: 1, guarantee: .mbit(150), demand: .gbit(1)), I(name: "b", weight: 1, demand: .gbit(1))], [175, 25], [175, 25]),
        ("guarantee only up to demand", [I(name: "a", weight: 1, guarantee: .mbit(150), demand: .mbit(30)), I(name: "b", weight: 1, demand: .gbit(1))], [30, 170], [30, 170]),
        ("cap", [I(name: "a", weight: 1, cap: .mbit(50), demand: .gbit(1)), I(name: "b", weight: 1, demand: .gbit(1))], [50, 150], [50, 150]),
        ("idle VM leaves the link to the other", [I(name: "a", weight: 1, demand: .mbit(10)), I(name: "b", weight: 1, demand: .gbit(1))], [10, 190], [10, 190]),
        ("all idle: floors, the rest as headroom", [I(name: "a", weight: 1, demand: .zero), I(name: "b", weight: 1, demand: .zero)], [4, 4], [100, 100]),
        ("headroom respects caps", [I(name: "a", weight: 1, cap: .mbit(20), demand: .mbit(1)), I(name: "b", weight: 1, demand: .mbit(30))], [4, 30], [20, 180]),
        ("small demands: headroom by weight", [I(name: "a", weight: 1, demand: .mbit(20)), I(name: "b", weight: 3, demand: .mbit(20))], [20, 20], [60, 140]),
    ] as [(String, [I], [Double], [Double])])
    func table(name: String, vms: [I], allocations: [Double], limits: [Double]) {
        let r = Self.alloc(vms)
        for (i, vm) in vms.enumerated() {
            #expect(Self.near(r[vm.name]!.a, allocations[i]), "\(name): \(vm.name) allocation \(r[vm.name]!.a)")
            #expect(Self.near(r[vm.name]!.l, limits[i]), "\(name): \(vm.name) limit \(r[vm.name]!.l)")
        }
        let total = r.values.reduce(0) { $0 + $1.l }
        #expect(total <= 200.01, "\(name): limits never exceed the link")
    }

    @Test func workConserving() {
        // However demands fall, greedy VMs end up using the whole link.
        for d in [0.0, 5, 50, 99] {
            let r = Self.alloc([I(name: "a", weight: 1, demand: .mbit(UInt64(d))), I(name: "b", weight: 2, demand: .gbit(1)), I(name: "c", weight: 1, demand: .gbit(1))])
            #expect(Self.near(r.values.reduce(0) { $0 + $1.a }, 200))
        }
    }

    /// 64 VMs on a link: the floors (2% each) would add up to more than the link; bounded to
    /// half of it, the busy VMs still get what the idle ones leave.
    @Test func withManyVMsTheFloorsLeaveRoomForDemand() {
        var vms: [I] = []
        for i in 0..<64 { vms.append(I(name: "v\(i)", weight: 1, demand: i < 8 ? .gbit(1) : .zero)) }
        let out = Allocator.allocate(capacity: .gbit(1), vms)
        let busy = out.prefix(8).map { $0.allocation.megabitsPerSecond }
        // 56 idle VMs at a floor of 1gbit/2/64 = 7.8 Mbit/s leave 562 Mbit/s for the 8 busy ones.
        #expect(busy.allSatisfy { abs($0 - 562.5 / 8) < 1 }, "\(busy)")
        #expect(out.reduce(0.0) { $0 + $1.limit.megabitsPerSecond } <= 1000.001)
    }

    @Test func fairSharesIgnoreDemand() {
        let f = Allocator.fairShares(capacity: Self.C, [I(name: "a", weight: 1, guarantee: .mbit(100), demand: .zero), I(name: "b", weight: 1, demand: .zero)])
        #expect(f["a"] == .mbit(150))
        #expect(f["b"] == .mbit(50))
    }

    @Test func jainIndex() {
        #expect(Allocator.jainIndex([(.mbit(100), 1), (.mbit(100), 1)]) == 1)
        #expect(abs(Allocator.jainIndex([(.mbit(200), 1), (.zero, 1)])! - 0.5) < 1e-9)
        #expect(Allocator.jainIndex([(.mbit(50), 1), (.mbit(150), 3)]) == 1, "normalised by weight")
        #expect(Allocator.jainIndex([]) == nil)
    }

    @Test func lyingGuestGetsNothingBeyondItsFairShare() {
        // The guest says it wants 10 Tbit/s while the host measures it idle.
        let lie = DemandReport(sequence: 1, intervalMilliseconds: 100, epoch: 1, rate: .protocolMaximum, wantsMore: true, unmetReservations: .protocolMaximum)
        let d = DemandEstimate.host(measured: .zero, limit: .mbit(100), drops: 0, report: lie, fairShare: .mbit(100), capacity: Self.C, reserved: .zero)
        #expect(d == .mbit(100))
        // The same VM, really sending at its limit (measured by the host), is probed upward.
        let real = DemandEstimate.host(measured: .mbit(99), limit: .mbit(100), drops: 0, report: nil, fairShare: .mbit(100), capacity: Self.C, reserved: .zero)
        #expect(real >= .mbit(200))
        // An honest quiet guest: what the host measures, with a margin.
        let quiet = DemandEstimate.host(measured: .mbit(10), limit: .mbit(100), drops: 0, report: nil, fairShare: .mbit(100), capacity: Self.C, reserved: .zero)
        #expect(quiet == .mbit(11))
        // Drops at the host's shaper count as being at the limit.
        let dropping = DemandEstimate.host(measured: .mbit(50), limit: .mbit(100), drops: 3, report: nil, fairShare: .mbit(100), capacity: Self.C, reserved: .zero)
        #expect(dropping >= .mbit(200))
    }

    /// Between rounds (a report reallocates the link) the measured rate is the last round's:
    /// a VM held back by a limit raised since is still at its limit (it looked content and
    /// lost what it had just been given); and a guest saying, after that measurement, that it
    /// sends less and wants no more is taken at its word.
    @Test func betweenRoundsTheMeasuredRateIsJudgedAgainstItsOwnLimit() {
        let fair = BitRate.mbit(100)
        let raised = DemandEstimate.host(measured: .mbit(100), limit: .mbit(145), limitMeasured: .mbit(100), drops: 0, report: nil, fairShare: fair, capacity: Self.C, reserved: .zero)
        #expect(raised == .mbit(200), "still at the limit it was measured under, and probed up from that one")
        // Reallocations between rounds (the same measurement) do not double it again.
        let again = DemandEstimate.host(measured: .mbit(100), limit: raised, limitMeasured: .mbit(100), drops: 0, report: nil, fairShare: fair, capacity: Self.C, reserved: .zero)
        #expect(again == raised)
        let naive = DemandEstimate.host(measured: .mbit(100), limit: .mbit(145), drops: 0, report: nil, fairShare: fair, capacity: Self.C, reserved: .zero)
        #expect(naive == .mbit(110), "judged against the raised limit it would look content")
        let stopped = DemandReport(sequence: 9, intervalMilliseconds: 100, epoch: 1, rate: .mbit(2), wantsMore: false)
        let newer = DemandEstimate.host(measured: .mbit(100), limit: .mbit(100), drops: 0, report: stopped, reportIsNewer: true, fairShare: fair, capacity: Self.C, reserved: .zero)
        #expect(newer == BitRate(clamping: 2.2e6))
        let older = DemandEstimate.host(measured: .mbit(100), limit: .mbit(100), drops: 0, report: stopped, reportIsNewer: false, fairShare: fair, capacity: Self.C, reserved: .zero)
        #expect(older >= fair, "a report older than the measurement does not lower it")
        let wanting = DemandReport(sequence: 9, intervalMilliseconds: 100, epoch: 1, rate: .mbit(2), wantsMore: true)
        #expect(DemandEstimate.host(measured: .mbit(100), limit: .mbit(100), drops: 0, report: wanting, reportIsNewer: true, fairShare: fair, capacity: Self.C, reserved: .zero) >= fair)
    }

    /// Weights far apart (any weight above 0 is accepted): the link is still shared out whole,
    /// and never more than it (a running total of the weights rounded to 0 before).
    @Test func weightsFarApartStillFillTheLinkAndNoMore() {
        for tiny in [5e-14, 1.6e-13, 1e-9] {
            let vms = [Allocator.Input(name: "big", weight: 1000, cap: .mbit(50), demand: Self.C),
                       Allocator.Input(name: "tiny", weight: tiny, demand: Self.C)]
            let out = Allocator.allocate(capacity: Self.C, vms, headroom: false)
            let total = out.reduce(0.0) { $0 + Double($1.allocation.bitsPerSecond) }
            #expect(abs(total - Double(Self.C.bitsPerSecond)) <= 2, "weight \(tiny): \(out)")
        }
    }

    /// A VM far below its fair share that sits at its limit, or says it wants more, is owed
    /// its fair share at once (issue #17: it took rounds of doubling, 400 ms and more).
    @Test func aVMBelowItsFairShareThatWantsMoreIsTakenToWantItAtOnce() {
        let fair = BitRate.mbit(500)
        let atLimit = DemandEstimate.host(measured: .mbit(10), limit: .mbit(10), drops: 0, report: nil, fairShare: fair, capacity: Self.C, reserved: .zero)
        #expect(atLimit >= fair)
        let wants = DemandReport(sequence: 1, intervalMilliseconds: 100, epoch: 1, rate: .mbit(9), wantsMore: true)
        let reported = DemandEstimate.host(measured: .mbit(5), limit: .mbit(10), drops: 0, report: wants, fairShare: fair, capacity: Self.C, reserved: .zero)
        #expect(reported == fair)
        // Not at its limit and not asking: what it sends, with a margin, as before.
        let quiet = DemandEstimate.host(measured: .mbit(5), limit: .mbit(10), drops: 0, report: nil, fairShare: fair, capacity: Self.C, reserved: .zero)
        #expect(quiet == BitRate(clamping: 5.5e6))
    }
}
