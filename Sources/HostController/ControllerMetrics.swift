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

    /// The series of one subject (a link, a group, a VM, or the host's own counters): its
    /// labels, its gauges and counters by name, and the gauges set in the update under way.
    /// One keyed lookup per subject and update; a subject not in an update leaves, with all
    /// its series. Series are keyed by where their name's literal is (``SeriesKey``): an
    /// update hashes integers, not 40-character names (it was the round's dearest part
    /// after the counter dump, with 64 VMs).
    private final class Subject {
        let labels: [(String, String)]
        var gauges: [SeriesKey: Gauge] = [:]
        var counters: [SeriesKey: (counter: Counter, total: UInt64)] = [:]
        var touched: Set<SeriesKey> = []
        init(_ labels: [(String, String)]) { self.labels = labels }
    }
    /// A series of a subject: its family's name (a literal, by address) and the values of
    /// its extra labels, if any.
    private struct SeriesKey: Hashable {
        let name: Int
        let extra: [String]
        init(_ name: StaticString, _ extra: [(String, String)]) {
            self.name = Int(bitPattern: name.utf8Start)
            self.extra = extra.map(\.1)
        }
    }
    /// Series are keyed by their name's address, so each name must be written at one place
    /// (the same text at two call sites may get two addresses: two keys for one series,
    /// counted twice). Checked in debug builds (the tests) as series are made.
    private static let addresses = NSLock()
    nonisolated(unsafe) private static var addressOf: [String: Int] = [:]
    private static func checkOneAddress(_ name: StaticString) {
        #if DEBUG
        let address = Int(bitPattern: name.utf8Start)
        let first = addresses.withLock {
            let first = addressOf[name.description, default: address]
            addressOf[name.description] = first
            return first
        }
        assert(first == address, "metric \(name) is named at two places: key its series by one")
        #endif
    }

    /// Which link, group or VM a subject is (all nil: the host's own counters).
    private struct SubjectKey: Hashable {
        var link: String?, group: String?, vm: String?
        var labels: [(String, String)] {
            [("link", link), ("group", group), ("vm", vm)].compactMap { k, v in v.map { (k, $0) } }
        }
    }
    private var subjects: [SubjectKey: Subject] = [:]
    private var present: Set<SubjectKey> = []

    /// The subject with these labels, made on first use; marked present in this update.
    private func subject(link: String? = nil, group: String? = nil, vm: String? = nil) -> Subject {
        let key = SubjectKey(link: link, group: group, vm: vm)
        present.insert(key)
        if let s = subjects[key] { return s }
        let s = Subject(key.labels)
        subjects[key] = s
        return s
    }

    /// Sets a gauge of `s` (made on first use) and marks it as current. `extra` labels (an
    /// agent's version) make another series of the same name.
    private func set(_ s: Subject, _ name: StaticString, _ value: Double, extra: [(String, String)] = []) {
        let key = SeriesKey(name, extra)
        s.touched.insert(key)
        if let g = s.gauges[key] { g.set(to: value); return }
        Self.checkOneAddress(name)
        let g = registry.makeGauge(name: name.description, labels: s.labels + extra, help: Self.help[name.description] ?? "")
        s.gauges[key] = g
        g.set(to: value)
    }

    /// Brings a counter of `s` (made on first use) up to `total`, a running count kept
    /// elsewhere; `by` instead adds to it. A total below the last one started again (a VM
    /// released and added back under its name between two updates): all of it is new.
    /// (Prometheus takes a counter that only grows; its rate() is right.)
    private func count(_ s: Subject, _ name: StaticString, to total: UInt64? = nil, by: UInt64 = 0, extra: [(String, String)] = []) {
        let key = SeriesKey(name, extra)
        if s.counters[key] == nil { Self.checkOneAddress(name) }
        let (c, seen) = s.counters[key] ?? (registry.makeCounter(name: name.description, labels: s.labels + extra, help: Self.help[name.description] ?? ""), 0)
        let now = total ?? seen + by
        let added = now >= seen ? now - seen : now
        if added > 0 { c.increment(by: Int64(added)) }
        s.counters[key] = (c, now)
    }

    /// What a VM's series take from the controller besides its fairness row.
    struct VMFacts: Sendable {
        var lastError: Bool
        var agentVersion: String?
        var transmitted: UInt64, messages: UInt64, disconnects: UInt64
    }

    /// What the round published last and the registry does not show yet.
    private struct Published {
        var links: [LinkFairness]
        var vms: [String: VMFacts]
        var limitWrites: [String: UInt64], backendErrors: [String: UInt64]
    }
    private var pending: Published?

    /// Once a second, from the round: what the series will show. Kept, not applied: the
    /// registry's hundreds of series are brought up to date when someone reads them
    /// (``refresh()``, before each scrape), not every second whether read or not (with 64 VMs
    /// that was the round's dearest part after the counter dump).
    func publish(_ links: [LinkFairness], vms: [String: Controller.VM], limitWrites: [String: UInt64], backendErrors: [String: UInt64]) {
        var facts: [String: VMFacts] = [:]
        facts.reserveCapacity(vms.count)
        for (name, v) in vms {
            facts[name] = VMFacts(lastError: v.lastError != nil, agentVersion: v.agentVersion, transmitted: v.transmitted, messages: v.messages, disconnects: v.disconnects)
        }
        let p = Published(links: links, vms: facts, limitWrites: limitWrites, backendErrors: backendErrors)
        lock.withLock { pending = p }
    }

    /// Publishes and applies at once (tests, and anything that reads the registry directly).
    func update(_ links: [LinkFairness], vms: [String: Controller.VM], limitWrites: [String: UInt64], backendErrors: [String: UInt64]) {
        publish(links, vms: vms, limitWrites: limitWrites, backendErrors: backendErrors)
        refresh()
    }

    /// Brings the registry up to what was last published (nothing if it already shows it):
    /// every gauge, and the counters the controller keeps. Any thread.
    func refresh() {
        lock.withLock {
            guard let p = pending else { return }
            pending = nil
            apply(p.links, vms: p.vms, limitWrites: p.limitWrites, backendErrors: p.backendErrors)
        }
    }

    /// Under the lock.
    private func apply(_ links: [LinkFairness], vms: [String: VMFacts], limitWrites: [String: UInt64], backendErrors: [String: UInt64]) {
        present = []
        for s in subjects.values { s.touched = [] }
        for l in links {
            let link = subject(link: l.link)
            set(link, "tandem_link_capacity_bytes_per_second", Self.bytes(l.capacity))
            set(link, "tandem_link_utilisation_ratio", l.utilisation)
            if let j = l.jain { set(link, "tandem_link_jain_index", j) }
            if let j = l.jainGroups { set(link, "tandem_link_group_jain_index", j) }
            for g in l.groups ?? [] {
                let s = subject(link: l.link, group: g.group)
                set(s, "tandem_group_allocation_bytes_per_second", Self.bytes(g.allocation))
                set(s, "tandem_group_measured_bytes_per_second", Self.bytes(g.measured))
                set(s, "tandem_group_demand_bytes_per_second", Self.bytes(g.demand))
                set(s, "tandem_group_guarantee_bytes_per_second", Self.bytes(g.min))
                if let m = g.max { set(s, "tandem_group_cap_bytes_per_second", Self.bytes(m)) }
                if let j = g.jain { set(s, "tandem_group_jain_index", j) }
            }
            for r in l.vms {
                let s = subject(link: l.link, vm: r.vm)
                set(s, "tandem_vm_allocation_bytes_per_second", Self.bytes(r.allocation))
                set(s, "tandem_vm_measured_bytes_per_second", Self.bytes(r.measured))
                set(s, "tandem_vm_demand_bytes_per_second", Self.bytes(r.demand))
                set(s, "tandem_vm_weight", r.weight)
                set(s, "tandem_vm_guarantee_bytes_per_second", Self.bytes(r.min))
                if let m = r.max { set(s, "tandem_vm_cap_bytes_per_second", Self.bytes(m)) }
                set(s, "tandem_vm_reserved_bytes_per_second", Self.bytes(r.reserved))
                if r.agent != "none" { set(s, "tandem_vm_agent_connected", r.agent == "connected" ? 1 : 0) }
                guard let v = vms[r.vm] else { continue }
                set(s, "tandem_vm_backend_error", v.lastError ? 1 : 0)
                if r.agent == "connected", let version = v.agentVersion {
                    set(s, "tandem_vm_agent_info", 1, extra: [("version", Self.labelValue(version))])
                }
                count(s, "tandem_vm_transmitted_bytes_total", to: v.transmitted)
                count(s, "tandem_channel_messages_total", to: v.messages)
                count(s, "tandem_channel_disconnects_total", to: v.disconnects)
            }
        }
        let host = subject()
        for (kind, n) in limitWrites { count(host, "tandem_limit_writes_total", to: n, extra: [("backend", kind)]) }
        for (kind, n) in backendErrors { count(host, "tandem_backend_errors_total", to: n, extra: [("backend", kind)]) }
        // What is no longer there is no longer said: a subject gone (a VM released) with
        // all its series, and a gauge not set this time (no Jain's index, no cap).
        for (key, s) in subjects {
            guard present.contains(key) else {
                s.gauges.values.forEach(registry.unregisterGauge)
                s.counters.values.forEach { registry.unregisterCounter($0.counter) }
                subjects[key] = nil
                continue
            }
            for (name, g) in s.gauges where !s.touched.contains(name) {
                registry.unregisterGauge(g)
                s.gauges[name] = nil
            }
        }
    }

    /// A frame refused on a VM's channel (as it happens, between updates).
    func channelError(_ vm: String, link: String, _ kind: String) {
        lock.withLock {
            let key = SubjectKey(link: link, vm: vm)
            let s = subjects[key] ?? Subject(key.labels)
            subjects[key] = s
            count(s, "tandem_channel_errors_total", by: 1, extra: [("kind", kind)])
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
