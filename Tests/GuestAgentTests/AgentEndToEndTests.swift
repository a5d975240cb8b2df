import Foundation
import Testing
import GuestAgent
import TandemProtocol
import TandemTestSupport
import AgentCore
import TandemLabSupport
import TandemTransport

/// The real tandem-agent binary in a network namespace, shaping a veth, with a test host
/// on the other end of a pseudo-terminal (its "virtio port").
final class AgentUnderTest: @unchecked Sendable {
    let pair: VethPair
    let host: TestHost
    let agent: BackgroundProcess
    let socket: String
    let logPath: URL

    init(extra: [String] = []) throws {
        pair = try VethPair(prefix: "tdm-agt")
        do {
            host = try TestHost()
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tandem-agent-test-\(getpid())-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            socket = dir.appendingPathComponent("agent.sock").path
            logPath = dir.appendingPathComponent("agent.log")
            agent = try BackgroundProcess(["ip", "netns", "exec", pair.a.name, Binaries.path("tandem-agent"), "run",
                                           "--interface", "t0", "--channel", host.slavePath, "--socket", socket,
                                           "--interval", "100ms", "--log-level", "debug"] + extra, log: logPath)
        } catch {
            pair.close()
            throw error
        }
    }

    var log: String { (try? String(contentsOf: logPath, encoding: .utf8)) ?? "" }

    /// The test host's handshake; a failure says whether the agent runs and what it logged
    /// (one CI run saw no hello at all within 30 s, with nothing else to go on).
    @discardableResult
    func handshake(vm: String = "vm-test", policy: VMPolicy = VMPolicy(weight: 1, guarantee: .mbit(20), cap: nil)) async throws -> Hello {
        do { return try await host.handshake(vm: vm, policy: policy) } catch {
            throw Shell.Failure("agent", "\(error); the agent \(agent.isRunning ? "runs" : "exited"); agent log:\n\(LogExcerpt.of(log, tail: 3000))")
        }
    }

    func classes() throws -> [TCText.Class] { TCText.classes(try pair.a.tc("-d class show dev t0")) }

    /// Waits until tc shows what `check` wants, or fails with what it showed.
    func waitForTC(_ what: String, timeout: Double = 10, _ check: ([TCText.Class]) -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let c = try? classes(), check(c) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw Shell.Failure("tc", "\(what) not seen within \(timeout)s; tc shows: \((try? pair.a.tc("class show dev t0")) ?? "?")\nagent log:\n\(LogExcerpt.of(log, tail: 3000))")
    }

    func waitForSocket() async throws -> AgentClient {
        for _ in 0..<200 {
            if let c = try? AgentClient(path: socket) { return c }
            try await Task.sleep(for: .milliseconds(25))
        }
        throw Shell.Failure("agent", "socket \(socket) never appeared; agent log:\n\(log)")
    }

    func close() {
        agent.stop()
        host.stop()
        pair.close()
        // (Its log is in any failure's message already.)
        try? FileManager.default.removeItem(at: logPath.deletingLastPathComponent())
    }
}

