import Foundation
import Testing
import TandemProtocol
import TandemTestSupport
import TandemLab
import HostController
import HostCore
import TandemLabSupport
import TandemTransport
#if canImport(Glibc)
import Glibc
#endif

/// Faults on the lab's topology (real binaries, pty relays standing in for QEMU): processes
/// killed with SIGKILL, the channel dropped, the VM's interface deleted and re-created.
@Suite(.serialized, Privileged.enabled, .exclusive)
struct FaultTests {
    func fairness(_ lab: Lab, _ t: Lab.Topology) -> [LinkFairness.Row] { (try? lab.fairness(t)) ?? [] }

    func until(_ what: String, timeout: Double, _ ok: () -> Bool) async throws -> Double {
        let t0 = POSIX.now()
        while POSIX.now() - t0 < timeout {
            if ok() { return POSIX.now() - t0 }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw Shell.Failure("fault", "\(what) not within \(timeout)s")
    }

    /// The host-side class that limits VM `i` (on its IFB), as tc sees it.
    func limitClass(_ t: Lab.Topology, vm: String) -> TCText.Class? {
        let ifb = "tdm-" + TCBackend.hash8(vm)
        return TCText.classes((try? t.host.tc("class show dev \(ifb)")) ?? "").first { $0.handle == "1:10" }
    }

    /// The VM is limited: its class with a rate, and its interface's traffic redirected into
    /// that IFB (a class nobody's traffic reaches limits nothing).
    func limited(_ t: Lab.Topology, vm: String, interface: String) -> Bool {
        guard let c = limitClass(t, vm: vm), c.rate != nil else { return false }
        let redirect = (try? t.host.tc("filter show dev \(interface) ingress")) ?? ""
        return redirect.contains("Egress Redirect to device tdm-" + TCBackend.hash8(vm))
    }

    @Test func killsDropsAndInterfaceChurnAreSurvived() async throws {
        var o = Lab.Options(binaries: URL(fileURLWithPath: Binaries.path("tandem-host")).deletingLastPathComponent().path)
        o.vms = 2
        o.link = .mbit(200)
        let lab = Lab(options: o) { _ in }
        _ = Lab.cleanStale()
        let t = try Lab.Topology()
        defer { t.teardown(keepLogs: false) }
        try lab.build(t)
        try lab.startTandem(t)
        _ = try await until("both agents connected", timeout: 15) { fairness(lab, t).filter { $0.agent == "connected" }.count == 2 }
        #expect(limitClass(t, vm: "vm1") != nil)

        // 1. kill -9 of vm1's agent: the hard limit stays; a new agent takes over the tree.
        func session() -> String? {
            (try? LineClient(path: t.dir.appendingPathComponent("host.sock").path, what: "host").call(AdminRequest(op: "status"), as: AdminResponse.self))?.status?.vms[0].session
        }
        let before = session()
        let oldAgent = try #require(t.processes.first { p in
            let a = p.process.arguments ?? []
            return a.contains { $0.hasSuffix("/tandem-agent") } && a.contains(t.vmNS[0].name)
        })
        kill(oldAgent.pid, SIGKILL)
        _ = oldAgent.wait(timeout: 5)
        #expect(limitClass(t, vm: "vm1")?.ceil != nil, "the host's limit stays with the agent dead")
        #expect(try t.vmNS[0].tc("class show dev eth0").contains("class htb 1:1"), "the agent's tree stays too")
        let relay = t.relays[0]
        let newAgent = try BackgroundProcess(["ip", "netns", "exec", t.vmNS[0].name, o.binaries + "/tandem-agent", "run", "--interface", "eth0",
                                              "--channel", relay.slavePath, "--socket", t.dir.appendingPathComponent("vm1-agent.sock").path, "--interval", "100ms"],
                                             log: t.dir.appendingPathComponent("vm1-agent-2.log"))
        t.processes.append(newAgent)
        let takeover = try await until("the restarted agent welcomed (a new session)", timeout: 10) {
            let now = session()
            return now != nil && now != before && fairness(lab, t).first?.agent == "connected"
        }
        #expect(newAgent.isRunning, "it took over its own tree (no foreign-qdisc refusal)")
        print("fault: agent restarted after kill -9, welcomed in \(String(format: "%.1f", takeover))s")

        // 2. kill -9 of the controller: limits stay; the restarted one reconciles, no VM unlimited in between.
        let controller = try #require(t.controller)
        kill(controller.pid, SIGKILL)
        _ = controller.wait(timeout: 5)
        let cfg = t.dir.appendingPathComponent("host.toml").path
        let restarted = try BackgroundProcess(["ip", "netns", "exec", t.host.name, o.binaries + "/tandem-host", "run", "--config", cfg],
                                              log: t.dir.appendingPathComponent("host-2.log"))
        t.processes.append(restarted)
        var unlimitedSeen = false
        let t0 = POSIX.now()
        var reconciled: Double? = nil
        while POSIX.now() - t0 < 10 {
            if !limited(t, vm: "vm1", interface: "vm1h") || !limited(t, vm: "vm2", interface: "vm2h") { unlimitedSeen = true }
            if reconciled == nil, fairness(lab, t).filter({ $0.agent == "connected" }).count == 2 { reconciled = POSIX.now() - t0 }
            if reconciled != nil && POSIX.now() - t0 > (reconciled! + 1) { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        print("fault: controller restarted after kill -9, agents welcomed again in \(reconciled.map { String(format: "%.2f", $0) } ?? "never")s")
        #expect(!unlimitedSeen, "no VM was without its limit at any sample")
        #expect((reconciled ?? 99) <= 2, "reconciled within 2 s")

        // 3. The channel dropped (QEMU's peer gone) and restored: the controller reconnects.
        let acceptedBefore = relay.accepted
        relay.dropClient()
        // Back means connected again through a new connection (not the old one never cut).
        _ = try await until("the channel back", timeout: 10) {
            relay.accepted > acceptedBefore && fairness(lab, t).first?.agent == "connected"
        }
        try await Task.sleep(for: .milliseconds(500))
        _ = try await until("vm1 connected after the drop", timeout: 10) { fairness(lab, t).first?.agent == "connected" }

        // 4. The VM's interface deleted under the controller (the VM shut down) and re-created.
        try t.host.ip("link del vm1h")
        // Found within a round or two (the round's qdisc dump no longer shows the
        // interface's ingress) and reported; the controller carries on.
        let noticed = try await until("the missing interface reported", timeout: 8) {
            let st = try? LineClient(path: t.dir.appendingPathComponent("host.sock").path, what: "host").call(AdminRequest(op: "status"), as: AdminResponse.self).status
            return st?.vms[0].lastError != nil
        }
        print("fault: vm1's interface deleted; reported after \(String(format: "%.1f", noticed))s")
        #expect(restarted.isRunning, "no crash")
        try t.host.addVeth("vm1h", peer: t.vmNS[0], "eth0")
        try t.host.ip("link set vm1h master br0")
        try t.vmNS[0].ip("addr add 10.77.0.1/24 dev eth0")
        let picked = try await until("the new interface set up again", timeout: 12) {
            ((try? t.host.tc("filter show dev vm1h ingress")) ?? "").contains("Egress Redirect to device")
        }
        print("fault: vm1's interface deleted and re-created; redirect back in \(String(format: "%.1f", picked))s")
        let st2 = try LineClient(path: t.dir.appendingPathComponent("host.sock").path, what: "host").call(AdminRequest(op: "status"), as: AdminResponse.self).status!
        #expect(st2.vms[1].lastError == nil, "the other VM was unaffected")
    }
}
