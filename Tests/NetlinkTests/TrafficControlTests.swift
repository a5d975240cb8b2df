import Testing
import Glibc
import Netlink
import TandemProtocol
import TandemTestSupport
import TandemLabSupport

/// Each object added, listed, compared field by field with tc's own view, changed,
/// deleted and confirmed gone, in a namespace made for the test.
@Suite(.serialized, Privileged.enabled, .exclusive)
struct TrafficControlTests {
    @Test func linksAndIFB() async throws {
        let ns = try Netns(prefix: "tdm-link")
        defer { ns.delete() }
        try ns.ip("link add va type veth peer name vb")
        let nl = try RouteSocket(namespace: ns.name)
        let va = try await nl.link(named: "va")
        let ipJSON = try ns.ip("-j link show va")
        #expect(ipJSON.contains("\"ifindex\":\(va.index),"))
        #expect(va.kind == "veth")
        #expect(va.isUp == false)
        #expect(va.mtu == 1500)
        #expect(ipJSON.contains("\"address\":\"\(try #require(va.mac))\""))
        #expect(try await nl.link(index: va.index).name == "va")

        try await nl.addIFB(named: "ifb-t")
        let ifb = try await nl.link(named: "ifb-t")
        #expect(ifb.kind == "ifb")
        try await nl.setLink(named: "ifb-t", up: true)
        #expect(try await nl.link(named: "ifb-t").isUp)
        #expect(try ns.ip("link show ifb-t").contains("UP"))
        await #expect(throws: NetlinkError.self) { try await nl.addIFB(named: "ifb-t") }
        try await nl.deleteLink(named: "ifb-t")
        #expect((try? ns.ip("link show ifb-t")) == nil, "gone from ip's view")
        let missing = await #expect(throws: NetlinkError.self) { try await nl.link(named: "ifb-t") }
        #expect(missing?.description.contains("ifb-t") == true)
        await #expect(throws: NetlinkError.self) { try await nl.link(named: "bad/name") }
    }

    @Test func linkCountersAreSixtyFourBitAndMove() async throws {
        let pair = try VethPair()
        defer { pair.close() }
        let nl = try RouteSocket(namespace: pair.a.name)
        let before = try await nl.link(named: "t0").stats
        try pair.a.exec(["ping", "-c", "3", "-i", "0.05", "-q", "10.99.0.2"])
        let after = try await nl.link(named: "t0").stats
        #expect(after.txPackets >= before.txPackets + 3)
        #expect(after.txBytes > before.txBytes)
        #expect(after.rxPackets >= before.rxPackets + 3)
    }

