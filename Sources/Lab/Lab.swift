import Foundation
import TandemProtocol
import AgentCore
import HostCore
import TandemLabSupport
import TandemTransport
#if canImport(Glibc)
import Glibc
#endif

/// `tandem-host lab`: the paper's experiment (figures 1 and 4) in network namespaces, with
/// the real tandem-host and tandem-agent binaries.
///
/// ```
///  vm1 ns: eth0 10.77.0.1 ─┐                         host ns                     recv ns
///   tandem-agent (pty)     ├─ vm1h ┐                                  
///  vm2 ns: eth0 10.77.0.2 ─┤       ├─ br0 ── up0 (tbf LINK) ══ eth0 10.77.0.254 iperf3 -s
///   tandem-agent (pty)     └─ vm2h ┘   tandem-host (tc backend on vmKh)
/// ```
public struct Lab: Sendable {
    public struct Options: Sendable {
        public var vms = 2
        public var link = BitRate.mbit(200)
        public var phase = 10.0
        public var reservation: BitRate? = nil
        /// Run the tenants' experiment instead (``Lab/groupVMs`` VMs in two `[[group]]`s).
        public var groups = false
        /// Where the binaries are.
        public var binaries: String
        public var keepLogs = false
        public init(binaries: String) { self.binaries = binaries }
    }

    public struct VMResult: Codable, Sendable {
        public var vm: String
        public var traffic: String
        public var throughput: UInt64
        public var share: Double
    }

    public struct PhaseResult: Codable, Sendable {
        public var phase: Int
        public var name: String
        public var vms: [VMResult]
        public var jain: Double?
        /// Seconds from the phase's change to convergence; nil where not measured or not reached.
        public var convergence: Double?
        public var targets: [Target]
    }

    public struct Target: Codable, Sendable {
        public var what: String
        public var wanted: String
        public var measured: String
        public var met: Bool
    }

    public struct Report: Codable, Sendable {
        public var link: UInt64
        public var phaseSeconds: Double
        public var phases: [PhaseResult]
        public var fairnessTable: String?
        public var allTargetsMet: Bool
    }

    public let options: Options
    let progress: @Sendable (String) -> Void

    public init(options: Options, progress: @escaping @Sendable (String) -> Void) {
        self.options = options
        self.progress = progress
    }

    public static let prefix = "tdmlab"

