import Foundation
import Logging
import Netlink
import Testing
import TandemProtocol
@testable import HostController
@testable import HostCore
import TandemTransport

@Suite(.serialized) struct ClosedLoopTests {
    /// A VM sending steadily below its fair share beside a greedy one: the estimate must
    /// settle, not swing between a probe and the margin (which would reprogram the NIC every round).
    @Test func steadySenderSettlesWithoutOscillation() async throws {
        let rig = try Rig(guarantee1: "0")
        await rig.controller.prepare()
        for _ in 0..<30 { await rig.round(["vm1": .mbit(30), "vm2": .mbit(400)]) }
        let applies = rig.backends["vm1"]!.applies.count + rig.backends["vm2"]!.applies.count
        for _ in 0..<50 { await rig.round(["vm1": .mbit(30), "vm2": .mbit(400)]) }
        let later = rig.backends["vm1"]!.applies.count + rig.backends["vm2"]!.applies.count
        #expect(later - applies <= 2, "limits keep changing in steady state: \(later - applies) changes in 50 rounds")
        let l1 = rig.backends["vm1"]!.limit!, l2 = rig.backends["vm2"]!.limit!
        #expect(l1 >= .mbit(30) && l1 <= .mbit(40), "vm1 has what it uses plus a margin: \(l1)")
        #expect(l2 >= .mbit(160), "the greedy VM has the rest: \(l2)")
    }
}
