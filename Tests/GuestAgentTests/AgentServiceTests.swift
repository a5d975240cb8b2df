import Foundation
import Logging
import Testing
import Netlink
import TandemProtocol
import TandemTestSupport
import AgentCore
import TandemDaemon
import TandemTransport
@testable import GuestAgent

/// A shaper that records the trees it is given (a fake, named as such): no kernel, no root.
final class FakeShaper: GuestShaper, @unchecked Sendable {
    let lock = NSLock()
    var trees: [ShapingTree] = []
    var removed = false
    func apply(_ tree: ShapingTree, force: Bool) async throws -> [ShapingOperation] {
        lock.withLock { trees.append(tree) }
        return []
    }
    /// The last tree's classes, with no traffic counted.
    func classStats() async throws -> [HTBClassState] { lock.withLock { trees.last?.classes.map { HTBClassState(spec: $0) } ?? [] } }
    func recover() async throws -> Bool { false }
    func remove() async throws { lock.withLock { removed = true } }
    func mac() async throws -> String? { "52:54:00:12:34:56" }
    var last: ShapingTree? { lock.withLock { trees.last } }
    var top: BitRate? { last?.classes.first { $0.handle == ShapingTree.top }?.ceil }
}

/// A clock the test moves (seconds).
final class TestClock: @unchecked Sendable {
    let lock = NSLock()
    var t = 5000.0
    func now() -> Double { lock.withLock { t } }
    func advance(_ s: Double) { lock.withLock { t += s } }
}

/// The agent in this process with a fake shaper and a test clock, its channel a
/// pseudo-terminal to a test host, its socket a real unix socket: the service tier, no root.
@Suite(.serialized, .exclusive) struct AgentServiceTests {
    func until(_ what: String, timeout: Double = 5, _ ok: () -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if ok() { return }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("\(what) not within \(timeout) s")
        throw CancellationError()
    }

    /// The agent on `host`'s pseudo-terminal with a fake shaper, reporting every 50 ms,
    /// telling `notify` when it is ready; on the test's clock if given.
    static func agent(_ host: TestHost, _ shaper: FakeShaper, _ notify: FakeNotifySocket, socket: String, clock: TestClock? = nil) -> Agent {
        var log = Logger(label: "test")
        log.logLevel = .critical
        let options = AgentOptions(interface: "eth0", channel: .device(host.slavePath), socketPath: socket, interval: 0.05, initialLimit: .gbit(1))
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": notify.path])
        if let clock { return Agent(options: options, logger: log, shaper: shaper, clock: { clock.now() }, notifier: notifier) }
        return Agent(options: options, logger: log, shaper: shaper, notifier: notifier)
    }