    /// Removes namespaces left by a lab whose process is gone (a crash, a SIGKILL).
    public static func cleanStale() -> [String] {
        guard let out = try? Shell.run(["ip", "netns", "list"]).stdout else { return [] }
        var removed: [String] = []
        for line in out.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            let parts = name.split(separator: "-")
            guard parts.count >= 3, parts[0] == prefix, let pid = Int32(parts[1]) else { continue }
            if kill(pid, 0) == 0 || errno == EPERM { continue }   // its lab is still running
            Netns.delete(named: name)
            removed.append(name)
            try? FileManager.default.removeItem(atPath: "/tmp/\(prefix)-\(pid)")
        }
        return removed
    }

    /// Checks what the lab needs, with a clear message for what is missing.
    public static func preflight(binaries: String) throws {
        guard getuid() == 0 else { throw LabError.notRoot }
        for tool in ["ip", "tc", "iperf3"] where !Shell.has(tool) {
            throw LabError.missingTool(tool)
        }
        for b in ["tandem-host", "tandem-agent"] where !FileManager.default.isExecutableFile(atPath: binaries + "/" + b) {
            throw LabError.missingBinary("\(binaries)/\(b)")
        }
        let probe = "\(prefix)-probe-\(getpid())"
        let r = try Shell.run(["ip", "netns", "add", probe])
        guard r.status == 0 else { throw LabError.noNamespace(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines)) }
        _ = try? Shell.run(["ip", "netns", "delete", probe])
    }

    public final class Topology: @unchecked Sendable {
        public let dir: URL
        public var namespaces: [Netns] = []
        public var processes: [BackgroundProcess] = []
        public var relays: [LabRelay] = []
        public var host: Netns!
        public var recv: Netns!
        public var vmNS: [Netns] = []
        public var controller: BackgroundProcess?

        public init() throws {
            dir = URL(fileURLWithPath: "/tmp/\(Lab.prefix)-\(getpid())")
            try? FileManager.default.removeItem(at: dir)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        }

        public func teardown(keepLogs: Bool) {
            for p in processes { p.stop(signal: SIGTERM, grace: 2) }
            for r in relays { r.stop() }
            for n in namespaces { n.delete() }
            if !keepLogs { try? FileManager.default.removeItem(at: dir) }
        }
    }

    public func run() async throws -> Report {
        let o = options
        _ = Self.cleanStale()
        let t = try Topology()
        defer { t.teardown(keepLogs: o.keepLogs) }
        try build(t)
        if o.groups { return try await runGroups(t) }
        let capacity = Double(o.link.bitsPerSecond)
        let udpRate = UInt64(capacity * 2 / Double(o.vms - 1))
        var phases: [PhaseResult] = []

        // Phase 1: no control.
        progress("phase 1/4: no control (the paper's figure 1)")
        let p1 = try await traffic(t, seconds: o.phase, tcp: true, udpRate: udpRate, omit: 1, phaseName: "phase 1/4: no control")
        phases.append(result(1, "no control", p1, convergence: nil, targets: []))

        // Phase 2: under Tandem.
        try startTandem(t)
        progress("phase 2/4: under Tandem")
        let fair = 1.0 / Double(o.vms)
        let watcher = ConvergenceWatcher(lab: self, t: t) { rows in
            guard rows.count >= 2 else { return false }
            let tcpShare = Double(rows[0].measured) / capacity
            let j = Allocator.jainIndex(rows.map { (BitRate(bitsPerSecond: $0.measured), $0.weight) }) ?? 0
            return tcpShare >= 0.9 * fair && j >= 0.95
        }
        watcher.start()
        let table = TextBox()
        let p2 = try await traffic(t, seconds: o.phase, tcp: true, udpRate: udpRate, omit: 2, phaseName: "phase 2/4: under Tandem") {
            table.value = try? self.fairnessText(t)
            if let v = table.value { self.progress("fairness during phase 2 (tandem-host fairness):\n" + v) }
        }
        let c2 = watcher.stop()
        let tcpShare2 = Double(p2[0].throughput) / capacity
        let j2 = jain(p2)
        phases.append(result(2, "under Tandem", p2, convergence: c2, targets: [
            Target(what: "TCP VM's share", wanted: ">= \(pct(0.45 * fair * 2))", measured: pct(tcpShare2), met: tcpShare2 >= 0.45 * fair * 2),
            Target(what: "Jain's index", wanted: ">= 0.95", measured: j2.map { String(format: "%.3f", $0) } ?? "-", met: (j2 ?? 0) >= 0.95),
        ]))

        // Phase 3: VM1 stops; the others get the link back.
        progress("phase 3/4: VM1 stops (work conserving)")
        let watcher3 = ConvergenceWatcher(lab: self, t: t) { rows in
            rows.dropFirst().reduce(0) { $0 + Double($1.measured) } >= 0.90 * capacity * 0.95
        }
        watcher3.start()
        let p3 = try await traffic(t, seconds: o.phase, tcp: false, udpRate: udpRate, omit: 2, phaseName: "phase 3/4: VM1 idle")
        let c3 = watcher3.stop()
        let udpShare3 = p3.dropFirst().reduce(0) { $0 + Double($1.throughput) } / capacity
        phases.append(result(3, "VM1 idle", p3, convergence: c3, targets: [
            Target(what: "UDP VMs' share", wanted: ">= 90%", measured: pct(udpShare3), met: udpShare3 >= 0.90),
            Target(what: "time to 90%", wanted: "<= 2s", measured: c3.map { String(format: "%.1fs", $0) } ?? "not reached", met: (c3 ?? 99) <= 2),
        ]))

        // Phase 4: VM1 reserves bandwidth for its TCP flow while the flood goes on.
        let reserved = o.reservation ?? o.link.scaled(by: 0.2)
        progress("phase 4/4: VM1 reserves \(reserved) for its TCP flow")
        let client = try LineClient(path: t.dir.appendingPathComponent("vm1-agent.sock").path, what: "vm1's agent")
        let resp = try client.call(AgentRequest(op: "reserve", rate: reserved.description, proto: "tcp", dst: "10.77.0.254", dport: 5201), as: AgentResponse.self)
        guard resp.ok else { throw LabError.reservationRefused(resp.error ?? "?") }
        let granted = POSIX.now()
        let watcher4 = ConvergenceWatcher(lab: self, t: t) { rows in Double(rows[0].measured) >= Double(reserved.bitsPerSecond) * 0.95 }
        watcher4.start()
        let p4 = try await traffic(t, seconds: o.phase, tcp: true, udpRate: udpRate, omit: 2, phaseName: "phase 4/4: reservation")
        let c4 = watcher4.stop().map { $0 + (watcher4.startedAt - granted) }
        let goodputTarget = Double(reserved.bitsPerSecond) * 0.95 * 0.95
        phases.append(result(4, "VM1 reserves \(reserved)", p4, convergence: c4, targets: [
            Target(what: "reservation delivered", wanted: ">= 95% of \(reserved) (goodput-equivalent)",
                   measured: String(format: "%.1f%%", Double(p4[0].throughput) / (Double(reserved.bitsPerSecond) * 0.95) * 100),
                   met: Double(p4[0].throughput) >= goodputTarget),
        ]))
        client.close()
        let all = phases.allSatisfy { $0.targets.allSatisfy(\.met) }
        return Report(link: o.link.bitsPerSecond, phaseSeconds: o.phase, phases: phases, fairnessTable: table.value, allTargetsMet: all)
    }

    // MARK: tenants

    /// The tenants' experiment: tenant-a has VM1 (weight 1) and VM2 (weight 3), tenant-b has
    /// VM3 (weight 1); the tenants' weights are 1:1. Every VM floods (UDP, as much as the
    /// link). Each tenant should get half of what the link carries, tenant-a's half split
    /// 1:3 between its VMs.
    public static let groupVMs = 3
    static let groupOf = ["tenant-a", "tenant-a", "tenant-b"]
    static let groupWeights: [Double] = [1, 3, 1]

    func runGroups(_ t: Topology) async throws -> Report {
        let o = options
        try startTandem(t)
        progress("tenants: tenant-a (vm1 weight 1, vm2 weight 3) and tenant-b (vm3), weights 1:1, all flooding")
        let capacity = Double(o.link.bitsPerSecond)
        let watcher = ConvergenceWatcher(lab: self, t: t) { rows in
            guard rows.count == 3 else { return false }
            let a = Double(rows[0].measured + rows[1].measured), b = Double(rows[2].measured)
            return a > 0 && b > 0 && abs(a / (a + b) - 0.5) <= 0.05
        }
        watcher.start()
        let table = TextBox()
        let r = try await traffic(t, seconds: o.phase, tcp: false, udpRate: o.link.bitsPerSecond, omit: 2, phaseName: "tenants", allUDP: true) {
            table.value = try? self.fairnessText(t)
            if let v = table.value { self.progress("fairness (tandem-host fairness):\n" + v) }
        }
        let converged = watcher.stop()
        let a = Double(r[0].throughput + r[1].throughput), b = Double(r[2].throughput)
        let total = max(a + b, 1)
        let ratio = Double(r[1].throughput) / max(Double(r[0].throughput), 1)
        let between = Allocator.jainIndex([(BitRate(clamping: a), 1), (BitRate(clamping: b), 1)])
        let within = Allocator.jainIndex([(BitRate(bitsPerSecond: r[0].throughput), 1), (BitRate(bitsPerSecond: r[1].throughput), 3)])
        func j(_ x: Double?) -> String { x.map { String(format: "%.3f", $0) } ?? "-" }
        let targets = [
            Target(what: "tenant-a's share of what the link carried", wanted: "50% +- 5", measured: pct(a / total), met: abs(a / total - 0.5) <= 0.05),
            Target(what: "vm2 : vm1 inside tenant-a", wanted: "3 +- 20%", measured: String(format: "%.2f", ratio), met: abs(ratio - 3) <= 0.6),
            Target(what: "Jain between the tenants (weights 1:1)", wanted: ">= 0.95", measured: j(between), met: (between ?? 0) >= 0.95),
            Target(what: "Jain inside tenant-a (weights 1:3)", wanted: ">= 0.95", measured: j(within), met: (within ?? 0) >= 0.95),
            Target(what: "link used", wanted: ">= 90%", measured: pct(total / capacity), met: total / capacity >= 0.90),
        ]
        let phase = PhaseResult(phase: 1, name: "two tenants, 2 and 1 VMs, weights 1:1", vms: r, jain: within, convergence: converged, targets: targets)
        return Report(link: o.link.bitsPerSecond, phaseSeconds: o.phase, phases: [phase], fairnessTable: table.value, allTargetsMet: targets.allSatisfy(\.met))
    }

    func pct(_ x: Double) -> String { String(format: "%.1f%%", x * 100) }

    func jain(_ vms: [VMResult]) -> Double? {
        Allocator.jainIndex(vms.map { (BitRate(bitsPerSecond: $0.throughput), 1) })
    }

    func result(_ n: Int, _ name: String, _ vms: [VMResult], convergence: Double?, targets: [Target]) -> PhaseResult {
        PhaseResult(phase: n, name: name, vms: vms, jain: jain(vms.filter { $0.throughput > 0 }), convergence: convergence, targets: targets)
    }

    // MARK: topology

    public func build(_ t: Topology) throws {
        let o = options
        t.recv = try Netns(prefix: "\(Self.prefix)-\(getpid())-recv"); t.namespaces.append(t.recv)
        t.host = try Netns(prefix: "\(Self.prefix)-\(getpid())-host"); t.namespaces.append(t.host)
        try t.host.ip("link add br0 type bridge")
        try t.host.ip("link set br0 up")
        try t.host.addVeth("up0", peer: t.recv, "eth0")
        try t.host.ip("link set up0 master br0")
        try t.recv.ip("addr add 10.77.0.254/24 dev eth0")
        // The shared wire: the uplink's egress towards the receiver, at the link's rate.
        let burst = max(o.link.bytesPerSecond / 250, 32_000)
        try t.host.tc("qdisc replace dev up0 root tbf rate \(o.link.bitsPerSecond)bit burst \(burst) latency 20ms")
        for i in 1...o.vms {
            let ns = try Netns(prefix: "\(Self.prefix)-\(getpid())-vm\(i)")
            t.namespaces.append(ns); t.vmNS.append(ns)
            try t.host.addVeth("vm\(i)h", peer: ns, "eth0")
            try t.host.ip("link set vm\(i)h master br0")
            try ns.ip("addr add 10.77.0.\(i)/24 dev eth0")
        }
        for i in 1...o.vms {
            let server = try BackgroundProcess(["ip", "netns", "exec", t.recv.name, "iperf3", "-s", "-p", "\(5200 + i)"])
            t.processes.append(server)
        }
        for i in 1...o.vms { t.recv.waitForListener(port: 5200 + i) }
    }

    var labConfig: String {
        var s = """
        # Generated by tandem-host lab.
        [controller]
        interval = "100ms"
        admin_socket = "ADMIN"
        state_dir = "STATE"
        metrics = "off"

        [[link]]
        name = "wire"
        capacity = "\(options.link)"

        """
        if options.groups {
            for g in ["tenant-a", "tenant-b"] { s += "\n[[group]]\nname = \"\(g)\"\nlink = \"wire\"\nweight = 1\n" }
        }
        let guarantee = options.link.scaled(by: 0.5 / Double(options.vms))
        for i in 1...options.vms {
            s += """

            [[vm]]
            name = "vm\(i)"
            link = "wire"
            backend = "tc"
            interface = "vm\(i)h"
            channel = "CHANNEL\(i)"

            """
            if options.groups {
                s += "group = \"\(Self.groupOf[i - 1])\"\nweight = \(Int(Self.groupWeights[i - 1]))\n"
            } else {
                s += "weight = 1\nmin = \"\(max(guarantee, options.reservation ?? .zero))\"\n"
            }
        }
        return s
    }

    public func startTandem(_ t: Topology) throws {
        let o = options
        var cfg = labConfig
            .replacingOccurrences(of: "ADMIN", with: t.dir.appendingPathComponent("host.sock").path)
            .replacingOccurrences(of: "STATE", with: t.dir.appendingPathComponent("state").path)
        for i in 1...o.vms {
            let relay = try LabRelay(socketPath: t.dir.appendingPathComponent("vm\(i).chan").path)
            relay.start()
            t.relays.append(relay)
            cfg = cfg.replacingOccurrences(of: "CHANNEL\(i)\"", with: relay.socketPath + "\"")
            let agent = try BackgroundProcess(["ip", "netns", "exec", t.vmNS[i - 1].name, o.binaries + "/tandem-agent", "run",
                                               "--interface", "eth0", "--channel", relay.slavePath,
                                               "--socket", t.dir.appendingPathComponent("vm\(i)-agent.sock").path, "--interval", "100ms"],
                                              log: t.dir.appendingPathComponent("vm\(i)-agent.log"))
            t.processes.append(agent)
        }
        let cfgPath = t.dir.appendingPathComponent("host.toml")
        try cfg.write(to: cfgPath, atomically: true, encoding: .utf8)
        let controller = try BackgroundProcess(["ip", "netns", "exec", t.host.name, o.binaries + "/tandem-host", "run", "--config", cfgPath.path],
                                               log: t.dir.appendingPathComponent("host.log"))
        t.processes.append(controller)
        t.controller = controller
        // Wait until every agent is welcomed.
        let deadline = POSIX.now() + 15
        while POSIX.now() < deadline {
            if let rows = try? fairness(t), rows.count == o.vms, rows.allSatisfy({ $0.agent == "connected" }) { return }
            if !controller.isRunning {
                throw LabError.hostExited(log: String((try? String(contentsOf: t.dir.appendingPathComponent("host.log"), encoding: .utf8))?.suffix(2000) ?? ""))
            }
            usleep(100_000)
        }
        let log = (try? String(contentsOf: t.dir.appendingPathComponent("host.log"), encoding: .utf8)) ?? ""
        throw LabError.agentsNotWelcomed(log: String(log.suffix(3000)))
    }

    public func fairness(_ t: Topology) throws -> [LinkFairness.Row] {
        let c = try LineClient(path: t.dir.appendingPathComponent("host.sock").path, what: "the lab's tandem-host")
        let r = try c.call(AdminRequest(op: "fairness"), as: AdminResponse.self, timeout: 2)
        return r.fairness?.first?.vms ?? []
    }

    func fairnessText(_ t: Topology) throws -> String {
        let c = try LineClient(path: t.dir.appendingPathComponent("host.sock").path, what: "the lab's tandem-host")
        let r = try c.call(AdminRequest(op: "fairness"), as: AdminResponse.self, timeout: 2)
        return FairnessTable.render(r.fairness ?? [])
    }

    // MARK: traffic

    /// Runs one phase's traffic: VM1's TCP flow (if `tcp`) and the other VMs' UDP floods,
    /// and returns what the receiver measured per VM.
    /// `allUDP`: VM1 floods too.
    func traffic(_ t: Topology, seconds: Double, tcp: Bool, udpRate: UInt64, omit: Int, phaseName: String, allUDP: Bool = false,
                 midway: (@Sendable () -> Void)? = nil) async throws -> [VMResult] {
        let o = options
        var procs: [(Int, BackgroundProcess, URL)] = []
        for i in 1...o.vms {
            if i == 1 && !tcp && !allUDP { continue }
            let out = t.dir.appendingPathComponent("iperf-vm\(i)-\(UUID().uuidString.prefix(6)).json")
            var argv = ["ip", "netns", "exec", t.vmNS[i - 1].name, "iperf3", "-c", "10.77.0.254", "-p", "\(5200 + i)",
                        "-t", String(format: "%.0f", seconds + Double(omit)), "-O", "\(omit)", "-J"]
            if i > 1 || allUDP { argv += ["-u", "-b", "\(udpRate)", "-l", "1400"] }
            procs.append((i, try BackgroundProcess(argv, log: out), out))
        }
        let start = POSIX.now()
        let total = seconds + Double(omit)
        var didMidway = false
        while procs.contains(where: { $0.1.isRunning }) {
            let left = max(0, total - (POSIX.now() - start))
            progress(String(format: "%@: %.0fs left", phaseName, left))
            if !didMidway, POSIX.now() - start > total / 2 { didMidway = true; midway?() }
            if POSIX.now() - start > total + 15 { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        var results: [VMResult] = []
        for i in 1...o.vms {
            guard let (_, p, out) = procs.first(where: { $0.0 == i }) else {
                results.append(VMResult(vm: "vm\(i)", traffic: "idle", throughput: 0, share: 0))
                continue
            }
            p.stop()
            let text = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
            let r = try? Iperf.parse(text)
            let bps = UInt64(r?.receivedBitsPerSecond ?? 0)
            results.append(VMResult(vm: "vm\(i)", traffic: i == 1 && !allUDP ? "tcp" : "udp flood \(BitRate(bitsPerSecond: udpRate))",
                                    throughput: bps, share: Double(bps) / Double(o.link.bitsPerSecond)))
        }
        return results
    }
}

final class TextBox: @unchecked Sendable { var value: String? }

/// Polls the controller's view of measured rates every 100 ms and notes when a condition
/// starts to hold for good (for at least 1 s, until stopped).
final class ConvergenceWatcher: @unchecked Sendable {
    let lab: Lab
    let t: Lab.Topology
    let condition: ([LinkFairness.Row]) -> Bool
    let lock = NSLock()
    var since: Double?
    var stopped = false
    var startedAt = 0.0
    var thread: Thread?

    init(lab: Lab, t: Lab.Topology, condition: @escaping ([LinkFairness.Row]) -> Bool) {
        self.lab = lab; self.t = t; self.condition = condition
    }

    func start() {
        startedAt = POSIX.now()
        let th = Thread { [self] in
            var runStart: Double? = nil
            while !lock.withLock({ stopped }) {
                let now = POSIX.now()
                if let rows = try? lab.fairness(t) {
                    if condition(rows) {
                        if runStart == nil { runStart = now }
                        if let r = runStart, now - r >= 1 { lock.withLock { if since == nil { since = r } } }
                    } else {
                        runStart = nil
                    }
                }
                usleep(100_000)
            }
        }
        th.start()
        thread = th
    }

    /// Seconds from start to the beginning of the first stretch of at least 1 s in which
    /// the condition held; nil if there was none.
    func stop() -> Double? {
        lock.withLock {
            stopped = true
            return since.map { max(0, $0 - startedAt) }
        }
    }
}

/// Why the lab could not run or finish: a message for the person who started it.
public enum LabError: Error, CustomStringConvertible, Sendable {
    case notRoot
    case missingTool(String)
    case missingBinary(String)
    case noNamespace(String)
    case reservationRefused(String)
    case hostExited(log: String)
    case agentsNotWelcomed(log: String)

    public var description: String {
        switch self {
        case .notRoot: "the lab needs root: it makes network namespaces (run it with sudo)"
        case .missingTool(let tool): "the lab needs \(tool): run scripts/setup.sh (it installs iproute2 and iperf3)"
        case .missingBinary(let path): "\(path) is missing: build with swift build"
        case .noNamespace(let why): "cannot make a network namespace: \(why)"
        case .reservationRefused(let why): "the reservation was refused: \(why)"
        case .hostExited(let log): "tandem-host exited: \(log)"
        case .agentsNotWelcomed(let log): "the agents were not all welcomed within 15s; controller log:\n\(log)"
        }
    }
}
