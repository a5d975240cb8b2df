import Foundation
import Testing
import Netlink
import TandemProtocol
import TandemTestSupport
@testable import HostController
@testable import HostCore
import TandemLabSupport
import TandemTransport

/// The real tandem-host binary: config errors, the admin socket, persisted policy, metrics.
@Suite(.serialized, Privileged.enabled, .exclusive)
struct HostDaemonTests {
    static func config(dir: String, metricsPort: Int) -> String {
        """
        [controller]
        interval = "100ms"
        admin_socket = "\(dir)/host.sock"
        state_dir = "\(dir)/state"
        metrics = "127.0.0.1:\(metricsPort)"

        [[link]]
        name = "wire"
        capacity = "100mbit"

        [[group]]
        name = "spare"

        [[vm]]
        name = "vm1"
        interface = "t0"
        min = "10mbit"

        [[vm]]
        name = "vm2"
        interface = "t2"
        """
    }

    @Test func badConfigStartsNothingAndNamesTheProblem() throws {
        let dir = NSTemporaryDirectory() + "tandem-host-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/host.toml"
        try Self.config(dir: dir, metricsPort: 1).replacingOccurrences(of: #"min = "10mbit""#, with: #"min = "10 mbit""#).write(toFile: path, atomically: true, encoding: .utf8)
        let r = try Shell.run([Binaries.path("tandem-host"), "run", "--config", path])
        #expect(r.status != 0)
        #expect(r.stderr.contains("\(path):17: [[vm]] #1 (vm1): key 'min': invalid rate '10 mbit'"), "stderr: \(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/host.sock"), "nothing started")
        let ok = try Shell.run([Binaries.path("tandem-host"), "run", "--config", path.replacingOccurrences(of: "host.toml", with: "missing.toml"), "--check"])
        #expect(ok.status != 0)
        #expect(ok.stderr.contains("missing.toml: cannot read"))
    }

    /// Rounds every 2 s: the guests' channels are still read (and answered) within 100 ms,
    /// between rounds, not only at them.
    @Test func withLongRoundsAGuestIsStillAnsweredWithinAPass() throws {
        let ns = try Netns(prefix: "tdm-hostp")
        defer { ns.delete() }
        try ns.ip("link add t0 type veth peer name t1")
        for d in ["t0", "t1"] { try ns.ip("link set \(d) up") }
        let dir = NSTemporaryDirectory() + "tandem-host-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try """
        [controller]
        interval = "2s"
        admin_socket = "\(dir)/host.sock"
        state_dir = "\(dir)/state"
        metrics = "off"
        [[link]]
        name = "wire"
        capacity = "100mbit"
        [[vm]]
        name = "vm1"
        interface = "t0"
        channel = "\(dir)/vm1.sock"
        """.write(toFile: dir + "/host.toml", atomically: true, encoding: .utf8)
        // The test is the guest, behind the socket QEMU would serve.
        let listener = try UnixSocket.listen(dir + "/vm1.sock", mode: 0o600)
        defer { close(listener) }
        let host = try BackgroundProcess(["ip", "netns", "exec", ns.name, Binaries.path("tandem-host"), "run", "--config", dir + "/host.toml"], log: URL(fileURLWithPath: dir + "/host.log"))
        defer { host.stop() }
        var fd: Int32 = -1
        for _ in 0..<100 where fd < 0 { _ = POSIX.poll([(listener, Int16(POLLIN))], timeoutMilliseconds: 100); fd = UnixSocket.accept(listener) ?? -1 }
        try #require(fd >= 0, "the controller connected")
        defer { close(fd) }
        let session = SessionID(0x5e55)
        var decoder = FrameDecoder()
        func next(within seconds: Double) -> HostMessage? {
            let until = POSIX.now() + seconds
            while POSIX.now() < until {
                while let e = decoder.next() {
                    if case .frame(let f) = e, case .message(let m, _, _) = MessageCodec.decodeHost(f) { return m }
                }
                _ = POSIX.poll([(fd, Int16(POLLIN))], timeoutMilliseconds: 20)
                if case .data(let d)? = try? POSIX.read(fd) { decoder.feed(d) }
            }
            return nil
        }
        // The host's "who is there" ping comes on connecting.
        guard case .ping? = next(within: 3) else { Issue.record("no ping from the host"); return }
        // Several hellos at different points of the 2-s round: each welcomed within a pass.
        var worst = 0.0
        for k in 0..<4 {
            let t0 = POSIX.now()
            _ = try POSIX.writeSome(fd, MessageCodec.encode(.hello(Hello(agentVersion: "test", interface: "eth0", mac: "52:54:00:00:00:01")), session: session)[...])
            var welcomed = false
            while !welcomed, let m = next(within: 3) { if case .welcome = m { welcomed = true } }
            #expect(welcomed, "hello \(k) welcomed")
            worst = max(worst, POSIX.now() - t0)
            usleep(UInt32(370_000 + k * 110_000))
        }
        #expect(worst < 0.5, "answered within a pass (100 ms) plus slack, not at the next 2-s round: worst \(worst) s")
    }

    @Test func adminSocketPolicyPersistenceAndMetrics() async throws {
        let ns = try Netns(prefix: "tdm-hostd")
        defer { ns.delete() }
        try ns.ip("link add t0 type veth peer name t1")
        try ns.ip("link add t2 type veth peer name t3")
        for d in ["t0", "t1", "t2", "t3"] { try ns.ip("link set \(d) up") }
        let dir = NSTemporaryDirectory() + "tandem-host-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = Int.random(in: 20000..<30000)
        try Self.config(dir: dir, metricsPort: port).write(toFile: dir + "/host.toml", atomically: true, encoding: .utf8)
        #expect(try Shell.run([Binaries.path("tandem-host"), "run", "--config", dir + "/host.toml", "--check"]).stdout.contains("OK (1 link, 2 VMs)"))

        func start() throws -> BackgroundProcess {
            let p = try BackgroundProcess(["ip", "netns", "exec", ns.name, Binaries.path("tandem-host"), "run", "--config", dir + "/host.toml"], log: URL(fileURLWithPath: dir + "/host.log"))
            // Ready when the admin socket answers.
            for _ in 0..<100 {
                if (try? LineClient(path: dir + "/host.sock", what: "host").call(AdminRequest(op: "status"), as: AdminResponse.self, timeout: 1)) != nil { break }
                usleep(50_000)
            }
            return p
        }
        var host = try start()
        defer { host.stop() }
        let cli = Binaries.path("tandem-host")
        let fairness = try Shell.run([cli, "fairness", "--admin-socket", dir + "/host.sock", "--json"])
        #expect(fairness.status == 0, "\(fairness.stderr)")
        #expect(fairness.stdout.contains("\"vm\" : \"vm1\""))
        let text = try Shell.run([cli, "fairness", "--config", dir + "/host.toml"]).stdout
        #expect(text.contains("link wire  capacity 100mbit"))
        #expect(text.contains("AGENT"))

        // Policy: bad values are refused and change nothing; a good one persists.
        let bad = try Shell.run([cli, "policy", "set", "vm2", "--min", "95mbit", "--admin-socket", dir + "/host.sock"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("more than its capacity 100mbit"))
        let good = try Shell.run([cli, "policy", "set", "vm2", "--weight", "2", "--max", "80mbit", "--admin-socket", dir + "/host.sock"])
        #expect(good.status == 0, "\(good.stderr)")
        #expect(good.stdout.contains("vm2: weight 2, min 0bit, max 80mbit"))
        let missing = try Shell.run([cli, "policy", "set", "vm9", "--weight", "2", "--admin-socket", dir + "/host.sock"])
        #expect(missing.stderr.contains("no VM 'vm9'"))

        // Metrics over HTTP, from inside the namespace.
        try await Task.sleep(for: .milliseconds(300))
        let metrics = try ns.exec(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/\(port); printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"])
        #expect(metrics.contains("200 OK"))
        #expect(metrics.contains("tandem_vm_allocation_bytes_per_second{link=\"wire\",vm=\"vm1\"}"), "VM series carry their link")
        #expect(metrics.contains("tandem_group_allocation_bytes_per_second{link=\"wire\",group=\"spare\"}"), "a group's gauges")
        #expect(metrics.contains("# HELP tandem_vm_guarantee_bytes_per_second "))
        #expect(metrics.contains("# TYPE tandem_channel_messages_total counter"), "running counts are counters named _total")
        #expect(metrics.contains("tandem_build_info{version=\"\(TandemVersion.string)\"} 1.0"))
        #expect(metrics.contains("tandem_vm_weight{link=\"wire\",vm=\"vm1\"} 1.0"))
        #expect(!metrics.contains("tandem_link_jain_index{"), "no Jain sample while nobody sends")

        // Restart: the limits stayed in the kernel meanwhile, and the policy is back.
        host.stop()
        let ifb = "tdm-" + TCBackend.hash8("vm1")
        #expect(try ns.tc("class show dev \(ifb)").contains("class htb 1:10"), "a stopped controller leaves its limits in force")
        host = try start()
        let status = try Shell.run([cli, "status", "--json", "--admin-socket", dir + "/host.sock"])
        #expect(status.status == 0)
        let after = try Shell.run([cli, "fairness", "--json", "--admin-socket", dir + "/host.sock"]).stdout
        #expect(after.contains("\"weight\" : 2"))
        #expect(after.contains("\"max\" : 80000000"))

        // policy show / reset (issue #19): where each policy comes from, back to the file.
        let sock = ["--admin-socket", dir + "/host.sock"]
        let shown = try Shell.run([cli, "policy", "show", "--json"] + sock)
        #expect(shown.status == 0, "\(shown.stderr)")
        let entries = try JSONDecoder().decode([PolicyEntry].self, from: Data(shown.stdout.utf8))
        #expect(entries.map(\.vm) == ["vm1", "vm2"])
        #expect(entries.map(\.source) == [.config, .runtime])
        #expect(entries[1].configured?.weight == 1)
        let table = try Shell.run([cli, "policy", "show", "vm2"] + sock).stdout
        #expect(table.contains("SOURCE") && table.contains("runtime"), "\(table)")
        let reset = try Shell.run([cli, "policy", "reset", "vm2"] + sock)
        #expect(reset.status == 0, "\(reset.stderr)")
        #expect(reset.stdout.contains("vm2: weight 1, min 0bit, max none (from the configuration)"), "\(reset.stdout)")
        #expect(try Shell.run([cli, "policy", "show", "vm2", "--json"] + sock).stdout.contains("\"source\" : \"config\""))
        // Bad input names the value, exits non-zero, changes nothing.
        for (args, says) in [(["policy", "show", "vm9"], "no VM 'vm9'"), (["policy", "reset", "vm9"], "no VM 'vm9'"),
                             (["reservations", "list", "vm9"], "no VM 'vm9'"), (["reservations", "release", "vm9", "r-1"], "no VM 'vm9'"),
                             (["reservations", "release", "vm1", "r-404"], "no reservation 'r-404' on vm1 (it holds none)"),
                             (["policy", "set", "vm1", "--max", "fast"], "--max")] {
            let r = try Shell.run([cli] + args + sock)
            #expect(r.status != 0, "\(args)")
            #expect(r.stderr.contains(says), "\(args): \(r.stderr)")
        }
        #expect(try Shell.run([cli, "reservations", "list"] + sock).stdout == "no reservations\n")
        #expect(try Shell.run([cli, "reservations", "list", "--json"] + sock).stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "[\n\n]")
        // fairness --watch --json: one object a line, with its time.
        let watch = try Shell.run(["timeout", "-s", "INT", "2.5", cli, "fairness", "--watch", "--json"] + sock).stdout
        let lines = watch.split(separator: "\n")
        #expect(lines.count >= 2, "\(watch)")
        for line in lines {
            let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect((o?["time"] as? String).flatMap { ISO8601DateFormatter().date(from: $0) } != nil, "\(line)")
            #expect((o?["links"] as? [Any])?.count == 1)
        }
        #expect(try Shell.run([cli, "fairness"] + sock).stdout.contains("RESERVED"))
    }
}