@Suite(.serialized, Privileged.enabled, .exclusive)
struct AgentEndToEndTests {
    @Test func treeFollowsAllocationsReservationsAndHolders() async throws {
        let t = try AgentUnderTest()
        defer { t.close() }
        // The tree appears before any host speaks (initial limit 10gbit).
        try await t.waitForTC("the agent's tree") { c in c.contains { $0.handle == "1:1" } && c.contains { $0.handle == "1:10" } && c.contains { $0.handle == "1:20" } }
        let hello = try await t.handshake()
        #expect(hello.interface == "t0")
        #expect(try t.pair.a.ip("-j link show t0").contains(hello.mac))

        // An allocation changes the root ceiling in place.
        t.host.send(.allocation(Allocation(epoch: 1, hardLimit: .mbit(110), softLimit: .mbit(100))))
        try await t.waitForTC("root at 100mbit") { $0.first { $0.handle == "1:1" }?.ceil == .mbit(100) }
        let applied: UInt64 = try await t.host.waitFor("applied") { m, _ in if case .applied(let a) = m, a.error == nil { return a.epoch }; return nil }
        #expect(applied == 1)
        let sentBefore = TCText.classes(try t.pair.a.tc("-s class show dev t0")).first { $0.handle == "1:10" }?.sentBytes
        t.host.send(.allocation(Allocation(epoch: 2, hardLimit: .mbit(60), softLimit: .mbit(50))))
        try await t.waitForTC("root at 50mbit") { $0.first { $0.handle == "1:1" }?.ceil == .mbit(50) }
        #expect(sentBefore != nil, "the class kept its identity")

        // Demand reports flow.
        let report: DemandReport = try await t.host.waitFor("demand") { m, _ in if case .demand(let d) = m { return d }; return nil }
        #expect(report.classes.contains { $0.name == "tcp" })
        #expect(report.epoch >= 1)

        // A reservation: asked of the host, answered to the client only after the grant.
        let client = try await t.waitForSocket()
        let answer = Task { try client.call(AgentRequest(op: "reserve", rate: "30mbit", proto: "tcp", dst: "10.99.0.2", dport: 5201), timeout: 10) }
        let asked: ReserveRequest = try await t.host.waitFor("reserve") { m, _ in if case .reserve(let r) = m { return r }; return nil }
        #expect(asked.rate == .mbit(30))
        #expect(asked.selector == FlowSelector(proto: .tcp, destination: IPPrefix("10.99.0.2"), destinationPort: 5201))
        t.host.send(.reservation(ReservationReply(id: asked.id, granted: true)))
        t.host.send(.allocation(Allocation(epoch: 3, hardLimit: .mbit(110), softLimit: .mbit(100), reservations: [GrantedReservation(id: asked.id, rate: .mbit(30), selector: asked.selector)])))
        let resp = try await answer.value
        #expect(resp.ok)
        #expect(resp.id == asked.id)
        try await t.waitForTC("the reservation's class") { $0.first { $0.handle == "1:100" }?.rate == .mbit(30) }
        let filters = TCText.u32Nodes(try t.pair.a.tc("filter show dev t0"))
        #expect(filters.contains { $0.flowid == "1:100" && $0.matches.contains("0a630002/ffffffff at 16") && $0.matches.contains("00001451/0000ffff at 20") })

        // A refusal reaches the client with the host's reason, and changes nothing.
        let refusedTask = Task { try client.call(AgentRequest(op: "reserve", rate: "500mbit", proto: "udp"), timeout: 10) }
        let asked2: ReserveRequest = try await t.host.waitFor("second reserve") { m, _ in if case .reserve(let r) = m, r.id != asked.id { return r }; return nil }
        t.host.send(.reservation(ReservationReply(id: asked2.id, granted: false, reason: "30mbit already reserved of the VM's 20mbit guarantee")))
        let refused = try await refusedTask.value
        #expect(!refused.ok)
        #expect(refused.error?.contains("30mbit already reserved") == true)

        // Bad input: a clear error naming the value.
        let bad = try client.call(AgentRequest(op: "reserve", rate: "fast"))
        #expect(bad.error?.contains("'fast'") == true)
        let bad2 = try client.call(AgentRequest(op: "reserve", rate: "1mbit", proto: "tcp", dst: "300.1.1.1"))
        #expect(bad2.error?.contains("300.1.1.1") == true)

        // The holder goes away: the reservation is released, its class goes.
        client.close()
        let released: String = try await t.host.waitFor("release") { m, _ in if case .release(let r) = m { return r.id }; return nil }
        #expect(released == asked.id)
        try await t.waitForTC("the reservation's class gone") { !$0.contains { $0.handle == "1:100" } }
    }

