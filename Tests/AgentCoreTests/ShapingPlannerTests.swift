import Testing
import Netlink
import TandemProtocol
@testable import AgentCore

@Suite struct ShapingTreeTests {
    static let rsv = GrantedReservation(id: "r-1", rate: .mbit(30), selector: FlowSelector(proto: .tcp, destination: IPPrefix("10.0.0.5"), destinationPort: 5201))

    @Test func treeWithoutReservations() {
        let t = ShapingTree.desired(limit: .mbit(100), reservations: [])
        #expect(t.classes.map(\.handle.description) == ["1:1", "1:10", "1:20", "1:30"])
        #expect(t.classes[0].rate == .mbit(100))
        #expect(t.classes[0].ceil == .mbit(100))
        let tcp = t.classes[1], udp = t.classes[2], other = t.classes[3]
        #expect(tcp.rate == udp.rate, "TCP and UDP are guaranteed the same share")
        #expect(tcp.quantum == udp.quantum, "and borrow in equal quanta")
        #expect(tcp.rate + udp.rate + other.rate <= .mbit(100))
        #expect(tcp.rate > .mbit(45))
        #expect(t.classes.dropFirst().allSatisfy { $0.ceil == .mbit(100) && $0.parent == ShapingTree.top })
        #expect(t.filters.map(\.priority) == [60000, 60001, 60002, 60003])
        #expect(t.unmetReservations == .zero)
    }

    @Test func reservationGetsClassAndFiltersOfItsFamily() {
        let t = ShapingTree.desired(limit: .mbit(100), reservations: [.init(slot: 3, reservation: Self.rsv)])
        let c = t.classes.first { $0.handle == TCHandle(major: 1, minor: 0x103) }
        #expect(c?.rate == .mbit(30))
        #expect(c?.ceil == .mbit(100))
        #expect(c?.prio == 0)
        let f = t.filters.filter { $0.target == .classify(TCHandle(major: 1, minor: 0x103)) }
        #expect(f.map(\.priority) == [106], "IPv4 destination: only the IPv4 filter")
        #expect(f.first?.family == .ipv4)
        let tcp = t.classes.first { $0.handle == ShapingTree.tcp }!
        #expect(tcp.rate < .mbit(35), "the rest is shared after the reservation")
        #expect(t.appliedReservations["r-1"] == .mbit(30))
    }

    @Test func reservationWithoutAddressesGetsBothFamilies() {
        let any = GrantedReservation(id: "r-2", rate: .mbit(5), selector: FlowSelector(proto: .udp, destinationPort: 53))
        let t = ShapingTree.desired(limit: .mbit(100), reservations: [.init(slot: 0, reservation: any)])
        #expect(t.filters.filter { $0.priority < 60000 }.map(\.family) == [.ipv4, .ipv6])
    }

    @Test func oversubscribedReservationsAreScaledAndReportedUnmet() {
        let a = GrantedReservation(id: "a", rate: .mbit(80), selector: FlowSelector(proto: .tcp, destinationPort: 1))
        let b = GrantedReservation(id: "b", rate: .mbit(40), selector: FlowSelector(proto: .tcp, destinationPort: 2))
        let t = ShapingTree.desired(limit: .mbit(100), reservations: [.init(slot: 0, reservation: a), .init(slot: 1, reservation: b)])
        let applied = t.appliedReservations.values.reduce(BitRate.zero, +)
        #expect(applied <= .mbit(90))
        #expect(applied >= BitRate(bitsPerSecond: 89_999_000))
        #expect(t.unmetReservations >= .mbit(29))
        #expect(t.appliedReservations["a"]! > t.appliedReservations["b"]!, "scaled together, in proportion")
    }
}

@Suite struct ShapingPlannerTests {
    static func installed(_ tree: ShapingTree) -> InstalledTree {
        // What the kernel would list for a tree applied exactly.
        InstalledTree(root: .ours(defaultMinor: ShapingTree.defaultMinor),
                      classes: tree.classes.map { var c = $0; c.burst = c.effectiveBurst; c.cburst = c.effectiveCburst; c.quantum = c.effectiveQuantum; return c },
                      filters: tree.filters.flatMap { f -> [FilterState] in
                          guard case .classify(let c) = f.target else { return [] }
                          return [FilterState(parent: f.parent, priority: f.priority, family: f.family.rawValue, kind: "u32", handle: 0x8000_0000, classID: nil),
                                  FilterState(parent: f.parent, priority: f.priority, family: f.family.rawValue, kind: "u32", handle: 0x8000_0800, classID: c)]
                      })
    }

