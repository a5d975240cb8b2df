import Foundation
import Testing
import Netlink
import TandemProtocol
import TandemTestSupport
import TandemLabSupport

@Suite(.serialized, Privileged.enabled, .exclusive)
struct VFKernelTests {
    @Test func linkWithoutVFsReportsNoneFromTheKernel() async throws {
        let ns = try Netns(prefix: "tdm-vf")
        defer { ns.delete() }
        try ns.ip("link add va type veth peer name vb")
        let nl = try RouteSocket(namespace: ns.name)
        #expect(try await nl.virtualFunctions(of: "va", withStats: true).isEmpty)
        #expect(try await nl.virtualFunctions(of: "va", withStats: false).isEmpty)
    }

    @Test func setRateOnLinkWithoutVFsIsAClearKernelError() async throws {
        let ns = try Netns(prefix: "tdm-vf")
        defer { ns.delete() }
        try ns.ip("link add va type veth peer name vb")
        let nl = try RouteSocket(namespace: ns.name)
        let e = await #expect(throws: NetlinkError.self) { try await nl.setVFRate(pf: "va", vf: 3, max: .mbit(500), min: .mbit(100)) }
        #expect(e?.errno == EOPNOTSUPP)
        #expect(e?.operation == "RTM_NEWLINK")
        #expect(e?.description.contains("vf 3") == true)
        // Without a minimum the current pair is read first: no such VF here.
        let e2 = await #expect(throws: NetlinkError.self) { try await nl.setVFRate(pf: "va", vf: 0, max: .mbit(500)) }
        #expect(e2?.errno == ENODEV)
        // min above max is refused before anything is sent.
        let e3 = await #expect(throws: NetlinkError.self) { try await nl.setVFRate(pf: "va", vf: 0, max: .mbit(100), min: .mbit(200)) }
        #expect(e3?.description.contains("above max_tx_rate") == true)
    }
}
