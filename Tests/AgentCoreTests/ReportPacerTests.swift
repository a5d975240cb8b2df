import Testing
import Netlink
import TandemProtocol
@testable import AgentCore

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
