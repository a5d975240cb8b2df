import Foundation
import HostController
import HostCore
import Netlink
import TandemLabSupport
import TandemLibvirt
import TandemTransport

/// `tandem-bench libvirt`: what the libvirt source costs and how fast it follows.
/// - Start to limit (root, a running libvirtd: scripts/libvirt-up.sh): tandem-host (the
///   release build beside this one) follows qemu:///system; the bench starts a small QEMU
///   domain (no OS: only its tap and channel matter) N times on a bridge of its own, and
///   measures from libvirt's start event (as this process receives it on its own
///   connection) to the tap's redirect in the kernel, the last step of the tc backend's set
///   up; and the release after `destroy` (the IFB gone).
/// - Sync of 256 domains (no root): libvirt's test driver in this process holds 256 running
///   domains with Tandem's channel and a tap; the watcher's resync (list, state and XML of
///   each) and the inventory (parse and map) are timed.
enum LibvirtBench {
    static func run(repetitions: Int) async throws -> [Result] {
        var out = try await sync(domains: 256)
        if getuid() == 0 {
            out += try await startToLimit(repetitions: repetitions)
        } else {
            print("libvirt: start to limit skipped (needs root and a libvirtd)")
        }
        return out
    }

    static func pct(_ xs: [Double], _ p: Double) -> Double {
        let s = xs.sorted()
        return s.isEmpty ? .nan : s[min(s.count - 1, Int((Double(s.count - 1) * p).rounded()))]
    }

    static func domainXML(_ name: String, bridge: String?, channelPath: String? = nil, type: String = "qemu") -> String {
        let source = channelPath.map { "<source mode='bind' path='\($0)'/>" } ?? ""
        let nic = bridge.map { "<interface type='bridge'><source bridge='\($0)'/><model type='virtio'/></interface>" }
            ?? "<interface type='ethernet'><target dev='tb\(name.suffix(8))'/></interface>"
        return """
        <domain type='\(type)'><name>\(name)</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>
        <os><type arch='x86_64' machine='pc'>hvm</type></os>
        <metadata><tandem:policy xmlns:tandem="\(LibvirtDomain.metadataNamespace)" weight="2"/></metadata>
        <devices>\(type == "qemu" ? "<emulator>/usr/bin/qemu-system-x86_64</emulator>" : "")\(nic)
        <channel type='unix'>\(source)<target type='virtio' name='org.tandem.agent.0'/></channel></devices></domain>
        """
    }

    // MARK: sync

    static func sync(domains n: Int) async throws -> [Result] {
        let admin = try LibvirtConnection(uri: "test:///default", readOnly: false)
        defer { admin.close() }
        var uuids: [String] = []
        for i in 0..<n {
            uuids.append(try admin.createDomain(xml: domainXML(String(format: "bench-%04d", i), bridge: nil, channelPath: "/run/tandem-bench/\(i).sock", type: "test")))
        }
        defer { for u in uuids { try? admin.destroyDomain(uuid: u) } }

        var resync: [Double] = [], inventory: [Double] = []
        let file = try HostConfig.parse("[libvirt]\nuri = \"test:///default\"\n[[link]]\nname = \"wire\"\ncapacity = \"100gbit\"\n")
        for _ in 0..<5 {
            let watcher = LibvirtWatcher(uri: "test:///default")
            let t0 = Date()
            watcher.start()
            var all: [LibvirtDomainSnapshot] = []
            for await u in watcher.updates { if case .resync(let a) = u { all = a; break } }
            resync.append(Date().timeIntervalSince(t0) * 1000)
            watcher.stop()
            let t1 = Date()
            let entries = all.map(LibvirtInventory.Entry.init)
            let outcome = LibvirtInventory.build(file: file, entries: entries, devices: .init(vf: { _ in throw SysfsVFError.noSuchDevice("-") }, master: { _ in nil }))
            inventory.append(Date().timeIntervalSince(t1) * 1000)
            guard outcome.config.vms.count == n else {
                throw Shell.Failure("bench", "the inventory made \(outcome.config.vms.count) VMs of \(n) domains: \(outcome.unmanaged.prefix(3))")
            }
        }
        print(String(format: "libvirt: %d domains: resync %.1f ms, inventory %.1f ms (p50 of 5)", n, pct(resync, 0.5), pct(inventory, 0.5)))
        return [
            Result(name: "libvirt: resync of \(n) domains, test driver (p50)", value: pct(resync, 0.5), unit: "ms", target: 1000, lowerIsBetter: true),
            Result(name: "libvirt: inventory of \(n) domains, parse and map (p50)", value: pct(inventory, 0.5), unit: "ms", target: 100, lowerIsBetter: true),
        ]
    }

    // MARK: start to limit