    @Test func hostGoingAwayAndComingBackIsSurvived() async throws {
        let t = try AgentUnderTest()
        defer { t.close() }
        try await t.handshake()
        t.host.send(.allocation(Allocation(epoch: 5, hardLimit: .mbit(80), softLimit: .mbit(70))))
        try await t.waitForTC("root at 70mbit") { $0.first { $0.handle == "1:1" }?.ceil == .mbit(70) }
        let client = try await t.waitForSocket()
        let answer = Task { try client.call(AgentRequest(op: "reserve", rate: "10mbit", proto: "tcp", dport: 22)) }
        let asked: ReserveRequest = try await t.host.waitFor("reserve") { m, _ in if case .reserve(let r) = m { return r }; return nil }
        t.host.send(.reservation(ReservationReply(id: asked.id, granted: true)))
        #expect(try await answer.value.ok)
        let oldSession = t.host.session

        // The host goes silent (controller stopped); the agent keeps enforcing.
        t.host.heartbeat = false
        t.host.forget()
        try await Task.sleep(for: .seconds(6))
        #expect(try t.classes().first { $0.handle == "1:1" }?.ceil == .mbit(70), "the last allocation stays in force")
        let hellos = t.host.messages.filter { if case .hello = $0 { return true }; return false }
        #expect(!hellos.isEmpty, "after 5s of silence the agent greets again")

        // A new controller connects: ping without a session; the agent greets it with a new
        // session and re-sends its reservation.
        t.host.forget()
        t.host.session = nil
        t.host.heartbeat = true
        try await t.handshake(vm: "vm-test-2")
        #expect(t.host.session != oldSession)
        let again: ReserveRequest = try await t.host.waitFor("re-sent reserve") { m, s in
            if case .reserve(let r) = m, s == t.host.session { return r }
            return nil
        }
        #expect(again.id == asked.id)
        #expect(again.rate == .mbit(10))
        let status = try client.call(AgentRequest(op: "status"))
        #expect(status.status?.host == "connected")
        #expect(status.status?.vm == "vm-test-2")
        #expect(status.status?.reservations.count == 1)
    }

    @Test func foreignQdiscIsRefusedWithoutForceAndSigtermRemovesTheTree() async throws {
        let pair = try VethPair(prefix: "tdm-agt")
        defer { pair.close() }
        try pair.a.tc("qdisc add dev t0 root handle 5: tbf rate 10mbit burst 10kb latency 50ms")
        let host = try TestHost()
        defer { host.stop() }
        let r = try Shell.run(["ip", "netns", "exec", pair.a.name, Binaries.path("tandem-agent"), "run", "--interface", "t0",
                               "--channel", host.slavePath, "--socket", "/tmp/tandem-foreign-\(getpid()).sock"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("not Tandem's"), "stderr: \(r.stderr)")
        #expect(try pair.a.tc("qdisc show dev t0").contains("tbf 5:"), "nothing changed")

        let agent = try BackgroundProcess(["ip", "netns", "exec", pair.a.name, Binaries.path("tandem-agent"), "run", "--interface", "t0",
                                           "--channel", host.slavePath, "--socket", "/tmp/tandem-foreign-\(getpid()).sock", "--force"])
        defer { agent.stop() }
        for _ in 0..<100 where !(try pair.a.tc("qdisc show dev t0")).contains("htb 1:") { try await Task.sleep(for: .milliseconds(50)) }
        #expect(try pair.a.tc("qdisc show dev t0").contains("htb 1:"))
        agent.stop(signal: SIGTERM)
        #expect(agent.process.terminationStatus == 0)
        #expect(!(try pair.a.tc("qdisc show dev t0")).contains("htb"), "SIGTERM removes the shaping")
    }

    @Test func secondAgentOnTheSamePortIsToldItIsBusy() throws {
        // A virtio port refuses a second open with EBUSY; a pty does not, so this checks the
        // message path with a descriptor that fails the same way: a missing device.
        let r = try Shell.run([Binaries.path("tandem-agent"), "run", "--interface", "lo", "--channel", "/dev/no-such-port-\(getpid())", "--socket", "/tmp/x-\(getpid()).sock"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("/dev/no-such-port"))
    }
}