    @Test func emptyInterfaceGetsEverything() {
        let want = ShapingTree.desired(limit: .mbit(100), reservations: [])
        let ops = ShapingPlanner.plan(desired: want, installed: InstalledTree(root: .none, classes: [], filters: []))
        #expect(ops.first == .replaceRoot)
        #expect(ops.filter { if case .addClass = $0 { return true }; return false }.count == 4)
        #expect(ops.filter { if case .addFilter = $0 { return true }; return false }.count == 4)
        // Classes exist before any filter points at them.
        let lastClass = ops.lastIndex { if case .addClass = $0 { return true }; return false }!
        let firstFilter = ops.firstIndex { if case .addFilter = $0 { return true }; return false }!
        #expect(lastClass < firstFilter)
    }

    @Test func upToDateTreeNeedsNothing() {
        let want = ShapingTree.desired(limit: .mbit(100), reservations: [.init(slot: 0, reservation: ShapingTreeTests.rsv)])
        #expect(ShapingPlanner.plan(desired: want, installed: Self.installed(want)).isEmpty)
    }

    @Test func newLimitChangesClassesInPlace() {
        let old = ShapingTree.desired(limit: .mbit(100), reservations: [])
        let new = ShapingTree.desired(limit: .mbit(60), reservations: [])
        let ops = ShapingPlanner.plan(desired: new, installed: Self.installed(old))
        #expect(ops.count == 4)
        #expect(ops.allSatisfy { if case .changeClass = $0 { return true }; return false }, "no teardown: \(ops)")
    }

    @Test func addingAndRemovingAReservation() {
        let base = ShapingTree.desired(limit: .mbit(100), reservations: [])
        let with = ShapingTree.desired(limit: .mbit(100), reservations: [.init(slot: 0, reservation: ShapingTreeTests.rsv)])
        let add = ShapingPlanner.plan(desired: with, installed: Self.installed(base))
        #expect(add.contains(.addClass(with.classes.first { $0.handle.minor == 0x100 }!)))
        #expect(add.contains { if case .addFilter(let f) = $0 { return f.priority == 100 }; return false })
        #expect(!add.contains { if case .deleteFilter = $0 { return true }; return false })
        let remove = ShapingPlanner.plan(desired: base, installed: Self.installed(with))
        let delFilter = remove.firstIndex(of: .deleteFilter(priority: 100, family: .ipv4))
        let delClass = remove.firstIndex(of: .deleteClass(TCHandle(major: 1, minor: 0x100)))
        #expect(delFilter != nil && delClass != nil)
        #expect(delFilter! < delClass!, "the filter goes before its class")
    }

    @Test func filterPointingElsewhereIsReplaced() {
        let want = ShapingTree.desired(limit: .mbit(100), reservations: [])
        var have = Self.installed(want)
        for i in have.filters.indices where have.filters[i].priority == 60000 && have.filters[i].classID != nil {
            have.filters[i].classID = ShapingTree.udp
        }
        let ops = ShapingPlanner.plan(desired: want, installed: have)
        #expect(ops == [.deleteFilter(priority: 60000, family: .ipv4), .addFilter(want.filters[0])])
    }

    @Test func foreignRootIsReplacedWhole() {
        let want = ShapingTree.desired(limit: .mbit(100), reservations: [])
        let ops = ShapingPlanner.plan(desired: want, installed: InstalledTree(root: .foreign(kind: "tbf", handle: TCHandle(major: 8001, minor: 0)), classes: [], filters: []))
        #expect(ops.first == .replaceRoot)
        #expect(ops.count == 9)
    }
}

@Suite struct DemandEstimatorTests {
    static let flow = FlowKey(proto: .tcp, source: IPAddress("10.0.0.2")!, sourcePort: 4000, destination: IPAddress("10.0.0.5")!, destinationPort: 5201)

    @Test func firstSampleGivesNoReport() {
        var e = DemandEstimator()
        #expect(e.report(at: 1, classes: [], flows: [], epoch: 0, unmetReservations: .zero) == nil)
    }

