import Foundation
import Testing
import Netlink
import TandemProtocol
import TandemTestSupport
@testable import HostController
@testable import HostCore
import TandemLabSupport
import TandemTransport

/// The tc backend for real: a "VM" namespace whose veth's host end is shaped by the
/// backend, with iperf3 from the VM to the host namespace.
@Suite(.serialized, Privileged.traffic, .exclusive)
struct TCBackendTests {
    @Test func vmEgressIsShapedToItsLimitAndARestartTakesOver() async throws {
        try await TrafficGate.shared.run {
            // a = host (t0, the VM's host-side interface), b = the VM (t1).
            let pair = try VethPair(prefix: "tdm-tcb")
            defer { pair.close() }
            let server = try Iperf.server(in: pair.a, port: 5401)
            defer { server.stop() }
            let nl = try RouteSocket(namespace: pair.a.name)
            let backend = TCBackend(vm: "vm-test", interface: "t0", netlink: nl)
            try await backend.prepare(initialLimit: .mbit(40))
            #expect(try await backend.currentLimit() == .mbit(40))
            // Reconciled: the same desired tree a second time finds nothing to do.
            #expect(try await backend.installed() == InstalledHostTree(ifbExists: true, ifbUp: true, root: .ours, limit: .mbit(40), ingress: true, redirect: true))
            #expect(try await backend.reconcile(limit: .mbit(40)).isEmpty)
            #expect(try pair.a.tc("filter show dev t0 ingress").contains("Egress Redirect to device \(backend.ifb)"))

            let r40 = try Iperf.client(in: pair.b, host: "10.99.0.1", port: 5401, seconds: 3)
            try await backend.apply(limit: .mbit(20), guarantee: .zero)
            let r20 = try Iperf.client(in: pair.b, host: "10.99.0.1", port: 5401, seconds: 3)
            print("tc backend: 40mbit limit \(String(format: "%.1f", r40.receivedBitsPerSecond / 1e6)) Mbit/s, 20mbit limit \(String(format: "%.1f", r20.receivedBitsPerSecond / 1e6)) Mbit/s")
            #expect(abs(r40.receivedBitsPerSecond - 40e6 * 0.95) <= 40e6 * 0.95 * 0.10)
            #expect(abs(r20.receivedBitsPerSecond - 20e6 * 0.95) <= 20e6 * 0.95 * 0.10)
            let (sent, _) = try await backend.counters()
            #expect(sent > UInt64((r40.receivedBitsPerSecond + r20.receivedBitsPerSecond) / 8 * 3 * 0.9), "the class counted the VM's bytes")
            // The round's shared dump of all root qdiscs gives the class's counters, plus
            // what HTB sent directly before the class existed (the IFB's own IPv6 chatter as
            // it came up: a packet or two). No traffic now, so nothing moves in between.
            let batch = try await backend.readBatch()
            let batched = try #require(backend.counters(in: batch))
            let direct = try await backend.counters()
            #expect(batched.sentBytes >= direct.sentBytes && batched.sentBytes - direct.sentBytes < 1500,
                    "root \(batched.sentBytes) bytes, class \(direct.sentBytes)")
            #expect(batched.drops == direct.drops)
            // A batch without the IFB (re-created since, or another socket's) gives nothing,
            // so the controller asks the backend itself.
            #expect(backend.counters(in: .qdiscs(QdiscCounters())) == nil)
            #expect(backend.counters(in: .virtualFunctions([0: (1, 1, .mbit(1))])) == nil)
            #expect(backend.isIntact(in: batch) == true)
            #expect(backend.isIntact(in: .qdiscs(QdiscCounters())) == false)

            // A restarted controller prepares again: the limit in force is kept, nothing is
            // torn down (no moment without a limit).
            let again = TCBackend(vm: "vm-test", interface: "t0", netlink: try RouteSocket(namespace: pair.a.name))
            try await again.prepare(initialLimit: .mbit(500))
            #expect(try await again.currentLimit() == .mbit(20))
            #expect(try pair.a.tc("filter show dev t0 ingress").components(separatedBy: "Egress Redirect").count == 2, "one redirect, not two")

            try await again.teardown()
            #expect(!(try pair.a.tc("qdisc show dev t0")).contains("ingress"))
            #expect((try? pair.a.ip("link show \(backend.ifb)")) == nil)
        }
    }
}