    @Test func allocationsReservationsAndTTLsWithAFakeShaperAndATestClock() async throws {
        let host = try TestHost()
        defer { host.stop() }
        let shaper = FakeShaper()
        let clock = TestClock()
        let notify = try FakeNotifySocket()
        let dir = NSTemporaryDirectory() + "tandem-agent-svc-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let agent = Self.agent(host, shaper, notify, socket: dir + "/agent.sock", clock: clock)
        let running = Task { try await agent.run() }

        // Ready once the first tree is installed: the initial limit.
        #expect(notify.receive(timeout: 5)?.hasPrefix("READY=1") == true)
        #expect(shaper.top == .gbit(1))

        let hello = try await host.handshake(vm: "vm-svc")
        #expect(hello.mac == "52:54:00:12:34:56")
        host.send(.allocation(Allocation(epoch: 1, hardLimit: .mbit(100), softLimit: .mbit(97))))
        try await until("the allocation shaped") { shaper.top == .mbit(97) }
        _ = try await host.waitFor("applied") { m, _ in if case .applied(let a) = m, a.epoch == 1 { return true }; return nil }

        // An application reserves for 2 s; the host grants it and allocates it.
        let grants = host.grantAll()
        defer { grants.cancel() }
        let client = try AgentClient(path: dir + "/agent.sock")
        let reply = try await offPool { try client.call(AgentRequest(op: "reserve", rate: "20mbit", proto: "tcp", dst: "10.0.0.5", dport: 5201, ttl: "2s")) }
        #expect(reply.ok, "\(reply.error ?? "")")
        let id = try #require(reply.id)
        let granted = try #require(host.messages.compactMap { m -> GrantedReservation? in
            if case .reserve(let r) = m, r.id == id { return GrantedReservation(id: r.id, rate: r.rate, selector: r.selector) }
            return nil
        }.first)
        host.send(.allocation(Allocation(epoch: 2, hardLimit: .mbit(100), softLimit: .mbit(97), reservations: [granted])))
        try await until("the reservation's class") { shaper.last?.appliedReservations[id] == .mbit(20) }

        // The connection stays open, but the TTL (2 s on the test clock) runs out: released.
        clock.advance(1)
        try await Task.sleep(for: .milliseconds(200))
        #expect(!host.messages.contains { if case .release(let r) = $0 { return r.id == id }; return false }, "not before its TTL")
        clock.advance(1.5)
        _ = try await host.waitFor("release") { m, _ in if case .release(let r) = m, r.id == id { return true }; return nil }
        let list = try await offPool { try client.call(AgentRequest(op: "list")) }
        #expect(list.reservations?.isEmpty == true)
        client.close()

        // A graceful stop removes the shaping (no --keep-shaping).
        running.cancel()
        _ = try? await running.value
        #expect(shaper.removed)
        var last: String?
        while let m = notify.receive(timeout: 0.5) { last = m }
        #expect(last == "STOPPING=1")
    }

    /// `tandem-host reservations release`: the host's next allocation no longer carries the
    /// reservation; the agent drops it (its list, its class) and does not ask for it again
    /// when the host welcomes it anew.
    @Test func aReservationTheHostReleasedIsDroppedAndNotAskedForAgain() async throws {
        let host = try TestHost()
        defer { host.stop() }
        let shaper = FakeShaper()
        let notify = try FakeNotifySocket()
        let dir = NSTemporaryDirectory() + "tandem-agent-rel-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let agent = Self.agent(host, shaper, notify, socket: dir + "/agent.sock")
        let running = Task { try await agent.run() }
        defer { running.cancel() }
        #expect(notify.receive(timeout: 5)?.hasPrefix("READY=1") == true)
        _ = try await host.handshake(vm: "vm-rel")
        host.send(.allocation(Allocation(epoch: 1, hardLimit: .mbit(100), softLimit: .mbit(97))))
        _ = try await host.waitFor("applied") { m, _ in if case .applied(let a) = m, a.epoch == 1 { return true }; return nil }
        let grants = host.grantAll()
        defer { grants.cancel() }
        let client = try AgentClient(path: dir + "/agent.sock")
        defer { client.close() }
        let reply = try await offPool { try client.call(AgentRequest(op: "reserve", rate: "20mbit", proto: "tcp", dport: 5201)) }
        let id = try #require(reply.id, "\(reply.error ?? "")")
        let granted = try #require(host.messages.compactMap { m -> GrantedReservation? in
            if case .reserve(let r) = m, r.id == id { return GrantedReservation(id: r.id, rate: r.rate, selector: r.selector) }
            return nil
        }.first)
        host.send(.allocation(Allocation(epoch: 2, hardLimit: .mbit(100), softLimit: .mbit(97), reservations: [granted])))
        try await until("the reservation's class") { shaper.last?.appliedReservations[id] == .mbit(20) }

        // Released at the host: the next allocation comes without it.
        host.send(.allocation(Allocation(epoch: 3, hardLimit: .mbit(100), softLimit: .mbit(97), reservations: [])))
        try await until("its class gone") { shaper.last?.appliedReservations[id] == nil }
        try await until("gone from the agent's list") {
            ((try? client.call(AgentRequest(op: "list")))?.reservations?.isEmpty) == true
        }
        // A new welcome (the host restarted): the agent re-asks only what it still holds.
        let asked = host.messages.filter { if case .reserve = $0 { return true }; return false }.count
        host.send(.welcome(Welcome(version: .current, vm: "vm-rel", policy: VMPolicy(weight: 1), reportIntervalMilliseconds: 100)))
        try await Task.sleep(for: .milliseconds(300))
        #expect(host.messages.filter { if case .reserve = $0 { return true }; return false }.count == asked, "not asked for again")
    }

    /// An application asking for reservations as fast as it can: the agent answers the ones
    /// over its pace itself ("slow down") instead of forwarding them, so the host never sees
    /// more than the budget and never cuts the VM off for it (issue #18, item 5). The test
    /// clock stands still: exactly one burst goes through.
    @Test func reservationRequestsArePacedBeforeTheyReachTheHost() async throws {
        let host = try TestHost()
        defer { host.stop() }
        let shaper = FakeShaper()
        let clock = TestClock()
        let dir = NSTemporaryDirectory() + "tandem-agent-pace-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var log = Logger(label: "test")
        log.logLevel = .critical
        let agent = Agent(options: AgentOptions(interface: "eth0", channel: .device(host.slavePath), socketPath: dir + "/agent.sock",
                                                interval: 0.05, initialLimit: .gbit(1)),
                          logger: log, shaper: shaper, clock: { clock.now() })
        let running = Task { try await agent.run() }
        defer { running.cancel() }
        // The agent says hello when its port opens, and again each second on its clock, which
        // stands still here: moved on once, so a first hello lost under load is said again.
        try await Task.sleep(for: .milliseconds(200))
        clock.advance(1.5)
        _ = try await host.handshake(vm: "vm-pace")
        let grants = host.grantAll()
        defer { grants.cancel() }
        try await until("the agent's socket") { FileManager.default.fileExists(atPath: dir + "/agent.sock") }
        let client = try AgentClient(path: dir + "/agent.sock")
        defer { client.close() }
        // (The welcome is taken in by the agent a moment after the host sent it: an allocation
        // applied says it has been.)
        host.send(.allocation(Allocation(epoch: 1, hardLimit: .mbit(500), softLimit: .mbit(485))))
        _ = try await host.waitFor("applied") { m, _ in if case .applied(let a) = m, a.epoch == 1 { return true }; return nil }
        let st = try await offPool { try client.call(AgentRequest(op: "status"), timeout: 3) }
        #expect(st.status?.host == "connected")
        var granted = 0, slowDown = 0
        var other: [String] = []
        for i in 0..<30 {
            let r = try await offPool { try client.call(AgentRequest(op: "reserve", rate: "1mbit", proto: "tcp", dport: UInt16(6000 + i))) }
            if r.ok { granted += 1 } else if r.error?.contains("slow down") == true { slowDown += 1 } else { other.append(r.error ?? "?") }
        }
        #expect(other.isEmpty, "\(other)")
        let forwarded = host.messages.filter { if case .reserve = $0 { return true }; return false }.count
        #expect(granted == Int(Agent.userRequestBurst), "granted \(granted)")
        #expect(slowDown == 30 - granted)
        #expect(forwarded == granted, "the host saw \(forwarded) reserve frames")
        // Time passes: the pace allows more again.
        clock.advance(1)
        let r = try await offPool { try client.call(AgentRequest(op: "reserve", rate: "1mbit", proto: "tcp", dport: 7000)) }
        #expect(r.ok, "\(r.error ?? "")")
    }
}
