import Foundation
import Testing
import TandemProtocol
@testable import HostController
@testable import HostCore

/// `policy show`, `policy reset`, `reservations list`, `reservations release` (issue #19) at
/// the controller: what they return, what they change, and that a refusal changes nothing.
@Suite(.serialized) struct AdminCommandsTests {
    static let sel = FlowSelector(proto: .tcp, destinationPort: 5201)

    @Test func policyShowSaysWhereEachPolicyComesFromAndResetGoesBackToTheFile() async throws {
        let rig = try Rig()
        await rig.controller.prepare()
        let before = try await rig.controller.policies(vm: nil)
        #expect(before.map(\.vm) == ["vm1", "vm2"])
        #expect(before.map(\.source) == [.config, .config])
        #expect(before[0].policy == PolicyView(weight: 1, min: "50mbit", max: nil))
        #expect(before[0].configured == nil)

        _ = try await rig.controller.setPolicy(vm: "vm1", weight: 3, min: .mbit(20), max: .some(.mbit(150)))
        let set = try #require(try await rig.controller.policies(vm: "vm1").first)
        #expect(set.source == .runtime)
        #expect(set.policy == PolicyView(weight: 3, min: "20mbit", max: "150mbit"))
        #expect(set.configured == PolicyView(weight: 1, min: "50mbit", max: nil), "what reset restores")

        let reset = try await rig.controller.resetPolicy(vm: "vm1")
        #expect(reset.source == .config)
        #expect(reset.policy == PolicyView(weight: 1, min: "50mbit", max: nil))
        #expect(await rig.controller.persisted.policies["vm1"] == nil, "state.json no longer overrides it")
        // Kept that way across a restart: the file's policy, not the one set before.
        try rig.makeController()
        #expect(try await rig.controller.policies(vm: "vm1").first?.source == .config)
        #expect(try await rig.controller.policies(vm: "vm1").first?.policy.weight == 1)

        await #expect(throws: PolicyError.noSuchVM("vm9", known: ["vm1", "vm2"])) { try await rig.controller.policies(vm: "vm9") }
        await #expect(throws: PolicyError.noSuchVM("vm9", known: ["vm1", "vm2"])) { try await rig.controller.resetPolicy(vm: "vm9") }
    }

    /// The file's guarantee no longer fits once another VM took the link's room at run time:
    /// reset is refused and the runtime policy stays, in force and in state.json.
    @Test func aResetThatNoLongerFitsChangesNothing() async throws {
        let rig = try Rig()
        await rig.controller.prepare()
        _ = try await rig.controller.setPolicy(vm: "vm1", weight: nil, min: .mbit(10), max: nil)
        _ = try await rig.controller.setPolicy(vm: "vm2", weight: nil, min: .mbit(180), max: nil)
        await #expect(throws: PolicyError.self) { try await rig.controller.resetPolicy(vm: "vm1") }
        let still = try #require(try await rig.controller.policies(vm: "vm1").first)
        #expect(still.source == .runtime)
        #expect(still.policy.min == "10mbit")
        #expect(await rig.controller.persisted.policies["vm1"]?.guarantee == .mbit(10))
    }

    @Test func aReleasedReservationLeavesTheNextAllocationAndStateJSON() async throws {
        let rig = try Rig()
        await rig.controller.prepare()
        await rig.connect("vm1")
        await rig.guest("vm1", .reserve(ReserveRequest(id: "r-1", rate: .mbit(10), selector: Self.sel)))
        await rig.guest("vm1", .reserve(ReserveRequest(id: "r-2", rate: .mbit(5), selector: Self.sel)))
        await rig.round([:])
        let list = try await rig.controller.reservationList(vm: nil)
        #expect(list.map(\.id) == ["r-1", "r-2"])
        #expect(list.first == ReservationEntry(vm: "vm1", id: "r-1", rate: "10mbit", bitsPerSecond: 10_000_000, selector: Self.sel.description, confirmed: true))
        #expect(try await rig.controller.reservationList(vm: "vm2").isEmpty)
        func lastGrants() -> [String]? {
            rig.channels["vm1"]!.messages.reversed().lazy.compactMap { m -> [String]? in if case .allocation(let a) = m { return a.reservations.map(\.id) }; return nil }.first
        }
        #expect(lastGrants() == ["r-1", "r-2"])

        // Unknown VM or id: refused, naming the value; nothing changes.
        await #expect(throws: PolicyError.noSuchReservation(vm: "vm1", id: "r-9", held: ["r-1", "r-2"])) {
            try await rig.controller.releaseReservation(vm: "vm1", id: "r-9", now: rig.now)
        }
        await #expect(throws: PolicyError.noSuchVM("vm9", known: ["vm1", "vm2"])) {
            try await rig.controller.releaseReservation(vm: "vm9", id: "r-1", now: rig.now)
        }
        #expect(try await rig.controller.reservationList(vm: "vm1").count == 2)

        let released = try await rig.controller.releaseReservation(vm: "vm1", id: "r-1", now: rig.now)
        #expect(released.id == "r-1")
        #expect(try await rig.controller.reservationList(vm: "vm1").map(\.id) == ["r-2"])
        #expect(await rig.controller.persisted.reservations["vm1"]?.map(\.id) == ["r-2"], "state.json keeps only what is held")
        await rig.round([:])
        #expect(lastGrants() == ["r-2"], "the guest's next allocation no longer carries it")
        // The agent was told at once, and asking for it again (an agent that was away) is refused.
        let refusals = { rig.channels["vm1"]!.messages.filter { if case .reservation(let r) = $0 { return r.id == "r-1" && !r.granted }; return false }.count }
        #expect(refusals() == 1, "a refusal of r-1 sent to the agent")
        await rig.guest("vm1", .reserve(ReserveRequest(id: "r-1", rate: .mbit(10), selector: Self.sel)))
        #expect(refusals() == 2)
        #expect(try await rig.controller.reservationList(vm: "vm1").map(\.id) == ["r-2"], "not granted back")
        // Once the guest released it itself, the id may be asked for again.
        await rig.guest("vm1", .release(ReleaseRequest(id: "r-1")))
        await rig.guest("vm1", .reserve(ReserveRequest(id: "r-1", rate: .mbit(10), selector: Self.sel)))
        #expect(try await rig.controller.reservationList(vm: "vm1").map(\.id) == ["r-1", "r-2"])
    }
}
