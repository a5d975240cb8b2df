import Foundation
import Prometheus
import TandemProtocol
import HostCore

/// The controller's Prometheus metrics, to the exposition format's conventions: base units
/// (rates in bytes per second, as promtool insists, not the bits of tc and `fairness`; bytes;
/// ratios), counters named `_total`, a `# HELP` for each family, a
/// `link` label on every VM's and group's series. Dimensions are bounded: per link, VM,
/// group, kind of backend and kind of channel error; never per flow.
///
/// Each series is made once and kept (making one hashes its labels in the registry; setting
/// it is a store). A series whose subject is gone (a VM released by a reload, a Jain index
/// with nobody sending) is taken out of the registry rather than left at its last value.
public final class ControllerMetrics: @unchecked Sendable {
    let registry: PrometheusCollectorRegistry
    /// The fairness page's data, recorded with each update.
    public let history = FairnessHistory()
    private let lock = NSLock()
    private var gauges: [String: Gauge] = [:]
    private var counters: [String: (Counter, UInt64)] = [:]
    /// The gauges set in the update under way, and those set in the last: what the last
    /// set and this one did not is unregistered.
    private var touched: Set<String> = []
    private var lastTouched: Set<String> = []


    public init(registry: PrometheusCollectorRegistry, version: String = TandemVersion.string) {
        self.registry = registry
        registry.makeGauge(name: "tandem_build_info", labels: [("version", version)],
                           help: "Always 1; the running tandem-host's version as a label.").set(to: 1.0)
    }

    /// Help for each family (all series of a name share it).
    static let help: [String: String] = [
        "tandem_link_capacity_bytes_per_second": "The link's capacity as configured.",
        "tandem_link_utilisation_ratio": "What the link's VMs sent over the last round, over its capacity.",
        "tandem_link_jain_index": "Jain's fairness index over the VMs that send (more than 1% of the link), rates divided by weight; absent while none sends.",
        "tandem_link_group_jain_index": "Jain's index between the link's groups and the VMs in none that send; absent while none sends.",
        "tandem_group_allocation_bytes_per_second": "The sum of the group's VMs' limits.",
        "tandem_group_measured_bytes_per_second": "What the group's VMs sent over the last round.",
        "tandem_group_demand_bytes_per_second": "The sum of the group's VMs' estimated demand.",
        "tandem_group_guarantee_bytes_per_second": "The group's min.",
        "tandem_group_cap_bytes_per_second": "The group's max; absent when it has none.",
        "tandem_group_jain_index": "Jain's index among the group's VMs that send; absent while none sends.",
        "tandem_vm_allocation_bytes_per_second": "The VM's limit in force (VF TX rate or host-side shaper).",
        "tandem_vm_measured_bytes_per_second": "What the VM sent over the last round, from the host's counters.",
        "tandem_vm_demand_bytes_per_second": "The VM's estimated demand (its agent's report, believed up to its fair share, and the host's counters).",
        "tandem_vm_weight": "The VM's weight in force.",
        "tandem_vm_guarantee_bytes_per_second": "The VM's min (guarantee) in force.",
        "tandem_vm_cap_bytes_per_second": "The VM's max (cap) in force; absent when it has none.",
        "tandem_vm_reserved_bytes_per_second": "The sum of the reservations the host holds for the VM.",
        "tandem_vm_agent_connected": "1 while the VM's agent is connected and talking, else 0; absent for a VM with no channel.",
        "tandem_vm_backend_error": "1 while the VM's backend fails (its limit cannot be set up, written or read), else 0.",
        "tandem_vm_agent_info": "Always 1 while the agent is connected; the version it said in its hello as a label.",
        "tandem_vm_transmitted_bytes_total": "Bytes the VM sent since tandem-host started, from its counters.",
        "tandem_channel_messages_total": "Frames received from the VM's agent.",
        "tandem_channel_disconnects_total": "Times the VM's channel was cut off for misbehaving.",
        "tandem_channel_errors_total": "Frames from the VM's agent refused, by kind (garbage, invalid, oversize, rate-limited).",
        "tandem_limit_writes_total": "Limits written to the kernel, by kind of backend.",
        "tandem_backend_errors_total": "Backend calls that failed (set-up, counters, a limit), by kind of backend.",
    ]

    /// Sets a gauge (made on first use) and marks it as current.
    private func set(_ name: String, _ labels: [(String, String)], _ value: Double) {
        let key = name + labels.map { "\u{0}\($0.0)=\($0.1)" }.joined()
        touched.insert(key)
        if let g = gauges[key] { g.set(to: value); return }
        let g = registry.makeGauge(name: name, labels: labels, help: Self.help[name] ?? "")
        gauges[key] = g
        g.set(to: value)
    }

    /// Brings a counter (made on first use) up to `total`, a running count kept elsewhere. A
    /// total below the last one started again (a VM released and added back under its name):
    /// all of it is new. (Prometheus takes a counter that only grows; its rate() is right.)
    private func count(_ name: String, _ labels: [(String, String)], to total: UInt64) {
        let key = name + labels.map { "\u{0}\($0.0)=\($0.1)" }.joined()
        let (c, seen) = counters[key] ?? (registry.makeCounter(name: name, labels: labels, help: Self.help[name] ?? ""), 0)
        let added = total >= seen ? total - seen : total
        if added > 0 { c.increment(by: Int64(added)) }
        counters[key] = (c, total)
    }