    @Test func htbRootAndClassesAddListChangeDelete() async throws {
        let ns = try Netns(prefix: "tdm-htb")
        defer { ns.delete() }
        try ns.ip("link add va type veth peer name vb")
        let nl = try RouteSocket(namespace: ns.name)
        let idx = try await nl.index(of: "va")
        try await nl.replaceHTBRoot(ifindex: idx, handle: TCHandle(major: 1, minor: 0), defaultClass: 0x20)
        let root = try #require(try await nl.rootQdisc(ifindex: idx))
        #expect(root.kind == "htb")
        #expect(root.handle == TCHandle(major: 1, minor: 0))
        #expect(root.htbDefaultClass == 0x20)
        #expect(try ns.tc("qdisc show dev va").contains("htb 1: root"))
        #expect(try ns.tc("qdisc show dev va").contains("default 0x20"))

        let top = HTBClass(handle: TCHandle("1:1")!, parent: TCHandle("1:")!, rate: .mbit(100), ceil: .mbit(100))
        let tcp = HTBClass(handle: TCHandle("1:10")!, parent: top.handle, rate: .mbit(50), ceil: .mbit(100), prio: 1)
        let udp = HTBClass(handle: TCHandle("1:20")!, parent: top.handle, rate: .mbit(50), ceil: .mbit(100), prio: 2, quantum: 3000)
        let fast = HTBClass(handle: TCHandle("1:30")!, parent: top.handle, rate: .gbit(40), ceil: .gbit(100))
        for c in [top, tcp, udp, fast] { try await nl.setHTBClass(ifindex: idx, c, mode: .add) }

        let mine = try await nl.classes(ifindex: idx)
        let theirs = TCText.classes(try ns.tc("-d class show dev va"))
        #expect(mine.map(\.spec.handle.description) == ["1:1", "1:10", "1:20", "1:30"])
        for want in [top, tcp, udp, fast] {
            let got = try #require(mine.first { $0.spec.handle == want.handle })
            #expect(got.kind == "htb")
            #expect(got.spec.parent == want.parent)
            #expect(got.spec.rate == want.rate)
            #expect(got.spec.ceil == want.ceil)
            #expect(got.spec.prio == want.prio)
            #expect(got.spec.quantum == want.effectiveQuantum)
            let oracle = try #require(theirs.first { $0.handle == want.handle.description })
            #expect(oracle.rate == want.rate, "tc sees the same rate for \(want.handle)")
            #expect(oracle.ceil == want.ceil)
            if want.handle != top.handle {   // tc prints prio and quantum for leaves only
                #expect(oracle.prio == Int(want.prio))
                #expect(oracle.quantum == Int(want.effectiveQuantum))
            }
            #expect(oracle.parent == (want.parent == TCHandle("1:")! ? "root" : want.parent.description))
        }
        // Bursts survive the round trip through the kernel's ticks to within a byte or so.
        let gotTCP = try #require(mine.first { $0.spec.handle == tcp.handle })
        #expect(abs(Int(gotTCP.spec.burst ?? 0) - Int(tcp.effectiveBurst)) <= Int(tcp.effectiveBurst) / 100 + 2)

        // Change in place: the class keeps its counters and identity.
        var changed = tcp
        changed.ceil = .mbit(80)
        try await nl.setHTBClass(ifindex: idx, changed, mode: .change)
        #expect(TCText.classes(try ns.tc("class show dev va")).first { $0.handle == "1:10" }?.ceil == .mbit(80))

        // Applying the same state twice changes nothing the second time.
        let snapshot = try await nl.classes(ifindex: idx).map(\.spec)
        for c in [top, changed, udp, fast] { try await nl.setHTBClass(ifindex: idx, c, mode: .replace) }
        #expect(try await nl.classes(ifindex: idx).map(\.spec) == snapshot)

        // Errors name the request and the object, and carry the kernel's errno.
        let exists = await #expect(throws: NetlinkError.self) { try await nl.setHTBClass(ifindex: idx, tcp, mode: .add) }
        #expect(exists?.errno == EEXIST)
        #expect(exists?.operation == "RTM_NEWTCLASS")
        #expect(exists?.description.contains("1:10") == true)
        let orphan = HTBClass(handle: TCHandle("5:99")!, parent: TCHandle("5:")!, rate: .mbit(1))   // no qdisc 5:
        let noParent = await #expect(throws: NetlinkError.self) { try await nl.setHTBClass(ifindex: idx, orphan, mode: .add) }
        #expect(noParent?.errno == ENOENT)

        // Misuse that would abort libnl is refused before any call.
        let badMajor = HTBClass(handle: TCHandle("2:10")!, parent: TCHandle("1:")!, rate: .mbit(1))
        let e1 = await #expect(throws: NetlinkError.self) { try await nl.setHTBClass(ifindex: idx, badMajor) }
        #expect(e1?.description.contains("same major") == true)
        let noRate = HTBClass(handle: TCHandle("1:40")!, parent: TCHandle("1:")!, rate: .zero, ceil: .mbit(1))
        await #expect(throws: NetlinkError.self) { try await nl.setHTBClass(ifindex: idx, noRate) }
        let ceilBelow = HTBClass(handle: TCHandle("1:40")!, parent: TCHandle("1:")!, rate: .mbit(5), ceil: .mbit(1))
        await #expect(throws: NetlinkError.self) { try await nl.setHTBClass(ifindex: idx, ceilBelow) }

        // Delete, confirm gone.
        try await nl.deleteClass(ifindex: idx, handle: TCHandle("1:30")!)
        #expect(try await nl.classes(ifindex: idx).contains { $0.spec.handle == TCHandle("1:30")! } == false)
        #expect(!(try ns.tc("class show dev va")).contains("1:30"))
        try await nl.deleteQdisc(ifindex: idx, parent: .root)
        #expect(try await nl.rootQdisc(ifindex: idx) == nil)
        #expect(!(try ns.tc("qdisc show dev va")).contains("htb"))
        try await nl.deleteQdisc(ifindex: idx, parent: .root)   // already gone: fine
    }

