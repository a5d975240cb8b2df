import Foundation
import Testing
import TandemProtocol
import TandemTestSupport
@testable import HostController
import HostCore
import TandemLabSupport
import TandemTransport
#if canImport(Glibc)
import Glibc
#endif

/// The real tandem-host as systemd runs it: readiness and the watchdog through a notify
/// socket (a fake of systemd's, a real datagram socket), and SIGHUP reloads.
@Suite(.serialized, Privileged.enabled, .exclusive)
struct HostDaemonLifecycleTests {
    /// A namespace with veth pairs t0/t1, t2/t3, ... and a folder for the daemon's files.
    final class Host {
        let ns: Netns
        let dir: String
        var process: BackgroundProcess?

        init(pairs: Int) throws {
            ns = try Netns(prefix: "tdm-life")
            dir = NSTemporaryDirectory() + "tandem-life-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            for k in 0..<pairs {
                try ns.ip("link add t\(2 * k) type veth peer name t\(2 * k + 1)")
                try ns.ip("link set t\(2 * k) up")
                try ns.ip("link set t\(2 * k + 1) up")
            }
        }

        func close() {
            process?.stop()
            ns.delete()
            try? FileManager.default.removeItem(atPath: dir)
        }

        var configPath: String { dir + "/host.toml" }

        func write(interval: String, vms: [(name: String, link: String, interface: String)]) throws {
            var text = """
                [controller]
                interval = "\(interval)"
                admin_socket = "\(dir)/host.sock"
                state_dir = "\(dir)/state"
                metrics = "off"

                [[link]]
                name = "wire"
                capacity = "100mbit"

                [[link]]
                name = "other"
                capacity = "100mbit"

                """
            for v in vms { text += "\n[[vm]]\nname = \"\(v.name)\"\nlink = \"\(v.link)\"\ninterface = \"\(v.interface)\"\n" }
            try text.write(toFile: configPath, atomically: true, encoding: .utf8)
        }

        func start(environment: [String: String] = [:]) throws {
            process = try BackgroundProcess(["ip", "netns", "exec", ns.name, Binaries.path("tandem-host"), "run", "--config", configPath],
                                            log: URL(fileURLWithPath: dir + "/host.log"), environment: environment)
        }

        var log: String { (try? String(contentsOfFile: dir + "/host.log", encoding: .utf8)) ?? "" }

        func ifb(_ vm: String) -> String { "tdm-" + TCBackend.hash8(vm) }

        /// The VM's limit class as the kernel has it, or nil.
        func limitClass(_ vm: String) -> String? {
            guard let out = try? ns.tc("class show dev \(ifb(vm))") else { return nil }
            return out.contains("class htb 1:10") ? out : nil
        }

        /// What the kernel has for a VM's tc backend: the IFB (with its index), its classes,
        /// and the ingress qdisc and redirect on its interface.
        func kernelState(_ vm: String, interface: String) throws -> String {
            try ns.ip("-o link show \(ifb(vm))") + ns.tc("class show dev \(ifb(vm))") + ns.tc("qdisc show dev \(interface)")
                + ns.tc("filter show dev \(interface) ingress")
        }

