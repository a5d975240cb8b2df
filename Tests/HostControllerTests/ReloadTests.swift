import Foundation
import Logging
import Testing
import TandemProtocol
@testable import HostController
@testable import HostCore

/// Backends and channels made on demand for the controller, as the daemon's hub would
/// (a fake, named as such): what was made and what was detached is recorded.
final class FakeAttachments: VMAttachments, @unchecked Sendable {
    let lock = NSLock()
    var backends: [String: FakeBackend] = [:]
    var channels: [String: InMemoryChannel] = [:]
    var detached: [String] = []
    func backend(for vm: HostConfig.VMConfig) -> any HardLimitBackend {
        lock.withLock { let b = FakeBackend(); backends[vm.name] = b; return b }
    }
    func channel(for vm: HostConfig.VMConfig) -> (any GuestChannel)? {
        guard vm.channel != nil else { return nil }
        return lock.withLock { let c = InMemoryChannel(); channels[vm.name] = c; return c }
    }
    func detach(_ vm: String) { lock.withLock { detached.append(vm) } }
}

/// A reload (SIGHUP) applied to a running controller, with fake backends and a test clock.
@Suite(.serialized) struct ReloadTests {
    static let base = """
        [controller]
        interval = "100ms"
        [[link]]
        name = "wire"
        capacity = "200mbit"
        [[link]]
        name = "other"
        capacity = "100mbit"
        [[vm]]
        name = "vm1"
        link = "wire"
        interface = "v1"
        min = "50mbit"
        [[vm]]
        name = "vm2"
        link = "other"
        interface = "v2"
        channel = "/tmp/vm2.sock"
        """

    func controller(_ text: String, dir: String) throws -> (Controller, [String: FakeBackend], [String: InMemoryChannel]) {
        let config = try HostConfig.parse(text)
        let backends = ["vm1": FakeBackend(), "vm2": FakeBackend()]
        let channels = ["vm2": InMemoryChannel()]
        var log = Logger(label: "test")
        log.logLevel = .critical
        let c = try Controller(config: config, backends: backends, channels: channels, store: StateStore(directory: dir), logger: log, now: 1000)
        return (c, backends, channels)
    }

    @Test func addedVMsAreLimitedRemovedReleasedAndOthersUntouched() async throws {
        let dir = NSTemporaryDirectory() + "tandem-reload-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (c, backends, _) = try controller(Self.base, dir: dir)
        await c.prepare()
        var now = 1000.0
        for _ in 0..<5 { now += 0.1; await c.tick(now: now) }
        let vm1Applies = backends["vm1"]!.applies.count
        let vm1Prepares = backends["vm1"]!.prepares

        // vm2 leaves, vm3 comes on the same link.
        let text = Self.base.replacingOccurrences(of: """
            name = "vm2"
            link = "other"
            interface = "v2"
            channel = "/tmp/vm2.sock"
            """, with: """
            name = "vm3"
            link = "other"
            interface = "v3"
            channel = "/tmp/vm3.sock"
            weight = 2
            """)
        let attach = FakeAttachments()
        let change = await c.reload(try HostConfig.parse(text), attach: attach)
        #expect(change.removed == ["vm2"])
        #expect(change.added.map(\.name) == ["vm3"])
        #expect(change.replaced.isEmpty && change.repoliced.isEmpty && change.needsRestart.isEmpty)

        // vm2: its limit lifted (teardown), its channel closed, gone from the tables.
        #expect(backends["vm2"]!.teardowns == 1)
        #expect(attach.detached == ["vm2"])
        #expect(await c.snapshot("vm2") == nil)
        #expect(await c.fairness().flatMap(\.vms).map(\.vm) == ["vm1", "vm3"])
        // vm3: set up and limited in the reload itself (its fair share: the whole link), with
        // a channel of its own.
        let vm3 = try #require(attach.backends["vm3"])
        #expect(vm3.prepares == 1)
        #expect(vm3.limit == .mbit(100))
        #expect(attach.channels["vm3"] != nil)
        #expect(await c.snapshot("vm3")?.agent == .absent)
        // vm1, on another link: not touched.
        #expect(backends["vm1"]!.applies.count == vm1Applies)
        #expect(backends["vm1"]!.prepares == vm1Prepares)
        #expect(backends["vm1"]!.teardowns == 0)

        // Rounds go on with the new roster.
        for _ in 0..<5 { now += 0.1; await c.tick(now: now) }
        #expect(await c.snapshot("vm3")?.limit != nil)
        #expect(backends["vm1"]!.applies.count == vm1Applies, "vm1's limit is not rewritten by the rounds either")
    }

