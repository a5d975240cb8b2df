import Metrics
import TandemProtocol

/// The controller's metrics through swift-metrics (the backend is chosen in main).
/// Dimensions are bounded: per VM, per link, per kind of channel error; never per flow.
public final class ControllerMetrics: @unchecked Sendable {
    public init() {}

    func update(_ links: [LinkFairness], status: [String: Controller.VM]) {
        for l in links {
            Gauge(label: "tandem_link_utilisation_ratio", dimensions: [("link", l.link)]).record(l.utilisation)
            Gauge(label: "tandem_link_jain_index", dimensions: [("link", l.link)]).record(l.jain ?? 1)
            Gauge(label: "tandem_link_capacity_bits_per_second", dimensions: [("link", l.link)]).record(Double(l.capacity))
            for r in l.vms {
                Gauge(label: "tandem_vm_allocation_bits_per_second", dimensions: [("vm", r.vm)]).record(Double(r.allocation))
                Gauge(label: "tandem_vm_measured_bits_per_second", dimensions: [("vm", r.vm)]).record(Double(r.measured))
                Gauge(label: "tandem_vm_demand_bits_per_second", dimensions: [("vm", r.vm)]).record(Double(r.demand))
                Gauge(label: "tandem_vm_agent_connected", dimensions: [("vm", r.vm)]).record(r.agent == "connected" ? 1 : 0)
            }
        }
        for (name, v) in status {
            Gauge(label: "tandem_channel_messages", dimensions: [("vm", name)]).record(Double(v.messages))
            Gauge(label: "tandem_channel_disconnects", dimensions: [("vm", name)]).record(Double(v.disconnects))
        }
    }

    func channelError(_ vm: String, _ kind: String) {
        Counter(label: "tandem_channel_errors_total", dimensions: [("vm", vm), ("kind", kind)]).increment()
    }
}