        func fairnessVMs() throws -> [String] {
            let r = try LineClient(path: dir + "/host.sock", what: "tandem-host").call(AdminRequest(op: "fairness"), as: AdminResponse.self, timeout: 3)
            return (r.fairness ?? []).flatMap { $0.vms.map(\.vm) }
        }
    }

    func until(_ what: String, timeout: Double, _ ok: () -> Bool) async throws -> Double {
        let t0 = POSIX.now()
        while POSIX.now() - t0 < timeout {
            if ok() { return POSIX.now() - t0 }
            try await Task.sleep(for: .milliseconds(10))
        }
        Issue.record("\(what) not within \(timeout) s")
        throw CancellationError()
    }

    /// `READY=1` only once the first round has run (the limit is in the kernel), then a
    /// watchdog ping per round, and `STOPPING=1` on SIGTERM.
    @Test func readyAfterTheFirstRoundThenWatchdogPings() async throws {
        let host = try Host(pairs: 1)
        defer { host.close() }
        try host.write(interval: "1s", vms: [("vm1", "wire", "t0")])
        let notify = try FakeNotifySocket()
        let started = POSIX.now()
        try host.start(environment: ["NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "4000000"])
        let ready = try #require(notify.receive(timeout: 10), "no READY=1; log: \(host.log)")
        let waited = POSIX.now() - started
        #expect(ready.hasPrefix("READY=1\n"), "\(ready)")
        #expect(ready.contains("STATUS=1 VMs on 2 links"))
        // The first round comes one interval after the start: ready is not said before it.
        #expect(waited >= 0.9, "READY=1 after \(waited) s, before the first 1-s round")
        #expect(host.limitClass("vm1") != nil, "the limit is in the kernel when READY=1 arrives")
        // One ping per round (the watchdog wants one within 4 s: at most one a second).
        #expect(notify.receive(timeout: 3) == "WATCHDOG=1")
        #expect(notify.receive(timeout: 3) == "WATCHDOG=1")
        host.process?.stop()
        var last: String?
        while let m = notify.receive(timeout: 1) { last = m }
        #expect(last == "STOPPING=1")
        #expect(host.limitClass("vm1") != nil, "limits stay in force after a stop")
    }

    /// SIGHUP: a VM added to host.toml is limited within a round, a removed one released,
    /// and the VM the change does not name sees no kernel request at all (`tc monitor`
    /// records none for its devices, and its state is the same before and after).
    @Test func sighupAddsAndRemovesVMsAndLeavesTheOthersAlone() async throws {
        let host = try Host(pairs: 3)
        defer { host.close() }
        try host.write(interval: "100ms", vms: [("vm1", "wire", "t0"), ("vm2", "other", "t2")])
        let notify = try FakeNotifySocket()
        try host.start(environment: ["NOTIFY_SOCKET": notify.path])
        #expect(notify.receive(timeout: 10)?.hasPrefix("READY=1") == true, "log: \(host.log)")
        #expect(host.limitClass("vm1") != nil && host.limitClass("vm2") != nil)
        try await Task.sleep(for: .milliseconds(500))   // a few rounds: the limits settle
        let before = try host.kernelState("vm1", interface: "t0")

        let monitorLog = URL(fileURLWithPath: host.dir + "/monitor.log")
        let monitor = try BackgroundProcess(["ip", "netns", "exec", host.ns.name, "tc", "monitor"], log: monitorLog)
        defer { monitor.stop() }
        try await Task.sleep(for: .milliseconds(200))

        try host.write(interval: "100ms", vms: [("vm1", "wire", "t0"), ("vm3", "other", "t4")])
        kill(try #require(host.process?.pid), SIGHUP)
        let took = try await until("vm3 limited", timeout: 3) { host.limitClass("vm3") != nil }
        #expect(took < 1, "vm3 limited \(took) s after SIGHUP")
        _ = try await until("vm2 released", timeout: 3) { (try? host.ns.ip("-o link show \(host.ifb("vm2"))")) == nil }
        #expect(!(try host.ns.tc("qdisc show dev t2")).contains("ingress"), "vm2's redirect is gone")
        try await Task.sleep(for: .milliseconds(500))   // rounds go on
        monitor.stop()

        #expect(try host.kernelState("vm1", interface: "t0") == before)
        let events = (try? String(contentsOf: monitorLog, encoding: .utf8)) ?? ""
        let vm1Events = events.split(separator: "\n").filter { $0.contains("dev \(host.ifb("vm1")) ") || $0.contains("dev t0 ") }
        #expect(vm1Events.isEmpty, "requests for vm1 during the reload: \(vm1Events)")
        #expect(events.contains(host.ifb("vm3")), "the monitor saw the reload's own requests: \(events.prefix(500))")
        #expect(try host.fairnessVMs() == ["vm1", "vm3"])
        #expect(notify.receive(timeout: 1)?.hasPrefix("RELOADING=1") == true)
        #expect(notify.receive(timeout: 1)?.contains("1 added, 1 removed") == true)

        // A bad file changes nothing, and the daemon goes on.
        try "[[vm]]\nname = \"vm4\"\n".write(toFile: host.configPath, atomically: true, encoding: .utf8)
        kill(try #require(host.process?.pid), SIGHUP)
        _ = try await until("the refusal logged", timeout: 3) { host.log.contains("configuration not reloaded") }
        #expect(host.process?.isRunning == true)
        #expect(try host.fairnessVMs() == ["vm1", "vm3"])
        #expect(host.limitClass("vm3") != nil)
    }
}