    /// Once a second, from the round: every gauge, and the counters the controller keeps.
    func update(_ links: [LinkFairness], vms: [String: Controller.VM], limitWrites: [String: UInt64], backendErrors: [String: UInt64]) {
        lock.withLock {
            touched = []
            for l in links {
                let link = [("link", l.link)]
                set("tandem_link_capacity_bytes_per_second", link, Self.bytes(l.capacity))
                set("tandem_link_utilisation_ratio", link, l.utilisation)
                if let j = l.jain { set("tandem_link_jain_index", link, j) }
                if let j = l.jainGroups { set("tandem_link_group_jain_index", link, j) }
                for g in l.groups ?? [] {
                    let labels = [("link", l.link), ("group", g.group)]
                    set("tandem_group_allocation_bytes_per_second", labels, Self.bytes(g.allocation))
                    set("tandem_group_measured_bytes_per_second", labels, Self.bytes(g.measured))
                    set("tandem_group_demand_bytes_per_second", labels, Self.bytes(g.demand))
                    set("tandem_group_guarantee_bytes_per_second", labels, Self.bytes(g.min))
                    if let m = g.max { set("tandem_group_cap_bytes_per_second", labels, Self.bytes(m)) }
                    if let j = g.jain { set("tandem_group_jain_index", labels, j) }
                }
                for r in l.vms {
                    let labels = [("link", l.link), ("vm", r.vm)]
                    set("tandem_vm_allocation_bytes_per_second", labels, Self.bytes(r.allocation))
                    set("tandem_vm_measured_bytes_per_second", labels, Self.bytes(r.measured))
                    set("tandem_vm_demand_bytes_per_second", labels, Self.bytes(r.demand))
                    set("tandem_vm_weight", labels, r.weight)
                    set("tandem_vm_guarantee_bytes_per_second", labels, Self.bytes(r.min))
                    if let m = r.max { set("tandem_vm_cap_bytes_per_second", labels, Self.bytes(m)) }
                    set("tandem_vm_reserved_bytes_per_second", labels, Self.bytes(r.reserved))
                    if r.agent != "none" { set("tandem_vm_agent_connected", labels, r.agent == "connected" ? 1 : 0) }
                    guard let v = vms[r.vm] else { continue }
                    set("tandem_vm_backend_error", labels, v.lastError == nil ? 0 : 1)
                    if r.agent == "connected", let version = v.agentVersion {
                        set("tandem_vm_agent_info", labels + [("version", Self.labelValue(version))], 1)
                    }
                    count("tandem_vm_transmitted_bytes_total", labels, to: v.transmitted)
                    count("tandem_channel_messages_total", labels, to: v.messages)
                    count("tandem_channel_disconnects_total", labels, to: v.disconnects)
                }
            }
            // A VM's counters (channel errors too) go with it: those of a link and VM no
            // longer in the table.
            let present = Set(links.flatMap { l in l.vms.map { "\u{0}link=\(l.link)\u{0}vm=\($0.vm)" } })
            for key in counters.keys where key.contains("\u{0}vm=") && !present.contains(where: { key.contains($0 + "\u{0}") || key.hasSuffix($0) }) {
                if let (c, _) = counters.removeValue(forKey: key) { registry.unregisterCounter(c) }
            }
            for (kind, n) in limitWrites { count("tandem_limit_writes_total", [("backend", kind)], to: n) }
            for (kind, n) in backendErrors { count("tandem_backend_errors_total", [("backend", kind)], to: n) }
            // What is no longer there is no longer said.
            for key in lastTouched.subtracting(touched) {
                if let g = gauges.removeValue(forKey: key) { registry.unregisterGauge(g) }
            }
            lastTouched = touched
        }
    }

    func channelError(_ vm: String, link: String, _ kind: String) {
        lock.withLock {
            let labels = [("link", link), ("vm", vm), ("kind", kind)]
            let key = "tandem_channel_errors_total" + labels.map { "\u{0}\($0.0)=\($0.1)" }.joined()
            let (c, n) = counters[key] ?? (registry.makeCounter(name: "tandem_channel_errors_total", labels: labels, help: Self.help["tandem_channel_errors_total"]!), 0)
            c.increment()
            counters[key] = (c, n + 1)
        }
    }

    /// A rate in bits per second as Prometheus's base unit, bytes per second.
    static func bytes(_ bitsPerSecond: UInt64) -> Double { Double(bitsPerSecond) / 8 }

    /// A guest's words as a label value: printable ASCII without quotes or backslashes, at
    /// most 64 characters (the guest is not trusted to write the exposition format).
    static func labelValue(_ s: String) -> String {
        String(s.unicodeScalars.prefix(64).map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7f && $0 != "\"" && $0 != "\\" ? Character($0) : "_" })
    }
}
