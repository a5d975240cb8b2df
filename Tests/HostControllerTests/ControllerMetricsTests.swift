import Foundation
import Prometheus
import Testing
import TandemProtocol
import TandemTransport
@testable import HostController
@testable import HostCore

/// The metrics' series over a VM's life: counters that only grow, a VM that leaves taking
/// its series with it, and one that comes back under its name counting from its new total.
@Suite struct ControllerMetricsTests {
    static func table(_ vms: [String]) -> [LinkFairness] {
        [LinkFairness(link: "up", capacity: 1_000_000, utilisation: 0, jain: nil,
                      vms: vms.map { .init(vm: $0, weight: 1, min: 0, max: nil, demand: 0, allocation: 8_000, measured: 0, share: 0, agent: "none", reserved: 0) })]
    }

    static func vm(_ name: String, transmitted: UInt64) throws -> Controller.VM {
        let config = try HostConfig.parse("[[link]]\nname = \"up\"\ncapacity = \"1mbit\"\n[[vm]]\nname = \"\(name)\"\ninterface = \"v0\"\n")
        let v = Controller.VM(config: config.vms[0], policy: config.vms[0].policy, backend: FakeBackend(), channel: nil,
                              meter: RateMeter(ceiling: .mbit(2)), agent: .none, budget: TokenBucket(rate: 20, burst: 50))
        v.transmitted = transmitted
        return v
    }

    static func value(_ text: String, _ series: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
    }

    @Test func aVMThatLeavesTakesItsSeriesAndOneThatComesBackCountsAnew() throws {
        let registry = PrometheusCollectorRegistry()
        let m = ControllerMetrics(registry: registry)
        let series = "tandem_vm_transmitted_bytes_total{link=\"up\",vm=\"a\"}"
        m.update(Self.table(["a", "b"]), vms: ["a": try Self.vm("a", transmitted: 100), "b": try Self.vm("b", transmitted: 5)], limitWrites: ["tc": 2], backendErrors: [:])
        m.channelError("a", link: "up", "garbage")
        var text = registry.emitToString()
        #expect(Self.value(text, series) == 100)
        #expect(Self.value(text, "tandem_vm_allocation_bytes_per_second{link=\"up\",vm=\"a\"}") == 1_000, "bits over 8")
        #expect(text.contains("tandem_channel_errors_total{link=\"up\",vm=\"a\",kind=\"garbage\"} 1"))
        // The next update keeps the error counter (errors come between updates).
        m.update(Self.table(["a", "b"]), vms: ["a": try Self.vm("a", transmitted: 150), "b": try Self.vm("b", transmitted: 5)], limitWrites: ["tc": 3], backendErrors: [:])
        text = registry.emitToString()
        #expect(Self.value(text, series) == 150)
        #expect(text.contains("tandem_channel_errors_total{link=\"up\",vm=\"a\",kind=\"garbage\"} 1"))
        #expect(Self.value(text, "tandem_limit_writes_total{backend=\"tc\"}") == 3)
        // a leaves: its gauges and counters go.
        m.update(Self.table(["b"]), vms: ["b": try Self.vm("b", transmitted: 6)], limitWrites: ["tc": 3], backendErrors: [:])
        text = registry.emitToString()
        #expect(!text.contains("vm=\"a\""), "\(text)")
        #expect(text.contains("vm=\"b\""))
        // a comes back (a new VM, its total from 0): counted from there, not held at 150.
        m.update(Self.table(["a", "b"]), vms: ["a": try Self.vm("a", transmitted: 40), "b": try Self.vm("b", transmitted: 7)], limitWrites: ["tc": 4], backendErrors: [:])
        #expect(Self.value(registry.emitToString(), series) == 40)
        m.update(Self.table(["a", "b"]), vms: ["a": try Self.vm("a", transmitted: 90), "b": try Self.vm("b", transmitted: 7)], limitWrites: ["tc": 4], backendErrors: [:])
        #expect(Self.value(registry.emitToString(), series) == 90)
        // Released and added back between two updates: its new total (20) is all new.
        m.update(Self.table(["a", "b"]), vms: ["a": try Self.vm("a", transmitted: 20), "b": try Self.vm("b", transmitted: 7)], limitWrites: ["tc": 4], backendErrors: [:])
        #expect(Self.value(registry.emitToString(), series) == 110, "a counter never goes back, nor stalls")
    }

    /// The round publishes; the registry is brought up to date when read (before a scrape),
    /// with what was published last, once.
    @Test func publishedValuesReachTheRegistryWhenRefreshed() throws {
        let registry = PrometheusCollectorRegistry()
        let m = ControllerMetrics(registry: registry)
        let series = "tandem_vm_transmitted_bytes_total{link=\"up\",vm=\"a\"}"
        m.publish(Self.table(["a"]), vms: ["a": try Self.vm("a", transmitted: 100)], limitWrites: [:], backendErrors: [:])
        #expect(Self.value(registry.emitToString(), series) == nil, "nothing applied before a refresh")
        m.publish(Self.table(["a"]), vms: ["a": try Self.vm("a", transmitted: 130)], limitWrites: [:], backendErrors: [:])
        m.refresh()
        #expect(Self.value(registry.emitToString(), series) == 130, "the last published")
        m.refresh()
        #expect(Self.value(registry.emitToString(), series) == 130)
        // A VM gone by the next publication leaves at the next refresh.
        m.publish(Self.table(["b"]), vms: ["b": try Self.vm("b", transmitted: 1)], limitWrites: [:], backendErrors: [:])
        #expect(registry.emitToString().contains("vm=\"a\""))
        m.refresh()
        #expect(!registry.emitToString().contains("vm=\"a\""))
    }
}
