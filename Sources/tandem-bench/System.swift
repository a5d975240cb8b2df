import Foundation
import GuestAgent
import HostController
import Netlink
import TandemProtocol
import AgentCore
import HostCore
import TandemDaemon
import TandemLab
import TandemLabSupport
import TandemTransport

/// Benchmarks with the real binaries and the kernel: overhead, accuracy, reaction.
enum SystemBench {
    static var binaries: String { URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path }

    /// utime+stime in seconds and peak RSS in KB of a process.
    static func cpuAndPeak(_ pid: Int32) -> (Double, Int) {
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        let fields = stat.split(separator: ")").last?.split(separator: " ") ?? []
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let cpu = fields.count > 13 ? ((Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)) / ticks : 0
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let hwm = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? -1
        return (cpu, hwm)
    }

    /// Who is at the other end of the VMs' channels.
    enum Guests {
        /// No channels.
        case none
        /// A real `tandem-agent` per VM on its end of the veth (all in one guests' namespace),
        /// through a pty relay, at a 100 ms interval; the VMs send nothing, so the agents are
        /// idle and report when something changes and at least once a second.
        case idleAgents
        /// ``SyntheticGuests``: a report every 100 ms from every VM, as from busy agents.
        case busySynthetic
    }

    /// The controller with 64 VMs on veths (tc backends, real netlink), 10 Hz, for `seconds`,
    /// with its Prometheus metrics on (as configured by default), and `guests` on the channels.
    /// With `floor`, the floor is measured after the controller (stopped: its trees stay in
    /// the kernel; the guests stopped too) in the same namespace, and every CPU figure is
    /// also given as a multiple of it (`floor.value` is set to the floor's % of a core).
    static func controllerOverhead(vms: Int = 64, seconds: Double = 30, guests kind: Guests = .none, floor: FloorBox? = nil) throws -> [Result] {
        let agents = kind != .none
        // The VMs' ends of the veths live in a namespace of their own, as on a real host
        // they are inside the guests: the host's tables hold only the host's side.
        let ns = try Netns(prefix: "tdm-bench-ovh"), guests = try Netns(prefix: "tdm-bench-ovg")
        defer { ns.delete(); guests.delete() }
        var cfg = "[controller]\ninterval = \"100ms\"\nadmin_socket = \"/tmp/tdm-bench-\(getpid()).sock\"\nstate_dir = \"/tmp/tdm-bench-\(getpid())\"\nmetrics = \"127.0.0.1:\(20000 + getpid() % 10000)\"\n[[link]]\nname = \"wire\"\ncapacity = \"10gbit\"\n"
        let dir = "/tmp/tdm-bench-ovh-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var relays: [LabRelay] = []
        defer { relays.forEach { $0.stop() } }
        for i in 0..<vms {
            try ns.ip("link add b\(i) type veth peer name b\(i)p netns \(guests.name)")
            try ns.ip("link set b\(i) up"); try guests.ip("link set b\(i)p up")
            cfg += "[[vm]]\nname = \"vm\(i)\"\ninterface = \"b\(i)\"\n"
            if kind == .idleAgents {
                let relay = try LabRelay(socketPath: "\(dir)/vm\(i).chan")
                relay.start()
                relays.append(relay)
            }
            if agents { cfg += "channel = \"\(dir)/vm\(i).chan\"\n" }
        }
        let synthetic = kind == .busySynthetic ? try SyntheticGuests(paths: (0..<vms).map { "\(dir)/vm\($0).chan" }) : nil
        synthetic?.start()
        defer { synthetic?.stop() }
        var agentProcesses: [BackgroundProcess] = []
        defer { agentProcesses.forEach { $0.stop() } }
        for (i, relay) in relays.enumerated() {
            agentProcesses.append(try BackgroundProcess(["ip", "netns", "exec", guests.name, binaries + "/tandem-agent", "run", "--interface", "b\(i)p",
                                                         "--channel", relay.slavePath, "--socket", "\(dir)/vm\(i).agent.sock", "--interval", "100ms"]))
        }
        let path = "/tmp/tdm-bench-\(getpid()).toml"
        try cfg.write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        let p = try BackgroundProcess(["ip", "netns", "exec", ns.name, binaries + "/tandem-host", "run", "--config", path])
        defer { p.stop() }
        // Start-up (64 IFBs and their trees, several seconds) is not the steady state: wait
        // until every VM has its limit in the kernel, then a little more.
        try waitUntilAllLimited(adminSocket: "/tmp/tdm-bench-\(getpid()).sock", vms: vms, process: p, agents: agents)
        Thread.sleep(forTimeInterval: 2)
        let (c0, _) = cpuAndPeak(p.pid)
        let reports0 = synthetic?.reportsSent ?? 0
        Thread.sleep(forTimeInterval: seconds)
        let (c1, peak) = cpuAndPeak(p.pid)
        let reports = Double((synthetic?.reportsSent ?? 0) - reports0) / seconds
        let perMinute = (c1 - c0) / seconds * 60
        let measuresFloor = floor != nil && floor?.value == nil
        // With real agents, also the floor while they still run: here (not in a real host,
        // where they are in their VMs) they share this kernel and these 2 cores with the
        // controller, and their 640 class dumps a second cost the controller's own dump too.
        var floorBeside: Double?
        if let floor, measuresFloor {
            synthetic?.stop()
            p.stop()
            if !agentProcesses.isEmpty { floorBeside = try Self.floor(ns: ns, seconds: seconds) }
            // The floor proper, on a quiet kernel: the guests stopped too.
            agentProcesses.forEach { $0.stop() }
            relays.forEach { $0.stop() }
            floor.value = try Self.floor(ns: ns, seconds: seconds)
        }
        let with = switch kind {
        case .none: ", no agents"
        case .idleAgents: ", idle agents"
        case .busySynthetic: ", busy guests (synthetic)"
        }
        let cpu = perMinute / 60 * 100
        var out: [Result] = []
        if let f = floor?.value, measuresFloor {
            out.append(Result(name: "floor: the round's counter dump alone, \(vms) VMs at 10 Hz\(with)", value: f, unit: "% of a core", target: nil, lowerIsBetter: true))
        }
        if let f = floor?.value, f > 0 {
            let target: Double? = switch kind { case .none: nil; case .idleAgents: 1.5; case .busySynthetic: 2 }
            out.append(Result(name: "controller CPU\(with), as a multiple of the floor", value: cpu / f, unit: "x", target: target, lowerIsBetter: true))
        }
        if let b = floorBeside, b > 0 {
            out.append(Result(name: "floor with the \(vms) agents still running beside it", value: b, unit: "% of a core", target: nil, lowerIsBetter: true))
            out.append(Result(name: "controller CPU\(with), as a multiple of that floor", value: cpu / b, unit: "x", target: nil, lowerIsBetter: true))
        }
        return out + [
            Result(name: "controller CPU, \(vms) VMs at 10 Hz\(with)", value: cpu, unit: "% of a core", target: 1, lowerIsBetter: true),
            Result(name: "controller peak RSS, \(vms) VMs\(with)", value: Double(peak) / 1024, unit: "MiB", target: nil, lowerIsBetter: true),
        ] + (synthetic == nil ? [] : [Result(name: "demand reports sent to the controller by the busy guests", value: reports, unit: "/s", target: nil, lowerIsBetter: false)])
    }

