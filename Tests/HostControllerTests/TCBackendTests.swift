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
            // (The root also counts what it dropped before the class was made: the IFB's own
            // packets as it came up, which no class took.)
            let (rootDrops, classDrops) = (batched.drops ?? 0, direct.drops ?? 0)
            #expect(rootDrops >= classDrops, "root \(rootDrops), class \(classDrops)")
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

    /// Two taps swap names (a VM restarted into the other's device): each one's redirect now
    /// points at the other VM's IFB. That is not taken for intact, and the reconcile puts
    /// each redirect back on its own IFB (issue #18, item 6). No traffic: the filters only.
    @Test func aRedirectToAnotherVMsIFBIsNotOursAndIsPutRight() async throws {
        let ns = try Netns(prefix: "tdm-swap")
        defer { ns.delete() }
        try ns.ip("link add s0 type veth peer name s0p")
        try ns.ip("link add s1 type veth peer name s1p")
        for d in ["s0", "s0p", "s1", "s1p"] { try ns.ip("link set \(d) up") }
        let nl = try RouteSocket(namespace: ns.name)
        let a = TCBackend(vm: "vm-a", interface: "s0", netlink: nl)
        let b = TCBackend(vm: "vm-b", interface: "s1", netlink: nl)
        try await a.prepare(initialLimit: .mbit(10))
        try await b.prepare(initialLimit: .mbit(20))
        #expect(await a.isIntact())
        #expect(await b.isIntact())
        // Swap the targets: s0 → b's IFB, s1 → a's IFB.
        for (dev, other) in [("s0", b.ifb), ("s1", a.ifb)] {
            try ns.tc("filter del dev \(dev) parent ffff: prio 1")
            try ns.tc("filter add dev \(dev) parent ffff: prio 1 protocol all u32 match u32 0 0 action mirred egress redirect dev \(other)")
        }
        #expect(await !a.isIntact(), "s0 redirects to \(b.ifb), not to its own IFB")
        #expect(try await a.installed().foreignRedirect)
        #expect(try await a.reconcile(limit: .mbit(10)) == [.deleteRedirect, .addRedirect])
        #expect(try await b.reconcile(limit: .mbit(20)) == [.deleteRedirect, .addRedirect])
        #expect(await a.isIntact())
        #expect(await b.isIntact())
        #expect(try ns.tc("filter show dev s0 ingress").contains("Egress Redirect to device \(a.ifb)"))
        #expect(try ns.tc("filter show dev s1 ingress").contains("Egress Redirect to device \(b.ifb)"))
        try await a.teardown()
        try await b.teardown()
    }

    /// The VM's class deleted behind the controller's back (issue #18, item 10): the root
    /// drops what no class takes, so the VM's traffic stops instead of going through HTB's
    /// unlimited direct queue; the reconcile puts the class back at the limit.
    @Test func aDeletedLimitClassDropsInsteadOfLettingTrafficThrough() async throws {
        try await TrafficGate.shared.run {
            let pair = try VethPair(prefix: "tdm-dcl")
            defer { pair.close() }
            let nl = try RouteSocket(namespace: pair.a.name)
            let backend = TCBackend(vm: "vm-dcl", interface: "t0", netlink: nl)
            try await backend.prepare(initialLimit: .mbit(20))
            // The host's address resolved for good: ARP would be dropped with the rest.
            try pair.a.pinNeighbour("10.99.0.1", of: "t0", in: pair.b, dev: "t1")
            try pair.a.tc("class del dev \(backend.ifb) classid 1:10")
            #expect(try await backend.installed().limit == nil)
            // What reached the host is read from its IP counters (no control connection that
            // the drop would cut, as iperf3's would be).
            func flood() async throws -> Double {
                let before = try pair.a.inOctets()
                let f = try UDPFlood(from: pair.b, to: "10.99.0.1", port: 5402, bitsPerSecond: 200e6)
                try await Task.sleep(for: .seconds(2))
                f.stop()
                try await Task.sleep(for: .milliseconds(200))   // what HTB still queues
                return Double(try pair.a.inOctets() - before) * 8 / 2
            }
            let through = try await flood()
            print("tc backend: class 1:10 deleted, a 200 Mbit/s flood for 2 s: \(Int(through)) bit/s reached the host")
            #expect(through < 200_000, "\(through) bit/s went through HTB's direct queue")
            #expect(try await backend.reconcile(limit: .mbit(20)) == [.setLimit(.mbit(20))])
            let limited = try await flood()
            print("tc backend: class put back: \(Int(limited)) bit/s of the flood reached the host")
            #expect(limited > 20e6 * 0.8 && limited < 20e6 * 1.15, "\(limited) bit/s")
            try await backend.teardown()
        }
    }

    /// A tree made before the default-deny (HTB's direct queue as long as the IFB's queue) is
    /// made again with none, keeping the limit in force. No traffic: the tree only.
    @Test func anOlderTreeIsMadeDefaultDenyKeepingItsLimit() async throws {
        let ns = try Netns(prefix: "tdm-old")
        defer { ns.delete() }
        try ns.ip("link add o0 type veth peer name o0p")
        try ns.ip("link set o0 up")
        let nl = try RouteSocket(namespace: ns.name)
        let backend = TCBackend(vm: "vm-old", interface: "o0", netlink: nl)
        for c in ["link add \(backend.ifb) type ifb", "link set \(backend.ifb) up"] { try ns.ip(c) }
        for c in ["qdisc add dev \(backend.ifb) root handle 1: htb default 10",
                  "class add dev \(backend.ifb) parent 1: classid 1:10 htb rate 7mbit ceil 7mbit",
                  "qdisc add dev o0 handle ffff: ingress",
                  "filter add dev o0 parent ffff: prio 1 protocol all u32 match u32 0 0 action mirred egress redirect dev \(backend.ifb)"] { try ns.tc(c) }
        #expect(try await backend.installed().root == .stale)
        #expect(try await backend.reconcile(limit: .mbit(40)) == [.parkRoot, .replaceRoot, .setLimit(.mbit(7))])
        #expect(try ns.tc("-d qdisc show dev \(backend.ifb)").contains("direct_qlen 0"))
        #expect(try await backend.currentLimit() == .mbit(7))
        #expect(try await backend.reconcile(limit: .mbit(40)).isEmpty)
        try await backend.teardown()
    }

    /// A VM moved to another interface (a reload): its IFB, named for the VM, is the new
    /// interface's too; the old backend's teardown leaves it and removes only the old
    /// interface's ingress (it deleted the IFB before, leaving the new redirect pointing at
    /// nothing). No traffic: the tree only.
    @Test func aVMMovedToAnotherInterfaceKeepsItsIFB() async throws {
        let ns = try Netns(prefix: "tdm-move")
        defer { ns.delete() }
        for (a, b) in [("m0", "m0p"), ("m1", "m1p")] { try ns.ip("link add \(a) type veth peer name \(b)"); try ns.ip("link set \(a) up") }
        let nl = try RouteSocket(namespace: ns.name)
        let old = TCBackend(vm: "vm-move", interface: "m0", netlink: nl)
        let new = TCBackend(vm: "vm-move", interface: "m1", netlink: nl)
        try await old.prepare(initialLimit: .mbit(10))
        try await new.prepare(initialLimit: .mbit(10))
        try await old.teardown(handingOverTo: new)
        #expect(await new.isIntact(), "the new interface's redirect to the IFB that is still there")
        #expect(!(try ns.tc("qdisc show dev m0")).contains("ingress"), "the old interface let go")
        #expect(try await new.currentLimit() == .mbit(10))
        try await new.teardown()
    }
}