    @Test func u32FiltersMatchWhatTcBuilds() async throws {
        let ns = try Netns(prefix: "tdm-u32")
        defer { ns.delete() }
        try ns.ip("link add va type veth peer name vb")
        let nl = try RouteSocket(namespace: ns.name)
        let va = try await nl.index(of: "va"), vb = try await nl.index(of: "vb")
        for (i, dev) in [(va, "va"), (vb, "vb")] {
            try await nl.replaceHTBRoot(ifindex: i, handle: TCHandle("1:")!, defaultClass: 0x10)
            try await nl.setHTBClass(ifindex: i, HTBClass(handle: TCHandle("1:10")!, parent: TCHandle("1:")!, rate: .mbit(10)))
            try await nl.setHTBClass(ifindex: i, HTBClass(handle: TCHandle("1:20")!, parent: TCHandle("1:")!, rate: .mbit(10)))
            _ = dev
        }
        // The same rules through this module (on va) and through tc (on vb).
        let rules: [(U32Filter, String)] = [
            (U32Filter(parent: TCHandle("1:")!, priority: 10, family: .ipv4, match: FlowSelector(proto: .tcp, destination: IPPrefix("10.0.0.5"), destinationPort: 5201), target: .classify(TCHandle("1:20")!)),
             "prio 10 protocol ip u32 match ip protocol 6 0xff match ip dst 10.0.0.5/32 match ip dport 5201 0xffff flowid 1:20"),
            (U32Filter(parent: TCHandle("1:")!, priority: 11, family: .ipv4, match: FlowSelector(proto: .udp, source: IPPrefix("192.168.4.0/22"), sourcePort: 53), target: .classify(TCHandle("1:10")!)),
             "prio 11 protocol ip u32 match ip protocol 17 0xff match ip src 192.168.4.0/22 match ip sport 53 0xffff flowid 1:10"),
            (U32Filter(parent: TCHandle("1:")!, priority: 12, family: .ipv6, match: FlowSelector(proto: .tcp, destination: IPPrefix("fd00::5"), destinationPort: 443), target: .classify(TCHandle("1:20")!)),
             "prio 12 protocol ipv6 u32 match ip6 protocol 6 0xff match ip6 dst fd00::5/128 match ip6 dport 443 0xffff flowid 1:20"),
            (U32Filter(parent: TCHandle("1:")!, priority: 13, family: .ipv6, match: FlowSelector(proto: .udp, source: IPPrefix("fd00:1::/48")), target: .classify(TCHandle("1:10")!)),
             "prio 13 protocol ipv6 u32 match ip6 protocol 17 0xff match ip6 src fd00:1::/48 flowid 1:10"),
            (U32Filter(parent: TCHandle("1:")!, priority: 14, family: .ipv4, target: .classify(TCHandle("1:10")!)),
             "prio 14 protocol ip u32 match u32 0 0 flowid 1:10"),
        ]
        for (f, tcArgs) in rules {
            try await nl.addU32Filter(ifindex: va, f)
            try ns.tc("filter add dev vb parent 1: " + tcArgs)
        }
        let mine = TCText.u32Nodes(try ns.tc("filter show dev va parent 1:"))
        let theirs = TCText.u32Nodes(try ns.tc("filter show dev vb parent 1:"))
        #expect(mine.count == rules.count)
        #expect(mine.map(\.pref) == theirs.map(\.pref))
        for (m, t) in zip(mine, theirs) {
            #expect(m.proto == t.proto)
            #expect(m.flowid != nil)
            #expect(m.flowid == t.flowid)
            #expect(Set(m.matches) == Set(t.matches), "keys of prio \(m.pref): ours \(m.matches), tc's \(t.matches)")
        }
        // The module's own listing agrees.
        let listed = try await nl.filters(ifindex: va, parent: TCHandle("1:")!)
        #expect(Set(listed.map(\.priority)) == Set([10, 11, 12, 13, 14]))
        #expect(listed.filter { $0.classID != nil }.count == rules.count)
        #expect(listed.first { $0.priority == 10 && $0.classID != nil }?.classID == TCHandle("1:20")!)

        // Delete one, the rest stay.
        try await nl.deleteFilter(ifindex: va, parent: TCHandle("1:")!, priority: 11, family: .ipv4)
        let after = try await nl.filters(ifindex: va, parent: TCHandle("1:")!)
        #expect(!after.contains { $0.priority == 11 })
        #expect(Set(after.map(\.priority)) == Set([10, 12, 13, 14]))
        try await nl.deleteFilter(ifindex: va, parent: TCHandle("1:")!, priority: 11, family: .ipv4)  // gone: fine

        // Refused before libnl: mixed families, ports without a protocol.
        let mixed = U32Filter(parent: TCHandle("1:")!, priority: 20, family: .ipv4, match: FlowSelector(proto: .tcp, destination: IPPrefix("fd00::1")), target: .classify(TCHandle("1:10")!))
        await #expect(throws: NetlinkError.self) { try await nl.addU32Filter(ifindex: va, mixed) }
        let portsAll = U32Filter(parent: TCHandle("1:")!, priority: 20, family: .all, match: FlowSelector(proto: .tcp, destinationPort: 80), target: .classify(TCHandle("1:10")!))
        await #expect(throws: NetlinkError.self) { try await nl.addU32Filter(ifindex: va, portsAll) }
    }