    final class FloorBox: @unchecked Sendable { var value: Double? }

    /// What a round cannot avoid: the one RTM_GETQDISC dump of every root qdisc that reads
    /// the VMs' counters, at 10 Hz, in the namespace of the controller just measured (its
    /// trees still there), and nothing else. This process's CPU over `seconds`, in % of a
    /// core; the process does nothing else meanwhile.
    static func floor(ns: Netns, seconds: Double) throws -> Double {
        let socket = try RouteSocket(namespace: ns.name)
        func usage() -> Double {
            var r = rusage()
            getrusage(RUSAGE_SELF.rawValue, &r)
            return Double(r.ru_utime.tv_sec + r.ru_stime.tv_sec) + Double(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6
        }
        var roots = 0
        let c0 = usage(), t0 = POSIX.now()
        var k = 0
        while POSIX.now() - t0 < seconds {
            roots = waitFor { (try? await socket.qdiscCounters())?.roots.count ?? 0 }
            k += 1
            let next = t0 + Double(k) * 0.1
            let wait = next - POSIX.now()
            if wait > 0 { usleep(UInt32(wait * 1e6)) }
        }
        guard roots > 0 else { throw CommandFailure("the floor's dump read no qdisc") }
        return (usage() - c0) / seconds * 100
    }

    /// Polls the controller's status until all `vms` have a limit set (and, with `agents`,
    /// an agent connected).
    static func waitUntilAllLimited(adminSocket: String, vms: Int, process: BackgroundProcess, agents: Bool = false, seconds: Double = 120) throws {
        let deadline = Date().addingTimeInterval(seconds)
        var seen = 0
        while Date() < deadline {
            guard process.isRunning else { throw CommandFailure("the controller exited while \(seen) of \(vms) VMs were set up") }
            if let c = try? LineClient(path: adminSocket, what: "tandem-host"),
               let r = try? c.call(AdminRequest(op: "status"), as: AdminResponse.self, timeout: 2) {
                c.close()
                seen = r.status?.vms.filter { $0.limit != nil && (!agents || $0.agent == "connected") }.count ?? 0
                if seen == vms { return }
            }
            Thread.sleep(forTimeInterval: 0.5)
        }
        throw CommandFailure("the controller set up \(seen) of \(vms) VMs\(agents ? " with agents" : "") within \(Int(seconds))s")
    }

    /// The agent with `flows` established TCP flows leaving its interface (to a server in the
    /// host's namespace, as a VM's flows go to other machines), reporting at 10 Hz to a real
    /// controller through a pty relay.
    static func agentOverhead(flows: Int = 1000, seconds: Double = 30) throws -> [Result] {
        let vm = try Netns(prefix: "tdm-bench-agt"), host = try Netns(prefix: "tdm-bench-agh")
        defer { vm.delete(); host.delete() }
        try vm.addVeth("eth0", peer: host, "h0")
        try vm.ip("addr add 10.97.0.1/24 dev eth0"); try host.ip("addr add 10.97.0.2/24 dev h0")
        let dir = "/tmp/tdm-bench-agent-\(getpid())"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let relay = try LabRelay(socketPath: dir + "/chan")
        relay.start()
        defer { relay.stop() }
        try "[controller]\ninterval = \"100ms\"\nadmin_socket = \"\(dir)/host.sock\"\nstate_dir = \"\(dir)/state\"\nmetrics = \"off\"\n[[link]]\nname = \"w\"\ncapacity = \"10gbit\"\n[[vm]]\nname = \"vm\"\ninterface = \"h0\"\nchannel = \"\(dir)/chan\"\n"
            .write(toFile: dir + "/host.toml", atomically: true, encoding: .utf8)
        // The flows: `flows` connections held open, each sending a byte every half second.
        let server = try BackgroundProcess(["ip", "netns", "exec", host.name, "python3", "-c", """
            import socket, select
            srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); srv.bind(('10.97.0.2', 7000)); srv.listen(2048)
            cs = [srv]
            while True:
                for s in select.select(cs, [], [])[0]:
                    if s is srv: cs.append(srv.accept()[0])
                    elif not s.recv(4096): cs.remove(s); s.close()
            """])
        defer { server.stop() }
        Thread.sleep(forTimeInterval: 0.5)
        let clients = try BackgroundProcess(["ip", "netns", "exec", vm.name, "python3", "-c", """
            import socket, time
            cs = [socket.create_connection(('10.97.0.2', 7000)) for i in range(\(flows))]
            while True:
                for c in cs: c.send(b'x')
                time.sleep(0.5)
            """])
        defer { clients.stop() }
        let controller = try BackgroundProcess(["ip", "netns", "exec", host.name, binaries + "/tandem-host", "run", "--config", dir + "/host.toml"])
        defer { controller.stop() }
        let agent = try BackgroundProcess(["ip", "netns", "exec", vm.name, binaries + "/tandem-agent", "run", "--interface", "eth0",
                                           "--channel", relay.slavePath, "--socket", dir + "/agent.sock", "--interval", "100ms"])
        defer { agent.stop() }
        Thread.sleep(forTimeInterval: 5)
        let established = (try? vm.exec(["ss", "-tnH", "state", "established"]))?.split(separator: "\n").count ?? 0
        let (c0, _) = cpuAndPeak(agent.pid)
        Thread.sleep(forTimeInterval: seconds)
        let (c1, peak) = cpuAndPeak(agent.pid)
        return [
            Result(name: "agent CPU, \(established) TCP flows, reports at 10 Hz", value: (c1 - c0) / seconds * 100, unit: "% of a core", target: 1, lowerIsBetter: true),
            Result(name: "agent peak RSS", value: Double(peak) / 1024, unit: "MiB", target: nil, lowerIsBetter: true),
        ]
    }

    /// Throughput against the limit through the tc backend (host side) and through the
    /// agent's tree, at several rates; goodput is counted as 95% of the line rate.
    static func accuracy(rates: [UInt64] = [10, 50, 100, 200, 500, 1000], seconds: Double = 4) async throws -> [Result] {
        var out: [Result] = []
        let a = try Netns(prefix: "tdm-bench-acc"), b = try Netns(prefix: "tdm-bench-acc")
        defer { a.delete(); b.delete() }
        try a.addVeth("t0", peer: b, "t1")
        try a.ip("addr add 10.98.0.1/24 dev t0"); try b.ip("addr add 10.98.0.2/24 dev t1")
        let server = try Iperf.server(in: a, port: 5501)
        defer { server.stop() }
        // tc backend: b is the VM; its egress is a's t0 ingress, shaped on an IFB.
        let nlA = try RouteSocket(namespace: a.name)
        let backend = TCBackend(vm: "bench", interface: "t0", netlink: nlA)
        try await backend.prepare(initialLimit: .mbit(10))
        for r in rates {
            try await backend.apply(limit: .mbit(r), guarantee: .zero)
            let got = try Iperf.client(in: b, host: "10.98.0.1", port: 5501, seconds: seconds, extra: ["-O", "1"]).receivedBitsPerSecond
            out.append(Result(name: "tc backend at \(r)mbit: goodput / (95% of limit)", value: got / (Double(r) * 1e6 * 0.95) * 100, unit: "%", target: nil, lowerIsBetter: false))
        }
        try await backend.teardown()
        // The agent's own tree (GuestAgent's Shaper) on b's t1, no host limit.
        let shaper = try await Shaper(interface: "t1", namespace: b.name)
        for r in rates {
            try await shaper.apply(ShapingTree.desired(limit: .mbit(r), reservations: []), force: true)
            let got = try Iperf.client(in: b, host: "10.98.0.1", port: 5501, seconds: seconds, extra: ["-O", "1"]).receivedBitsPerSecond
            out.append(Result(name: "agent tree at \(r)mbit: goodput / (95% of limit)", value: got / (Double(r) * 1e6 * 0.95) * 100, unit: "%", target: nil, lowerIsBetter: false))
        }
        try await shaper.remove()
        return out
    }
}


/// Runs `body` to completion from synchronous benchmark code (the samplers and the floor
/// loop are plain loops on their own thread, timed with the wall clock).
func waitFor<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let box = WaitBox<T>(), done = DispatchSemaphore(value: 0)
    Task { box.value = await body(); done.signal() }
    done.wait()
    return box.value!
}

final class WaitBox<T>: @unchecked Sendable { var value: T? }