    @Test func ratesDropsBacklogAndAppLimited() throws {
        var e = DemandEstimator()
        let c0 = [DemandEstimator.ClassSample(handle: ShapingTree.top, bytes: 0, drops: 0, backlog: 0),
                  DemandEstimator.ClassSample(handle: ShapingTree.udp, bytes: 0, drops: 5, backlog: 0),
                  DemandEstimator.ClassSample(handle: ShapingTree.tcp, bytes: 0, drops: 0, backlog: 0)]
        let f0 = [DemandEstimator.FlowSample(flow: Self.flow, inode: 7, bytesSent: 1000, appLimited: false)]
        _ = e.report(at: 10, classes: c0, flows: f0, epoch: 1, unmetReservations: .zero)
        let c1 = [DemandEstimator.ClassSample(handle: ShapingTree.top, bytes: 1_250_000, drops: 0, backlog: 0),
                  DemandEstimator.ClassSample(handle: ShapingTree.udp, bytes: 1_000_000, drops: 9, backlog: 3000),
                  DemandEstimator.ClassSample(handle: ShapingTree.tcp, bytes: 250_000, drops: 0, backlog: 0)]
        let f1 = [DemandEstimator.FlowSample(flow: Self.flow, inode: 7, bytesSent: 251_000, appLimited: false)]
        let rep = e.report(at: 10.1, classes: c1, flows: f1, epoch: 1, unmetReservations: .zero)
        let r = try #require(rep)
        #expect(r.rate == .mbit(100))
        #expect(r.intervalMilliseconds == 100)
        #expect(r.wantsMore)
        let udp = try #require(r.classes.first { $0.name == "udp" })
        #expect(udp.rate == .mbit(80))
        #expect(udp.drops == 4)
        #expect(udp.wantsMore == [.drops, .backlog])
        #expect(r.classes.first { $0.name == "tcp" }?.wantsMore == [])
        #expect(r.flows.first?.rate == .mbit(20))
        #expect(r.flows.first?.wantsMore == [.notAppLimited])
        #expect(r.sequence == 1)
    }

    @Test func reportsBetweenSocketSamplesNameNoFlowsButKeepTheirWanting() throws {
        var e = DemandEstimator()
        let top = { (b: UInt64) in [DemandEstimator.ClassSample(handle: ShapingTree.top, bytes: b, drops: 0, backlog: 0)] }
        _ = e.report(at: 1, classes: top(0), flows: [.init(flow: Self.flow, inode: 7, bytesSent: 0, appLimited: false)], epoch: 0, unmetReservations: .zero)
        let first = e.report(at: 1.5, classes: top(10_000), flows: [.init(flow: Self.flow, inode: 7, bytesSent: 625_000, appLimited: false)], epoch: 0, unmetReservations: .zero)
        let sampled = try #require(first)
        #expect(sampled.flows.count == 1 && sampled.flows[0].rate == .mbit(10))
        #expect(sampled.wantsMore)
        let next = e.report(at: 1.6, classes: top(20_000), flows: nil, epoch: 0, unmetReservations: .zero)
        let between = try #require(next)
        #expect(between.flows.isEmpty, "no repeated flow figures")
        #expect(between.wantsMore, "the flow not limited by its application still wants more")
        // The VM stops sending before the next socket sample: the old flows claim nothing.
        let stopped = e.report(at: 1.7, classes: top(20_000), flows: nil, epoch: 0, unmetReservations: .zero)
        #expect(stopped?.rate == .zero)
        #expect(stopped?.wantsMore == false, "a stopped flow does not keep wanting until the next sample")
    }

    @Test func resetCountersGiveZeroNotHuge() throws {
        var e = DemandEstimator()
        _ = e.report(at: 1, classes: [.init(handle: ShapingTree.top, bytes: 9_000_000, drops: 10, backlog: 0)], flows: [], epoch: 0, unmetReservations: .zero)
        let rep = e.report(at: 2, classes: [.init(handle: ShapingTree.top, bytes: 100, drops: 0, backlog: 0)], flows: [], epoch: 0, unmetReservations: .zero)
        let r = try #require(rep)
        #expect(r.rate == .zero)
        #expect(r.classes.first?.drops == 0)
    }

    @Test func idleAppLimitedFlowsDoNotWantMore() throws {
        var e = DemandEstimator()
        _ = e.report(at: 1, classes: [], flows: [.init(flow: Self.flow, inode: 1, bytesSent: 0, appLimited: true)], epoch: 0, unmetReservations: .zero)
        let rep = e.report(at: 2, classes: [], flows: [.init(flow: Self.flow, inode: 1, bytesSent: 125_000, appLimited: true)], epoch: 0, unmetReservations: .zero)
        let r = try #require(rep)
        #expect(!r.wantsMore)
        #expect(r.flows.first?.rate == .mbit(1))
    }