    final class Events: @unchecked Sendable {
        let lock = NSLock()
        var started: [String: Double] = [:]
        func record(_ e: LibvirtDomainEvent) {
            guard case .lifecycle(.started, _) = e.kind else { return }
            lock.lock(); started[e.uuid] = started[e.uuid] ?? POSIX.now(); lock.unlock()
        }
        func time(_ uuid: String) -> Double? { lock.lock(); defer { lock.unlock() }; return started[uuid] }
    }

    static func startToLimit(repetitions: Int) async throws -> [Result] {
        let up = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/libvirt-up.sh").path
        if FileManager.default.isExecutableFile(atPath: up) { _ = try? Shell.run([up]) }
        let tag = "\(getpid() % 100000)"
        let bridge = "tdmbb\(tag)"
        try Shell.check(["ip", "link", "add", bridge, "type", "bridge"])
        defer { _ = try? Shell.run(["ip", "link", "del", bridge]) }
        try Shell.check(["ip", "link", "set", bridge, "up"])
        let dir = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("tandem-bench-libvirt-\(tag)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try """
        [controller]
        interval = "100ms"
        admin_socket = "\(dir.path)/host.sock"
        state_dir = "\(dir.path)/state"
        metrics = "off"
        [libvirt]
        uri = "qemu:///system"
        [[link]]
        name = "wire"
        capacity = "1gbit"
        bridge = "\(bridge)"
        """.write(to: dir.appendingPathComponent("host.toml"), atomically: true, encoding: .utf8)
        let hostBinary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("tandem-host").path
        let host = try BackgroundProcess([hostBinary, "run", "--config", dir.appendingPathComponent("host.toml").path], log: dir.appendingPathComponent("host.log"))
        defer { host.stop() }

        let events = Events()
        let watch = try LibvirtConnection(uri: "qemu:///system")
        defer { watch.close() }
        try watch.watch(event: { events.record($0) }, lost: { _ in })
        let admin = try LibvirtConnection(uri: "qemu:///system", readOnly: false)
        defer { admin.close() }
        let netlink = try RouteSocket()
        try await Task.sleep(for: .seconds(1))

        var fromEvent: [Double] = [], fromCall: [Double] = [], release: [Double] = []
        for i in 0..<repetitions {
            let name = "tdm-bench-\(tag)-\(i)"
            let t0 = POSIX.now()
            let uuid = try admin.createDomain(xml: domainXML(name, bridge: bridge))
            guard let snapshot = try admin.domain(uuid: uuid), let tap = try LibvirtDomain.parse(snapshot.xml).taps.first?.device else {
                try? admin.destroyDomain(uuid: uuid)
                throw Shell.Failure("bench", "domain \(name) has no tap in its live XML")
            }
            let ifindex = try await netlink.index(of: tap)
            var limited: Double?
            while POSIX.now() - t0 < 5 {
                if (try? await netlink.filters(ifindex: ifindex, parent: .ingress))?.contains(where: { $0.kind == "u32" }) == true { limited = POSIX.now(); break }
                try await Task.sleep(for: .microseconds(500))
            }
            let status = try LineClient(path: dir.path + "/host.sock", what: "tandem-host").call(AdminRequest(op: "status"), as: AdminResponse.self, timeout: 5).status
            let ifb = status?.vms.first { $0.name == name }.map { String($0.backend.split(separator: " ").last ?? "") }
            try admin.destroyDomain(uuid: uuid)
            let destroyed = POSIX.now()
            // Released: the VM's IFB is gone.
            var gone: Double?
            while let ifb, POSIX.now() - destroyed < 10 {
                if (try? await netlink.link(named: ifb)) == nil { gone = POSIX.now(); break }
                try await Task.sleep(for: .microseconds(500))
            }
            guard let limited, let event = events.time(uuid) else { throw Shell.Failure("bench", "\(name): no limit within 5 s (see \(dir.path)/host.log)") }
            fromEvent.append((limited - event) * 1000)
            fromCall.append((limited - t0) * 1000)
            if let gone { release.append((gone - destroyed) * 1000) }
        }
        print(String(format: "libvirt: start event to limit in the kernel p50 %.1f ms p99 %.1f ms; create call to limit p50 %.1f ms; destroy returned to released p50 %.1f ms p99 %.1f ms (%d starts)",
                     pct(fromEvent, 0.5), pct(fromEvent, 0.99), pct(fromCall, 0.5), pct(release, 0.5), pct(release, 0.99), repetitions))
        return [
            Result(name: "libvirt: start event to limit in kernel (p50)", value: pct(fromEvent, 0.5), unit: "ms", target: nil, lowerIsBetter: true),
            Result(name: "libvirt: start event to limit in kernel (p99)", value: pct(fromEvent, 0.99), unit: "ms", target: 1000, lowerIsBetter: true),
            Result(name: "libvirt: destroy to VM released (p50)", value: pct(release, 0.5), unit: "ms", target: nil, lowerIsBetter: true),
            Result(name: "libvirt: destroy to VM released (p99)", value: pct(release, 0.99), unit: "ms", target: 1000, lowerIsBetter: true),
        ]
    }
}
