import Foundation
import Metrics
import TandemProtocol
import HostCore

/// The controller's metrics through swift-metrics (the backend is chosen in main).
/// Dimensions are bounded: per VM, per link, per kind of channel error; never per flow.
/// Each gauge is made once and kept: making one is a lookup in the backend's registry
/// (labels hashed and compared), recording is a store.
public final class ControllerMetrics: @unchecked Sendable {
    private let lock = NSLock()
    private var gauges: [String: [Gauge]] = [:]
    private var counters: [String: Counter] = [:]

    public init() {}

    static let linkLabels = ["tandem_link_utilisation_ratio", "tandem_link_jain_index", "tandem_link_capacity_bits_per_second"]
    static let groupLabels = ["tandem_group_allocation_bits_per_second", "tandem_group_measured_bits_per_second", "tandem_group_demand_bits_per_second",
                              "tandem_group_jain_index"]
    static let vmLabels = ["tandem_vm_allocation_bits_per_second", "tandem_vm_measured_bits_per_second", "tandem_vm_demand_bits_per_second",
                           "tandem_vm_agent_connected", "tandem_channel_messages", "tandem_channel_disconnects"]

    private func gauges(_ key: String, _ labels: [String], _ dimension: (String, String)) -> [Gauge] {
        if let g = gauges[key] { return g }
        let g = labels.map { Gauge(label: $0, dimensions: [dimension]) }
        gauges[key] = g
        return g
    }

    func update(_ links: [LinkFairness], status: [String: Controller.VM]) {
        lock.withLock {
            for l in links {
                let g = gauges("link " + l.link, Self.linkLabels, ("link", l.link))
                g[0].record(l.utilisation)
                g[1].record(l.jain ?? 1)
                g[2].record(Double(l.capacity))
                if l.groups != nil {
                    gauges("link groups " + l.link, ["tandem_link_group_jain_index"], ("link", l.link))[0].record(l.jainGroups ?? 1)
                }
                for r in l.groups ?? [] {
                    let v = gauges("group " + r.group, Self.groupLabels, ("group", r.group))
                    v[0].record(Double(r.allocation))
                    v[1].record(Double(r.measured))
                    v[2].record(Double(r.demand))
                    v[3].record(r.jain ?? 1)
                }
                for r in l.vms {
                    let v = gauges("vm " + r.vm, Self.vmLabels, ("vm", r.vm))
                    v[0].record(Double(r.allocation))
                    v[1].record(Double(r.measured))
                    v[2].record(Double(r.demand))
                    v[3].record(r.agent == "connected" ? 1 : 0)
                    if let s = status[r.vm] {
                        v[4].record(Double(s.messages))
                        v[5].record(Double(s.disconnects))
                    }
                }
            }
        }
    }

    func channelError(_ vm: String, _ kind: String) {
        lock.withLock {
            let key = vm + "\u{0}" + kind
            if counters[key] == nil { counters[key] = Counter(label: "tandem_channel_errors_total", dimensions: [("vm", vm), ("kind", kind)]) }
            counters[key]!.increment()
        }
    }
}