    @Test func policyBackendAndChannelChanges() async throws {
        let dir = NSTemporaryDirectory() + "tandem-reload-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (c, backends, _) = try controller(Self.base, dir: dir)
        await c.prepare()
        // vm1's guarantee changes; vm2 moves to another interface (a new backend).
        let text = Self.base.replacingOccurrences(of: #"min = "50mbit""#, with: #"min = "80mbit""#)
            .replacingOccurrences(of: #"interface = "v2""#, with: #"interface = "v9""#)
        let attach = FakeAttachments()
        let change = await c.reload(try HostConfig.parse(text), attach: attach)
        #expect(change.repoliced.map(\.name) == ["vm1"])
        #expect(change.replaced.map(\.name) == ["vm2"])
        #expect(await c.fairness().first?.vms.first?.min == 80_000_000)
        #expect(backends["vm1"]!.teardowns == 0, "a policy change keeps the backend")
        #expect(backends["vm2"]!.teardowns == 1, "the old interface is released")
        #expect(attach.backends["vm2"]?.prepares == 1, "the new one is set up")

        // Only the channel changes: the backend stays as it is.
        let moved = text.replacingOccurrences(of: "/tmp/vm2.sock", with: "/tmp/vm2-new.sock")
        let attach2 = FakeAttachments()
        let change2 = await c.reload(try HostConfig.parse(moved), attach: attach2)
        #expect(change2.replaced.map(\.name) == ["vm2"])
        #expect(attach2.backends.isEmpty, "no new backend for a new channel")
        #expect(attach2.detached == ["vm2"] && attach2.channels["vm2"] != nil)
        #expect(attach.backends["vm2"]?.teardowns == 0)

        // A policy set at runtime stays over the file's.
        _ = try await c.setPolicy(vm: "vm1", weight: 3, min: nil, max: nil)
        let third = moved.replacingOccurrences(of: #"min = "80mbit""#, with: "min = \"20mbit\"\nweight = 5")
        _ = await c.reload(try HostConfig.parse(third), attach: FakeAttachments())
        let row = try #require(await c.fairness().first?.vms.first)
        #expect(row.weight == 3 && row.min == 80_000_000)
    }

    /// A `[[vm]]` that becomes a libvirt domain of the same name (its entry removed from the
    /// file): its runtime policy from state.json goes, its metadata's policy counts, and
    /// `policy set` is refused from then on.
    @Test func aFileVMThatBecomesALibvirtDomainTakesItsPolicyFromLibvirt() async throws {
        let dir = NSTemporaryDirectory() + "tandem-reload-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (c, backends, _) = try controller(Self.base, dir: dir)
        await c.prepare()
        _ = try await c.setPolicy(vm: "vm1", weight: 3, min: nil, max: nil)
        var next = try HostConfig.parse(Self.base)
        next.vms[0].origin = .libvirt(uuid: "6a2c4e1e-0000-0000-0000-000000000001")
        next.vms[0].policy = VMPolicy(weight: 2, guarantee: .mbit(50), cap: nil)
        let change = await c.reload(next, attach: FakeAttachments())
        #expect(change.replaced.map(\.name) == ["vm1"])
        #expect(backends["vm1"]!.teardowns == 0, "the same tap: the backend stays")
        #expect(await c.fairness().first?.vms.first?.weight == 2)
        #expect(await c.status(now: 1000).vms.first?.origin == "libvirt")
        #expect(await c.libvirtVMs() == ["vm1"])
        await #expect(throws: PolicyError.fromLibvirt("vm1")) { _ = try await c.setPolicy(vm: "vm1", weight: 4, min: nil, max: nil) }
        let saved = try String(contentsOfFile: dir + "/state.json", encoding: .utf8)
        #expect(!saved.contains("\"vm1\""), "state.json still holds vm1's runtime policy: \(saved)")
    }

    /// state.json with a runtime policy and a reservation for vm2.
    func seedState(_ dir: String) throws {
        var state = PersistedState()
        state.policies["vm2"] = VMPolicy(weight: 4, guarantee: .mbit(30), cap: nil)
        state.reservations["vm2"] = [GrantedReservation(id: "r-1", rate: .mbit(10), selector: FlowSelector(proto: .tcp, destinationPort: 5201))]
        try StateStore(directory: dir).save(state)
    }

    @Test func aRemovedVMLeavesNothingBehindInTheStateFile() async throws {
        let dir = NSTemporaryDirectory() + "tandem-reload-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try seedState(dir)
        let (c, _, _) = try controller(Self.base, dir: dir)
        #expect(await c.snapshot("vm2")?.reservations.map(\.id) == ["r-1"])
        let without = Self.base.replacingOccurrences(of: """
            [[vm]]
            name = "vm2"
            link = "other"
            interface = "v2"
            channel = "/tmp/vm2.sock"
            """, with: "")
        _ = await c.reload(try HostConfig.parse(without), attach: FakeAttachments())
        let saved = try StateStore(directory: dir).load()
        #expect(saved.policies["vm2"] == nil, "its runtime policy is forgotten")
        #expect(saved.reservations["vm2"] == nil, "and its reservations, with it")
        // Back again: it starts from the file, holding nothing.
        _ = await c.reload(try HostConfig.parse(Self.base), attach: FakeAttachments())
        #expect(await c.snapshot("vm2")?.reservations.isEmpty == true)
        #expect(await c.fairness().last?.vms.first?.weight == 1)
    }

    @Test func aNewDeviceIsSetUpBeforeTheOldIsReleasedAndTheVMKeepsItsState() async throws {
        let dir = NSTemporaryDirectory() + "tandem-reload-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try seedState(dir)
        let (c, backends, _) = try controller(Self.base, dir: dir)
        await c.prepare()
        let old = backends["vm2"]!
        let attach = FakeAttachments()
        _ = await c.reload(try HostConfig.parse(Self.base.replacingOccurrences(of: #"interface = "v2""#, with: #"interface = "v9""#)), attach: attach)
        let new = try #require(attach.backends["vm2"])
        #expect(new.prepares == 1 && old.teardowns == 1)
        #expect(new.limit == old.appliedBeforeTeardown, "the new device starts at the limit the old one had")
        let snap = try #require(await c.snapshot("vm2"))
        #expect(snap.reservations.map(\.id) == ["r-1"], "reservations kept")
        #expect(await c.fairness().last?.vms.first?.weight == 4, "the runtime policy kept")
        #expect(try StateStore(directory: dir).load().policies["vm2"]?.weight == 4)
    }

    @Test func controllerKeysThatNeedARestartAreNamedAndKept() async throws {
        let dir = NSTemporaryDirectory() + "tandem-reload-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (c, _, _) = try controller(Self.base, dir: dir)
        let text = Self.base.replacingOccurrences(of: #"interval = "100ms""#, with: "interval = \"1s\"\nstep = \"5%\"")
        let change = await c.reload(try HostConfig.parse(text), attach: FakeAttachments())
        #expect(change.needsRestart == ["interval"])
        #expect(change.tuned)
        #expect(await c.config.controller.interval == 0.1)
        #expect(await c.config.controller.step == 0.05)
    }
}
