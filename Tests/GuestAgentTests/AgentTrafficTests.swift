import Foundation
import Testing
import GuestAgent
import TandemProtocol
import TandemTestSupport
import AgentCore
import TandemLabSupport

/// Traffic through the agent's tree: a UDP flood must not starve TCP inside the VM, and a
/// reservation must deliver its rate while the flood goes on.
@Suite(.serialized, Privileged.traffic, .exclusive)
struct AgentTrafficTests {
    /// Runs a UDP flood and a TCP transfer together from the agent's namespace.
    static func contend(_ t: AgentUnderTest, seconds: Double, udpRate: UInt64) async throws -> (tcp: Double, udp: Double) {
        let udpLog = t.logPath.deletingLastPathComponent().appendingPathComponent("udp.json")
        let udp = try BackgroundProcess(["ip", "netns", "exec", t.pair.a.name, "iperf3", "-c", "10.99.0.2", "-p", "5302", "-u", "-b", "\(udpRate)",
                                         "-l", "1400", "-t", String(format: "%.0f", seconds + 1), "-J"], log: udpLog)
        defer { udp.stop() }
        try await Task.sleep(for: .milliseconds(500))   // the flood is on before TCP starts
        let tcp = try Iperf.client(in: t.pair.a, host: "10.99.0.2", port: 5301, seconds: seconds)
        _ = udp.wait(timeout: seconds + 5)
        let udpReport = try Iperf.parse(try String(contentsOf: udpLog, encoding: .utf8))
        return (tcp.receivedBitsPerSecond, udpReport.receivedBitsPerSecond)
    }

    @Test func udpFloodDoesNotStarveTCPAndAReservationDelivers() async throws {
        try await TrafficGate.shared.run {
            let t = try AgentUnderTest()
            defer { t.close() }
            let tcpServer = try Iperf.server(in: t.pair.b, port: 5301)
            defer { tcpServer.stop() }
            let udpServer = try Iperf.server(in: t.pair.b, port: 5302)
            defer { udpServer.stop() }
            try await t.handshake(policy: VMPolicy(weight: 1, guarantee: .mbit(50), cap: nil))
            t.host.send(.allocation(Allocation(epoch: 1, hardLimit: .mbit(100), softLimit: .mbit(100))))
            try await t.waitForTC("root at 100mbit") { $0.first { $0.handle == "1:1" }?.ceil == .mbit(100) }

            let fair = try await Self.contend(t, seconds: 5, udpRate: 200_000_000)
            let total = fair.tcp + fair.udp
            print("agent traffic: 100mbit allocation, UDP flood at 200mbit: TCP \(Int(fair.tcp / 1e6)) Mbit/s, UDP \(Int(fair.udp / 1e6)) Mbit/s")
            #expect(fair.tcp >= 0.40 * 100e6, "TCP gets at least 40% of the 100mbit allocation")
            #expect(total <= 100e6 * 1.05, "the tree holds the allocation")

            // A 30mbit reservation for the TCP flow, while UDP floods; the allocation also
            // shrinks to 60mbit so that TCP's share alone (~28mbit) would fall short of it.
            let client = try await t.waitForSocket()
            let answer = Task { try client.call(AgentRequest(op: "reserve", rate: "30mbit", proto: "tcp", dst: "10.99.0.2", dport: 5301)) }
            let asked: ReserveRequest = try await t.host.waitFor("reserve") { m, _ in if case .reserve(let r) = m { return r }; return nil }
            t.host.send(.reservation(ReservationReply(id: asked.id, granted: true)))
            t.host.send(.allocation(Allocation(epoch: 2, hardLimit: .mbit(60), softLimit: .mbit(60), reservations: [GrantedReservation(id: asked.id, rate: .mbit(30), selector: asked.selector)])))
            #expect(try await answer.value.ok)
            try await t.waitForTC("the reservation's class") { $0.first { $0.handle == "1:100" }?.rate == .mbit(30) }
            let reserved = try await Self.contend(t, seconds: 5, udpRate: 200_000_000)
            print("agent traffic: 60mbit allocation, 30mbit TCP reservation, UDP flood: TCP \(String(format: "%.1f", reserved.tcp / 1e6)) Mbit/s, UDP \(Int(reserved.udp / 1e6)) Mbit/s")
            // Goodput-equivalent of 30mbit is ~95% of it; the reservation delivers at least 95% of that.
            #expect(reserved.tcp >= 0.95 * 0.95 * 30e6)
            withExtendedLifetime(client) {}
        }
    }
}
