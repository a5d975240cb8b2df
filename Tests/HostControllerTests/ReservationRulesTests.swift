import Foundation
import Testing
import TandemProtocol
@testable import HostController
@testable import HostCore

/// What a reservation holds on to (issue #18, item 3): admission beyond the guarantee only
/// as far as the allocator backs it, and no reservation held for an agent that is gone.
@Suite(.serialized) struct ReservationRulesTests {
    static let sel = FlowSelector(proto: .tcp, destinationPort: 5201)
    static func link(beyond: Bool) -> HostConfig.LinkConfig { HostConfig.LinkConfig(name: "wire", capacity: .mbit(200), reserveBeyondGuarantee: beyond) }

    @Test func beyondTheGuaranteeOnlyUpToTheFairShare() {
        let policy = VMPolicy(weight: 1, guarantee: .mbit(20), cap: nil)
        func decide(_ rate: UInt64, held: UInt64 = 0, beyond: Bool = true) -> Admission.Decision {
            let h = held == 0 ? [:] : ["h": GrantedReservation(id: "h", rate: .mbit(held), selector: Self.sel)]
            return Admission.decide(ReserveRequest(id: "r", rate: .mbit(rate), selector: Self.sel), held: h, maxHeld: 256, policy: policy,
                                    link: Self.link(beyond: beyond), others: [.init(guarantee: .mbit(20), reserved: .zero)], fairShare: .mbit(100))
        }
        #expect(decide(20) == .granted(GrantedReservation(id: "r", rate: .mbit(20), selector: Self.sel)), "within the guarantee")
        guard case .refused = decide(30, beyond: false) else { Issue.record("beyond the guarantee without the link's leave"); return }
        #expect(decide(60, held: 40) == .granted(GrantedReservation(id: "r", rate: .mbit(60), selector: Self.sel)), "up to the fair share")
        // The link has 180mbit unreserved, but the allocator backs this VM up to 100mbit only:
        // beyond that, the others' fair shares would be reserved away.
        guard case .refused(let why) = decide(61, held: 40) else { Issue.record("granted beyond the fair share"); return }
        #expect(why.contains("nor in its fair share 100mbit"), "\(why)")
    }

    @Test func reservationsOfAnAgentThatIsGoneLapseAndComeBackWithIt() async throws {
        let rig = try Rig()
        await rig.controller.prepare()
        await rig.connect("vm1")
        await rig.guest("vm1", .reserve(ReserveRequest(id: "r-1", rate: .mbit(10), selector: Self.sel)))
        #expect(await rig.controller.snapshot("vm1")?.reservations.count == 1)
        // The channel goes down and stays down.
        await rig.controller.receive("vm1", .disconnected("test"), now: rig.now)
        for _ in 0..<Int(Controller.absentReservationSeconds * 10 - 20) { await rig.round([:]) }
        #expect(await rig.controller.snapshot("vm1")?.reservations.count == 1, "kept while the agent may come back")
        for _ in 0..<30 { await rig.round([:]) }
        #expect(await rig.controller.snapshot("vm1")?.reservations.isEmpty == true, "dropped once it stayed away")
        // Back: it re-sends what it holds, admitted again.
        await rig.connect("vm1")
        await rig.guest("vm1", .reserve(ReserveRequest(id: "r-1", rate: .mbit(10), selector: Self.sel)))
        #expect(await rig.controller.snapshot("vm1")?.reservations.map(\.id) == ["r-1"])
        // A short absence keeps them.
        await rig.controller.receive("vm1", .disconnected("test"), now: rig.now)
        for _ in 0..<50 { await rig.round([:]) }
        await rig.connect("vm1")
        await rig.guest("vm1", .reserve(ReserveRequest(id: "r-1", rate: .mbit(10), selector: Self.sel)))
        // (An agent that is there talks: a ping every half second here.)
        for i in 0..<Int(Controller.absentReservationSeconds * 10) {
            if i % 5 == 0 { await rig.guest("vm1", .ping(Ping(nonce: UInt64(i)))) }
            await rig.round([:])
        }
        #expect(await rig.controller.snapshot("vm1")?.reservations.map(\.id) == ["r-1"])
    }
}
