import Testing
import Netlink
import TandemProtocol
@testable import AgentCore

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

    /// A flow whose socket was destroyed claims nothing more, though the VM still sent in the
    /// interval (its queue draining): the report that follows says it wants no more.
    @Test func aFlowThatEndedClaimsNothing() throws {
        var e = DemandEstimator()
        let top = { (b: UInt64) in [DemandEstimator.ClassSample(handle: ShapingTree.top, bytes: b, drops: 0, backlog: 0)] }
        let other = FlowKey(proto: .tcp, source: IPAddress("10.0.0.2")!, sourcePort: 4001, destination: IPAddress("10.0.0.5")!, destinationPort: 22)
        _ = e.report(at: 1, classes: top(0), flows: [.init(flow: Self.flow, inode: 7, bytesSent: 0, appLimited: false), .init(flow: other, inode: 8, bytesSent: 0, appLimited: true)],
                     epoch: 0, unmetReservations: .zero)
        _ = e.report(at: 1.5, classes: top(625_000), flows: [.init(flow: Self.flow, inode: 7, bytesSent: 620_000, appLimited: false), .init(flow: other, inode: 8, bytesSent: 5_000, appLimited: true)],
                     epoch: 0, unmetReservations: .zero)
        let (quiet, sender, again) = (e.forget(other), e.forget(Self.flow), e.forget(Self.flow))
        #expect(!quiet, "an application-limited flow claimed nothing")
        #expect(sender, "the sender wanted more")
        #expect(!again, "forgotten once")
        let next = e.report(at: 1.6, classes: top(1_250_000), flows: nil, epoch: 0, unmetReservations: .zero)
        let after = try #require(next)
        #expect(after.rate == .mbit(50), "what the VM sent in the interval is still reported")
        #expect(!after.wantsMore, "the ended flow's claim is gone")
        #expect(e.claiming.isEmpty)
    }

    /// At a flow's end the rates' interval starts again (the report after it says what the VM
    /// sends from then on), and the drops since the last report still count.
    @Test func aRestartedIntervalKeepsTheDropsSinceTheLastReport() throws {
        var e = DemandEstimator()
        let udp = { (b: UInt64, d: UInt64) in [DemandEstimator.ClassSample(handle: ShapingTree.top, bytes: b, drops: 0, backlog: 0),
                                               DemandEstimator.ClassSample(handle: ShapingTree.udp, bytes: b, drops: d, backlog: 0)] }
        _ = e.report(at: 1, classes: udp(0, 0), flows: nil, epoch: 0, unmetReservations: .zero)
        e.restart(at: 1.08, classes: udp(1_000_000, 3))
        let next = e.report(at: 1.1, classes: udp(1_000_000, 3), flows: nil, epoch: 0, unmetReservations: .zero)
        let r = try #require(next)
        #expect(r.rate == .zero, "nothing sent since the restart")
        #expect(r.intervalMilliseconds == 20)
        #expect(r.classes.first { $0.name == "udp" }?.drops == 3, "the drops before the restart count")
        #expect(r.wantsMore)
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