    @Test func ingressRedirectToIFB() async throws {
        let ns = try Netns(prefix: "tdm-ing")
        defer { ns.delete() }
        try ns.ip("link add va type veth peer name vb")
        let nl = try RouteSocket(namespace: ns.name)
        try await nl.addIFB(named: "ifb-va")
        let va = try await nl.index(of: "va"), ifb = try await nl.index(of: "ifb-va")
        try await nl.addIngress(ifindex: va)
        try await nl.addIngress(ifindex: va)  // idempotent
        try await nl.addU32Filter(ifindex: va, U32Filter(parent: .ingress, priority: 1, family: .all, target: .redirect(ifindex: ifb)))
        let qdiscs = try await nl.qdiscs(ifindex: va)
        #expect(qdiscs.contains { $0.kind == "ingress" && $0.handle == .ingress })
        let text = try ns.tc("filter show dev va ingress")
        #expect(text.contains("Egress Redirect to device ifb-va"), "tc shows: \(text)")
        #expect(text.contains("protocol all"))
        try await nl.deleteQdisc(ifindex: va, parent: .ingressParent)
        #expect(!(try ns.tc("qdisc show dev va")).contains("ingress"))
    }

    @Test func qdiscAndClassStatsMatchTc() async throws {
        let pair = try VethPair()
        defer { pair.close() }
        let nl = try RouteSocket(namespace: pair.a.name)
        let t0 = try await nl.index(of: "t0")
        try await nl.replaceHTBRoot(ifindex: t0, handle: TCHandle("1:")!, defaultClass: 0x10)
        try await nl.setHTBClass(ifindex: t0, HTBClass(handle: TCHandle("1:10")!, parent: TCHandle("1:")!, rate: .mbit(100)))
        try pair.a.exec(["ping", "-c", "5", "-i", "0.05", "-q", "10.99.0.2"])
        let mine = try #require(try await nl.classes(ifindex: t0).first { $0.spec.handle == TCHandle("1:10")! })
        let theirs = try #require(TCText.classes(try pair.a.tc("-s class show dev t0")).first { $0.handle == "1:10" })
        #expect(mine.stats.packets >= 5)
        #expect(mine.stats.bytes == theirs.sentBytes, "same counters as tc -s")
        #expect(mine.stats.drops == theirs.drops)
        let root = try #require(try await nl.rootQdisc(ifindex: t0))
        #expect(root.stats.bytes >= mine.stats.bytes)

        // The raw all-devices dump a controller reads every round agrees with libnl's parse
        // of the same table (nothing sends in between), for every root qdisc there is.
        try await nl.addIngress(ifindex: t0)
        let table = try await nl.qdiscCounters()
        let raw = table.roots
        #expect(table.ingress == [t0])
        let parsed = try await nl.qdiscs().filter { $0.parent == .root }
        #expect(raw.count == parsed.count && raw.count >= 2, "t0's htb and lo's root at least: \(raw)")
        for q in parsed {
            let r = try #require(raw[q.ifindex], "dev #\(q.ifindex) missing from the raw dump")
            #expect(r.kind == q.kind && r.handle == q.handle && r.bytes == q.stats.bytes && r.drops == q.stats.drops)
        }
        #expect(raw[t0]?.kind == "htb" && raw[t0]?.handle == TCHandle("1:")! && raw[t0]?.bytes == root.stats.bytes)
        // HTB's options: the default class, and a direct queue as long as the device's
        // queue (veth: 1000 packets) when none was asked for.
        #expect(raw[t0]?.htbDefaultClass == 0x10 && raw[t0]?.htbDirectQueue == 1000, "\(String(describing: raw[t0]))")
    }