    @Test func flowsAreBoundedToTheHeaviest() throws {
        var e = DemandEstimator(maxFlows: 4)
        let keys = (0..<50).map { FlowKey(proto: .tcp, source: IPAddress("10.0.0.2")!, sourcePort: UInt16(1000 + $0), destination: IPAddress("10.0.0.5")!, destinationPort: 80) }
        _ = e.report(at: 1, classes: [], flows: keys.enumerated().map { .init(flow: $1, inode: UInt32($0), bytesSent: 0, appLimited: true) }, epoch: 0, unmetReservations: .zero)
        let rep = e.report(at: 2, classes: [], flows: keys.enumerated().map { .init(flow: $1, inode: UInt32($0), bytesSent: UInt64($0) * 1000, appLimited: true) }, epoch: 0, unmetReservations: .zero)
        let r = try #require(rep)
        #expect(r.flows.count == 4)
        #expect(r.flows.map(\.flow.sourcePort) == [1049, 1048, 1047, 1046])
    }

    @Test func unmetReservationsWantMore() throws {
        var e = DemandEstimator()
        _ = e.report(at: 1, classes: [], flows: [], epoch: 0, unmetReservations: .mbit(5))
        let rep = e.report(at: 2, classes: [], flows: [], epoch: 0, unmetReservations: .mbit(5))
        #expect(try #require(rep).wantsMore)
    }
}

@Suite struct ReportPacerTests {
    static func report(_ rate: BitRate, epoch: UInt64 = 3, wants: Bool = false, udpWants: [WantReason] = [], flows: Int = 0) -> DemandReport {
        DemandReport(sequence: 1, intervalMilliseconds: 100, epoch: epoch, rate: rate, wantsMore: wants,
                     classes: [ClassDemand(name: "tcp", bytes: 0, rate: rate, drops: 0, backlog: 0),
                               ClassDemand(name: "udp", bytes: 0, rate: .zero, drops: 0, backlog: 0, wantsMore: udpWants)],
                     flows: (0..<flows).map { _ in FlowDemand(flow: DemandEstimatorTests.flow, bytes: 1, rate: .mbit(1)) })
    }

    @Test func steadyReportsAreKeptToOneASecondChangesGoAtOnce() {
        var p = ReportPacer()
        func send(_ r: DemandReport, at t: Double) -> Bool { p.shouldSend(r, at: t) }
        #expect(send(Self.report(.mbit(100)), at: 0), "the first goes out")
        #expect(!send(Self.report(.mbit(104)), at: 0.1), "4% is noise")
        #expect(!send(Self.report(.mbit(96)), at: 0.5))
        #expect(send(Self.report(.mbit(100)), at: 1.0), "keepalive after a second")
        #expect(send(Self.report(.mbit(120)), at: 1.1), "rate up by 20%")
        #expect(send(Self.report(.mbit(120), wants: true), at: 1.2), "starts wanting more")
        #expect(send(Self.report(.mbit(120), wants: true, udpWants: [.drops]), at: 1.3), "a class starts dropping")
        #expect(send(Self.report(.mbit(120), epoch: 4, wants: true, udpWants: [.drops]), at: 1.4), "a new allocation enforced")
        #expect(send(Self.report(.mbit(120), epoch: 4, wants: true, udpWants: [.drops], flows: 2), at: 1.5), "freshly sampled flows")
        #expect(!send(Self.report(.mbit(121), epoch: 4, wants: true, udpWants: [.drops]), at: 1.6))
        // Idle: tiny changes below 100 kbit/s are not news.
        var idle = ReportPacer()
        func sendIdle(_ r: DemandReport, at t: Double, slack: Double = 0) -> Bool { idle.shouldSend(r, at: t, slack: slack) }
        #expect(sendIdle(Self.report(.kbit(10)), at: 0))
        #expect(!sendIdle(Self.report(.kbit(60)), at: 0.1))
        idle.reset()
        #expect(sendIdle(Self.report(.kbit(60)), at: 0.2), "after a reset (a welcome) the next goes out")
        #expect(sendIdle(Self.report(.kbit(60)), at: 1.15, slack: 0.05) , "a keepalive may come half a tick early")
    }
}
