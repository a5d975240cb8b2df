import Foundation
import Testing
import HostCore
import TandemLabSupport
import TandemLibvirt
import TandemProtocol
import TandemTestSupport

/// tandem-host following a real libvirtd (started by scripts/libvirt-up.sh, no systemd):
/// QEMU/TCG domains booted from deploy/qemu's kernel and initramfs, each with the agent's
/// virtio-serial channel (a socket path libvirt picks) and a tap on a bridge the test made
/// (no uplink: no traffic leaves it). The host's configuration names the link and the
/// bridge only; every VM comes from libvirt.
enum Libvirtd {
    static let uri = "qemu:///system"
    static var up: String { VM.repo.appendingPathComponent("scripts/libvirt-up.sh").path }
    static var canRun: Bool { VM.canRun && Shell.has("libvirtd") && Shell.has("virsh") }
    static var enabled: ConditionTrait { .enabled(if: canRun || Privileged.isCI, "needs root, libvirtd, virsh and qemu-system-x86 (runs and fails in CI)") }
    /// The libvirtd that libvirt-up.sh started (the only one a test may restart), if running.
    static var ours: Int32? {
        guard let text = try? String(contentsOfFile: "/run/tandem-test-libvirtd.pid", encoding: .utf8), let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)),
              (try? Shell.run(["pgrep", "-x", "libvirtd"]).stdout.split(separator: "\n").contains { $0 == "\(pid)" }) == true else { return nil }
        return pid
    }

    static func virsh(_ args: String...) throws -> String { try Shell.check(["virsh", "-c", uri] + args) }

    /// Runs scripts/libvirt-up.sh. Not through Foundation's Process: when the script starts a
    /// libvirtd (which daemonizes), Process was seen never to reap the script and
    /// waitUntilExit() to hang for good. posix_spawn and waitpid do not.
    static func startLibvirtd() throws {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup(up), nil]
        defer { for a in argv { free(a) } }
        // The spawning thread's signal mask would be inherited (Swift's threads block
        // signals) and libvirtd does not reset it: a libvirtd started so ignored SIGTERM.
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd: Int32 in [0, 1] { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0) }
        let rc = posix_spawn(&pid, up, &actions, &attr, argv, environ)
        guard rc == 0 else { throw Shell.Failure("libvirt-up.sh", "posix_spawn: \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        guard status == 0 else { throw Shell.Failure("libvirt-up.sh", "exited with status \(status >> 8) (its message is on the test's stderr)") }
    }

    /// A domain that boots the test kernel under TCG and runs `script` (a guest script) with
    /// `out` as its /out share. QEMU runs as root (a static DAC label) so that the share is
    /// writable without changing qemu.conf. As deploy/qemu/run-vm.sh: the `max` CPU (the
    /// binaries built here use instructions libvirt's default qemu64 lacks: SIGILL) and 9p
    /// with `multidevs=remap` (without it the host's submounts, /proc among them, are not
    /// reachable through the share and the guest's init cannot move its /proc into place).
    static func domainXML(name: String, kernelDir: String, script: String, out: URL, bridge: String, metadata: String = "") throws -> String {
        let kabi = try String(contentsOfFile: kernelDir + "/kabi", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return """
        <domain type='qemu'>
          <name>\(name)</name>
          <memory unit='MiB'>384</memory>
          <vcpu>1</vcpu>
          <cpu mode='maximum' check='none'/>
          <metadata>\(metadata)</metadata>
          <os>
            <type arch='x86_64' machine='pc'>hvm</type>
            <kernel>\(kernelDir)/vmlinuz</kernel>
            <initrd>\(kernelDir)/initramfs.gz</initrd>
            <cmdline>console=ttyS0 quiet panic=-1 tandem.run=\(script) tandem.kabi=\(kabi) tandem.modules=\(kernelDir)/root/lib/modules/\(kabi)</cmdline>
          </os>
          <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
          <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
          <devices>
            <emulator>/usr/bin/qemu-system-x86_64</emulator>
            <filesystem type='mount' accessmode='passthrough' multidevs='remap'><source dir='/'/><target dir='hostroot'/><readonly/></filesystem>
            <filesystem type='mount' accessmode='passthrough' multidevs='remap'><source dir='\(out.path)'/><target dir='out'/></filesystem>
            <interface type='bridge'><source bridge='\(bridge)'/><model type='virtio'/></interface>
            <channel type='unix'><target type='virtio' name='org.tandem.agent.0'/></channel>
            <serial type='file'><source path='\(out.path)/console.log'/><target port='0'/></serial>
          </devices>
        </domain>
        """
    }

    static func policy(_ attributes: String) -> String {
        "<tandem:policy xmlns:tandem=\"\(LibvirtDomain.metadataNamespace)\" \(attributes)/>"
    }
}

@Suite(.serialized, Libvirtd.enabled, .exclusive)
struct LibvirtHostTests {
    /// Polls `body` every 50 ms until it gives a value; returns it and the seconds it took.
    static func within<T>(_ seconds: Double, _ what: String, _ body: () throws -> T?) async throws -> (T, Double) {
        let t0 = Date()
        while Date().timeIntervalSince(t0) < seconds {
            if let v = try? body() { return (v, Date().timeIntervalSince(t0)) }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw Shell.Failure("libvirt", "\(what) not seen within \(seconds)s")
    }

    @Test func domainsAreFollowedFromStartToDestroyWithPolicyFromTheirMetadataAndLibvirtdRestarts() async throws {
        try await TrafficGate.shared.run {
            try Libvirtd.startLibvirtd()
            let kernelDir = try Shell.check([VM.repo.appendingPathComponent("deploy/qemu/prepare.sh").path]).trimmingCharacters(in: .whitespacesAndNewlines)
            let tag = "\(getpid() % 100000)"
            let bridge = "tdmbr\(tag)"
            try Shell.check(["ip", "link", "add", bridge, "type", "bridge"])
            defer { _ = try? Shell.run(["ip", "link", "del", bridge]) }
            try Shell.check(["ip", "link", "set", bridge, "up"])

            let hostDir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("tandem-libvirt-\(tag)-\(UUID().uuidString.prefix(6))")
            try FileManager.default.createDirectory(at: hostDir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: hostDir) }
            let admin = hostDir.appendingPathComponent("host.sock").path
            try """
            [controller]
            interval = "100ms"
            admin_socket = "\(admin)"
            state_dir = "\(hostDir.path)/state"
            metrics = "off"
            [libvirt]
            uri = "\(Libvirtd.uri)"
            [[link]]
            name = "wire"
            capacity = "300mbit"
            bridge = "\(bridge)"
            """.write(to: hostDir.appendingPathComponent("host.toml"), atomically: true, encoding: .utf8)
            let host = try BackgroundProcess([Binaries.path("tandem-host"), "run", "--config", hostDir.appendingPathComponent("host.toml").path, "--log-level", "debug"],
                                             log: hostDir.appendingPathComponent("host.log"))
            defer { host.stop() }
            func status() throws -> HostStatus { try #require(try VM.admin(admin, AdminRequest(op: "status")).status) }
            func row(_ vm: String) throws -> LinkFairness.Row? { try VM.admin(admin, AdminRequest(op: "fairness")).fairness?.first?.vms.first { $0.vm == vm } }
            _ = try await Self.within(10, "tandem-host connected to libvirt") { try status().libvirt?.state == "connected" ? true : nil }

            // Two domains, one with a policy in its metadata; a third whose tap is on a bridge
            // no link names.
            var names: [String] = []
            defer { for n in names { _ = try? Shell.run(["virsh", "-c", Libvirtd.uri, "destroy", n]) } }
            var outs: [String: URL] = [:]
            for (suffix, meta, br) in [("a", Libvirtd.policy(#"weight="2" min="20mbit""#), bridge), ("b", "", bridge), ("odd", "", "virbr-none")] {
                let name = "tdm-\(tag)-\(suffix)"
                let out = try VM.outDir()
                outs[name] = out
                if br != bridge { _ = try? Shell.run(["ip", "link", "add", br, "type", "bridge"]) }
                let xml = try Libvirtd.domainXML(name: name, kernelDir: kernelDir, script: VM.guest("libvirt.sh"), out: out, bridge: br, metadata: meta)
                let file = out.appendingPathComponent("domain.xml")
                try xml.write(to: file, atomically: true, encoding: .utf8)
                _ = try Libvirtd.virsh("create", file.path)
                names.append(name)
            }
            defer { _ = try? Shell.run(["ip", "link", "del", "virbr-none"]); for o in outs.values { try? FileManager.default.removeItem(at: o) } }
            let (a, b, odd) = (names[0], names[1], names[2])

            // Limited at once: each VM with its tap's redirect in the kernel.
            let (started, tStart) = try await Self.within(5, "both domains managed and limited") { () -> [HostStatus.VM]? in
                let vms = try status().vms.filter { $0.origin == "libvirt" && $0.limit != nil }
                return vms.count == 2 ? vms : nil
            }
            print("libvirt: both domains limited \(String(format: "%.2f", tStart))s after virsh create returned")
            for vm in started {
                let tap = String(vm.backend.split(separator: " ")[1])
                #expect(try Shell.check(["tc", "qdisc", "show", "dev", tap]).contains("ingress"), "\(vm.name): no ingress redirect on \(tap)")
                #expect(vm.channel?.hasPrefix("/var/lib/libvirt/qemu/channel/target/domain-") == true, "\(vm.name): channel \(vm.channel ?? "none")")
            }
            #expect(try row(a)?.weight == 2)
            #expect(try row(a)?.min == 20_000_000)
            #expect(try row(b)?.weight == 1)
            let unmanaged = try #require(try status().libvirt?.unmanaged)
            #expect(unmanaged.map(\.domain) == [odd])
            #expect(unmanaged.first?.reason.contains("on virbr-none, which no [[link]] names") == true, "\(unmanaged)")
            // (Its guest would only burn a core under TCG from here on.)
            _ = try Libvirtd.virsh("destroy", odd)
            _ = try await Self.within(5, "the stopped unmanaged domain gone from status") { try status().libvirt?.unmanaged.isEmpty == true ? true : nil }

            // The agents in the guests connect over the ports libvirt made.
            for n in [a, b] {
                try await VM.waitLibvirtGuest(outs[n]!.appendingPathComponent("step-welcomed"), timeout: 300, domain: n, out: outs[n]!)
            }
            _ = try await Self.within(10, "both agents connected") { try [a, b].allSatisfy { try row($0)?.agent == "connected" } ? true : nil }

            // A suspended domain stays managed and limited (its allocation may move with the
            // round, as any VM's).
            _ = try Libvirtd.virsh("suspend", a)
            try await Task.sleep(for: .milliseconds(500))
            #expect(try status().vms.first { $0.name == a }?.limit != nil)
            #expect(try Shell.check(["tc", "qdisc", "show", "dev", String(try #require(try status().vms.first { $0.name == a }).backend.split(separator: " ")[1])]).contains("ingress"))
            _ = try Libvirtd.virsh("resume", a)

            // The weight moves with virsh metadata --live.
            _ = try Libvirtd.virsh("metadata", a, "--uri", LibvirtDomain.metadataNamespace, "--key", "tandem", "--set", #"<policy weight="5" min="20mbit"/>"#, "--live")
            let (_, tWeight) = try await Self.within(5, "weight 5 in fairness") { try row(a)?.weight == 5 ? true : nil }
            print("libvirt: metadata weight in force \(String(format: "%.2f", tWeight))s after virsh metadata returned")
            // Malformed metadata: a keeps its last good policy (and says why); b is untouched.
            let bBefore = try #require(try row(b))
            _ = try Libvirtd.virsh("metadata", a, "--uri", LibvirtDomain.metadataNamespace, "--key", "tandem", "--set", #"<policy weight="heavy"/>"#, "--live")
            let (kept, _) = try await Self.within(5, "a's metadata problem in status") { try status().libvirt?.kept.first { $0.domain == a } }
            #expect(kept.reason.contains(#"weight="heavy""#))
            #expect(try row(a)?.weight == 5)
            let bAfter = try #require(try row(b))
            #expect(bAfter.weight == bBefore.weight && bAfter.min == bBefore.min && bAfter.agent == "connected")

            // libvirtd restarts: the limits stay in force, Tandem says so and resyncs after.
            if let pid = Libvirtd.ours {
                let tapA = String(try #require(try status().vms.first { $0.name == a }).backend.split(separator: " ")[1])
                kill(pid, SIGTERM)
                _ = try await Self.within(20, "libvirtd gone") { kill(pid, 0) != 0 ? true : nil }
                let (down, _) = try await Self.within(10, "status saying unreachable") { () -> LibvirtStatus? in
                    let l = try status().libvirt
                    return l?.state == "unreachable" ? l : nil
                }
                #expect(down.retryIn != nil)
                #expect(try status().vms.filter { $0.origin == "libvirt" }.count == 2, "VMs kept while libvirtd is away")
                #expect(try Shell.check(["tc", "qdisc", "show", "dev", tapA]).contains("ingress"))
                try Libvirtd.startLibvirtd()
                let (back, _) = try await Self.within(40, "the resync after libvirtd came back") { () -> LibvirtStatus? in
                    let l = try status().libvirt
                    return l?.state == "connected" && (l?.resyncs ?? 0) >= 2 ? l : nil
                }
                #expect(Set(back.managed) == [a, b])
            } else {
                #expect(!Privileged.isCI, "CI starts libvirtd with scripts/libvirt-up.sh: the restart is tested there")
                print("libvirt: libvirtd was not started by scripts/libvirt-up.sh; its restart is not tested here")
            }

            // virsh destroy: b leaves within a second, its IFB goes, a's share grows.
            let aBefore = try #require(try row(a)).allocation
            let ifbB = String(try #require(try status().vms.first { $0.name == b }).backend.split(separator: " ").last!)
            _ = try Libvirtd.virsh("destroy", b)
            let (_, tGone) = try await Self.within(5, "b released") { try status().vms.contains { $0.name == b } ? nil : true }
            print("libvirt: destroyed domain released \(String(format: "%.2f", tGone))s after virsh destroy returned")
            #expect((try? Shell.run(["ip", "link", "show", ifbB]).status) != 0, "\(ifbB) is left behind")
            _ = try await Self.within(5, "a's allocation up after b left") { try (row(a)?.allocation ?? 0) > aBefore ? true : nil }
            try "".write(to: outs[a]!.appendingPathComponent("go-finish"), atomically: true, encoding: .utf8)
        }
    }
}

extension VM {
    /// Waits for a file a libvirt domain's guest writes, with the guest's logs on failure.
    static func waitLibvirtGuest(_ url: URL, timeout: Double, domain: String, out: URL) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !FileManager.default.fileExists(atPath: url.path) {
            let state = (try? Shell.run(["virsh", "-c", Libvirtd.uri, "domstate", domain]).stdout) ?? ""
            if !state.contains("running") || Date() > deadline {
                let read = { (f: String) in (try? String(contentsOf: out.appendingPathComponent(f), encoding: .utf8)) ?? "" }
                throw Shell.Failure("libvirt", "\(url.lastPathComponent) not reached in \(domain) (\(state.trimmingCharacters(in: .whitespacesAndNewlines)));\nguest log:\n\(read("guest.log").suffix(2000))\nagent log:\n\(LogExcerpt.of(read("agent.log")))\nconsole:\n\(read("console.log").suffix(1500))")
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }
}
