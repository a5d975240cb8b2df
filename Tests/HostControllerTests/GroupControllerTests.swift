import Foundation
import Logging
import Testing
import TandemProtocol
@testable import HostController
@testable import HostCore

/// Tenant groups in the controller (issue #17): allocations, the fairness table's group rows
/// and per-level Jain indexes, `policy set` within a group's min, and a reload that moves a
/// VM between groups. Fake backends that send what they are allowed; a test clock.
@Suite(.serialized) struct GroupControllerTests {
    static let text = """
        [controller]
        interval = "100ms"
        [[link]]
        name = "wire"
        capacity = "1gbit"
        [[group]]
        name = "tenant-a"
        weight = 1
        min = "200mbit"
        [[group]]
        name = "tenant-b"
        weight = 1
        [[vm]]
        name = "a1"
        interface = "v1"
        group = "tenant-a"
        min = "100mbit"
        [[vm]]
        name = "a2"
        interface = "v2"
        group = "tenant-a"
        weight = 3
        [[vm]]
        name = "b1"
        interface = "v3"
        group = "tenant-b"
        """

    final class GroupRig {
        let backends = ["a1": FakeBackend(), "a2": FakeBackend(), "b1": FakeBackend()]
        let controller: Controller
        var now = 1000.0
        let dir = NSTemporaryDirectory() + "tandem-groups-\(UUID().uuidString)"
        init(_ text: String = GroupControllerTests.text) throws {
            var log = Logger(label: "test")
            log.logLevel = .critical
            controller = try Controller(config: try HostConfig.parse(text), backends: backends, channels: [:], store: StateStore(directory: dir), logger: log, now: now)
        }
        func rounds(_ n: Int, offered: BitRate = .gbit(1)) async {
            for _ in 0..<n {
                now += 0.1
                for b in backends.values { b.send(offered, for: 0.1) }
                await controller.tick(now: now)
            }
        }
        func allocation(_ vm: String) async -> Double {
            Double(await controller.fairness()[0].vms.first { $0.vm == vm }!.allocation) / 1e6
        }
    }

    @Test func tenantsShareTheLinkThenTheirVMsShareTheirPart() async throws {
        let rig = try GroupRig()
        await rig.controller.prepare()
        await rig.rounds(100)
        let (a1, a2, b1) = (await rig.allocation("a1"), await rig.allocation("a2"), await rig.allocation("b1"))
        print("groups: a1 \(a1) a2 \(a2) b1 \(b1) Mbit/s")
        // Guarantees first, then the rest by weight, at both levels: tenant-a its 200mbit min
        // and half of the 800 left (600), tenant-b the other half (400); in tenant-a, a1's
        // 100mbit min and a quarter of the 500 left (225), a2 three quarters (375).
        #expect(abs(b1 - 400) < 10, "tenant-b's one VM: \(b1)")
        #expect(abs((a1 + a2) - 600) < 10, "tenant-a's two together: \(a1 + a2)")
        #expect(abs(a1 - 225) < 10 && abs(a2 - 375) < 10, "\(a1), \(a2)")
        let table = await rig.controller.fairness()[0]
        let groups = try #require(table.groups)
        #expect(groups.map(\.group) == ["tenant-a", "tenant-b"] && groups.map(\.vms) == [2, 1])
        #expect(abs(Double(groups[0].allocation) / 1e6 - 600) < 10 && abs(Double(groups[1].allocation) / 1e6 - 400) < 10)
        // Jain by weight between the groups' 600 and 400: 1000² / (2 (600² + 400²)) = 0.962.
        #expect(abs((table.jainGroups ?? 0) - 0.9615) < 0.01, "\(String(describing: table.jainGroups))")
        #expect(groups[1].jain == 1, "one VM with traffic in tenant-b")
        #expect(table.vms.map(\.group) == ["tenant-a", "tenant-a", "tenant-b"])
        let text = FairnessTable.render([table])
        #expect(text.contains("Jain between groups") && text.contains("GROUP") && text.contains("tenant-b"), "\(text)")
    }

    @Test func policySetKeepsAVMsMinWithinItsGroupsMin() async throws {
        let rig = try GroupRig()
        await rig.controller.prepare()
        do {
            _ = try await rig.controller.setPolicy(vm: "a2", weight: nil, min: .mbit(150), max: nil)
            Issue.record("a min beyond the group's was set")
        } catch {
            #expect("\(error)" == "min 150mbit would bring the mins of group tenant-a's VMs to 250mbit (a1 100mbit, a2 150mbit), more than the group's min 200mbit", "\(error)")
        }
        _ = try await rig.controller.setPolicy(vm: "a2", weight: nil, min: .mbit(100), max: nil)
        // Outside groups the link's own rule: the group's min counts in full.
        do {
            _ = try await rig.controller.setPolicy(vm: "b1", weight: nil, min: .mbit(900), max: nil)
            Issue.record("a min beyond the group's was set")
        } catch {
            #expect("\(error)".contains("more than the group's min 0bit"), "\(error)")
        }
        try? FileManager.default.removeItem(atPath: rig.dir)
    }

    @Test func aReloadMovesAVMToAnotherGroup() async throws {
        let rig = try GroupRig()
        await rig.controller.prepare()
        await rig.rounds(40)
        let moved = try HostConfig.parse(Self.text.replacingOccurrences(of: "name = \"a2\"\ninterface = \"v2\"\ngroup = \"tenant-a\"", with: "name = \"a2\"\ninterface = \"v2\"\ngroup = \"tenant-b\""))
        let change = await rig.controller.reload(moved, attach: NoAttachments())
        #expect(change.repoliced.map(\.name) == ["a2"] && change.regrouped.isEmpty)
        await rig.rounds(100)
        // tenant-a: a1 alone with its 600; tenant-b: b1 and a2 (weights 1 and 3) share 400.
        let (a1, a2, b1) = (await rig.allocation("a1"), await rig.allocation("a2"), await rig.allocation("b1"))
        #expect(abs(a1 - 600) < 10 && abs(a2 - 300) < 10 && abs(b1 - 100) < 10, "\(a1) \(a2) \(b1)")
        try? FileManager.default.removeItem(atPath: rig.dir)
    }
}

/// For reloads that add no VM: nothing to attach.
struct NoAttachments: VMAttachments {
    func backend(for vm: HostConfig.VMConfig) -> any HardLimitBackend { FakeBackend() }
    func channel(for vm: HostConfig.VMConfig) -> (any GuestChannel)? { nil }
    func detach(_ vm: String) {}
}