    /// `htb default 10 direct_qlen 0`, built in Swift (libnl has no setter for it): the
    /// kernel takes it and reports it back, and an HTB root cannot be changed in place (the
    /// reason a stale one is deleted first).
    @Test func anHTBRootWithoutADirectQueue() async throws {
        let ns = try Netns(prefix: "tdm-dq")
        defer { ns.delete() }
        try ns.ip("link add d0 type veth peer name d1")
        let nl = try RouteSocket(namespace: ns.name)
        let d0 = try await nl.index(of: "d0")
        try await nl.replaceHTBRoot(ifindex: d0, handle: TCHandle("1:")!, defaultClass: 0x10, directQueue: 0)
        let root = try #require(try await nl.qdiscCounters().roots[d0])
        #expect(root.kind == "htb" && root.handle == TCHandle("1:")! && root.htbDefaultClass == 0x10 && root.htbDirectQueue == 0)
        #expect(try ns.tc("-d qdisc show dev d0").contains("default 0x10 direct_packets_stat 0 ver 3.17 direct_qlen 0"))
        await #expect(throws: NetlinkError.self) {
            try await nl.replaceHTBRoot(ifindex: d0, handle: TCHandle("1:")!, defaultClass: 0x20, directQueue: 0)
        }
        // An interface index that cannot be one is refused before anything is sent.
        await #expect(throws: NetlinkError.self) { try await nl.replaceHTBRoot(ifindex: 0, handle: TCHandle("1:")!, defaultClass: 0x10, directQueue: 0) }
    }

    @Test func htbRootMessageBytes() {
        // Derived from linux/pkt_sched.h and rtnetlink.h by hand: struct tcmsg for dev #7,
        // handle 1:, parent root; TCA_KIND "htb"; TCA_OPTIONS { TCA_HTB_INIT { version 3,
        // rate2quantum 10, defcls 0x10, debug 0, direct_pkts 0 }, TCA_HTB_DIRECT_QLEN 0 }.
        let expected: [UInt8] = [
            0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 1, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
            8, 0, 1, 0, 0x68, 0x74, 0x62, 0,
            36, 0, 2, 0,
            24, 0, 2, 0, 3, 0, 0, 0, 10, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            8, 0, 5, 0, 0, 0, 0, 0,
        ]
        #expect(HTBRootMessage.body(ifindex: 7, handle: TCHandle("1:")!, defaultClass: 0x10, directQueue: 0) == expected)
    }

    @Test func rootQdiscParserRefusesWhatIsNotARootQdisc() {
        // RTM_NEWQDISC for dev #7, root, handle 1:, kind "htb", TCA_STATS2 { BASIC bytes=1234, QUEUE drops=5 }.
        var m: [UInt8] = []
        func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { m += $0 } }
        le(UInt32(0)); le(UInt16(36)); le(UInt16(0)); le(UInt32(0)); le(UInt32(0))        // nlmsghdr (length patched below)
        m += [0, 0, 0, 0]; le(Int32(7)); le(UInt32(0x10000)); le(UInt32(0xFFFF_FFFF)); le(UInt32(0))
        le(UInt16(8)); le(UInt16(1)); m += Array("htb".utf8) + [0]                           // TCA_KIND
        le(UInt16(4 + 20 + 24)); le(UInt16(7))                                             // TCA_STATS2
        le(UInt16(20)); le(UInt16(1)); le(UInt64(1234)); le(UInt32(9)); m += [0, 0, 0, 0]   // BASIC (16 bytes)
        le(UInt16(24)); le(UInt16(3)); le(UInt32(0)); le(UInt32(0)); le(UInt32(5)); le(UInt32(0)); le(UInt32(0))  // QUEUE
        m.replaceSubrange(0..<4, with: withUnsafeBytes(of: UInt32(m.count).littleEndian, Array.init))
        let ok = m.withUnsafeBytes { RootQdiscCounters.parse($0) }
        #expect(ok?.0 == 7 && ok?.1 == RootQdiscCounters(kind: "htb", handle: TCHandle("1:")!, bytes: 1234, drops: 5))
        // A child qdisc (parent 1:10), a truncated message and a lying attribute length.
        var child = m; child.replaceSubrange(28..<32, with: [0x10, 0, 1, 0])
        #expect(child.withUnsafeBytes { RootQdiscCounters.parse($0) } == nil)
        #expect(Array(m.prefix(30)).withUnsafeBytes { RootQdiscCounters.parse($0) } == nil)
        var lying = m; lying.replaceSubrange(36..<38, with: [0xff, 0x00])
        let l = lying.withUnsafeBytes { RootQdiscCounters.parse($0) }
        #expect(l?.1.kind == "" && l?.1.bytes == 0, "a bad attribute stops the walk; nothing read past the message")
    }

    @Test func tbfRoot() async throws {
        let ns = try Netns(prefix: "tdm-tbf")
        defer { ns.delete() }
        try ns.ip("link add va type veth peer name vb")
        let nl = try RouteSocket(namespace: ns.name)
        let va = try await nl.index(of: "va")
        try await nl.replaceTBFRoot(ifindex: va, rate: .mbit(200), burstBytes: 256_000, limitBytes: 1_000_000)
        let text = try ns.tc("qdisc show dev va")
        #expect(text.contains("tbf"))
        #expect(text.contains("rate 200Mbit"), "tc shows: \(text)")
        await #expect(throws: NetlinkError.self) { try await nl.replaceTBFRoot(ifindex: va, rate: .zero, burstBytes: 1, limitBytes: 1) }
    }

    @Test func wrongNamespaceIsAClearError() async throws {
        let e = #expect(throws: NetlinkError.self) { try RouteSocket(namespace: "tdm-no-such-namespace-\(getpid())") }
        #expect(e?.operation == "setns")
        #expect(e?.errno == ENOENT)
    }
}
