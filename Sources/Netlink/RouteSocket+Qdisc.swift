import CNetlink
import TandemProtocol
#if canImport(Glibc)
import Glibc
#endif

/// A queueing discipline as the kernel reports it.
public struct Qdisc: Hashable, Sendable {
    public var ifindex: Int32
    public var handle: TCHandle
    public var parent: TCHandle
    public var kind: String
    public var stats: TCStats
    /// HTB only: the minor of the class unclassified traffic goes to (`default 10`).
    public var htbDefaultClass: UInt16?
}

extension RouteSocket {
    /// `tc qdisc replace dev IF root handle H: htb default D` (RTM_NEWQDISC,
    /// NLM_F_CREATE|NLM_F_REPLACE). With the same handle and kind it changes the qdisc in
    /// place, keeping its classes. With `directQueue` (`direct_qlen N`; 0 drops what no class
    /// takes, see ``HTBRootMessage``) the message is built in Swift. The kernel cannot change
    /// an HTB root's options in place (HTB has no change operation): a root already at this
    /// handle is refused with EINVAL, and has to be deleted first.
    public func replaceHTBRoot(ifindex: Int32, handle: TCHandle, defaultClass: UInt16, directQueue: UInt32? = nil) throws(NetlinkError) {
        let object = "dev #\(ifindex) root handle \(handle) htb default \(String(defaultClass, radix: 16))" + (directQueue.map { " direct_qlen \($0)" } ?? "")
        guard handle.minor == 0, handle.major != 0, handle != .ingress else {
            throw NetlinkError.invalid("RTM_NEWQDISC", object, "a qdisc handle is MAJOR: with minor 0, major neither 0 nor ffff")
        }
        if let directQueue {
            guard ifindex > 0 else { throw NetlinkError.invalid("RTM_NEWQDISC", object, "no such interface index") }
            _ = try request(type: UInt16(RTM_NEWQDISC), flags: NLM_F_CREATE | NLM_F_REPLACE,
                            body: HTBRootMessage.body(ifindex: ifindex, handle: handle, defaultClass: defaultClass, directQueue: directQueue),
                            operation: "RTM_NEWQDISC", object: object, expectAck: true)
            return
        }
        try withQdisc(ifindex, parent: .root, handle: handle, kind: "htb") { q throws(NetlinkError) in
            try check(rtnl_htb_set_defcls(q, UInt32(defaultClass)), "RTM_NEWQDISC", object)
            prepare()
            try check(rtnl_qdisc_add(sock, q, NLM_F_CREATE | NLM_F_REPLACE), "RTM_NEWQDISC", object)
        }
    }

    /// `tc qdisc replace dev IF root tbf rate R burst B limit L` (RTM_NEWQDISC). Rates are
    /// 32-bit bytes per second in tbf's classic options: at most about 34 Gbit/s.
    public func replaceTBFRoot(ifindex: Int32, rate: BitRate, burstBytes: UInt32, limitBytes: UInt32) throws(NetlinkError) {
        let object = "dev #\(ifindex) root tbf rate \(rate)"
        guard rate.bytesPerSecond > 0, rate.bytesPerSecond <= UInt64(Int32.max), burstBytes > 0, limitBytes > 0 else {
            throw NetlinkError.invalid("RTM_NEWQDISC", object, "tbf needs a rate between 8bit and 17gbit, a burst and a limit")
        }
        try withQdisc(ifindex, parent: .root, handle: TCHandle(major: 1, minor: 0), kind: "tbf") { q throws(NetlinkError) in
            rtnl_qdisc_tbf_set_rate(q, Int32(rate.bytesPerSecond), Int32(burstBytes), 0)
            rtnl_qdisc_tbf_set_limit(q, Int32(limitBytes))
            prepare()
            try check(rtnl_qdisc_add(sock, q, NLM_F_CREATE | NLM_F_REPLACE), "RTM_NEWQDISC", object)
        }
    }

    /// `tc qdisc add dev IF handle ffff: ingress` (RTM_NEWQDISC). Succeeds if one is there.
    public func addIngress(ifindex: Int32) throws(NetlinkError) {
        try withQdisc(ifindex, parent: .ingressParent, handle: .ingress, kind: "ingress") { q throws(NetlinkError) in
            prepare()
            let rc = rtnl_qdisc_add(sock, q, NLM_F_CREATE)
            if rc < 0 && ack.pointee.error == EEXIST { return }
            try check(rc, "RTM_NEWQDISC", "dev #\(ifindex) ingress")
        }
    }

    /// `tc qdisc del dev IF root` (or `ingress`) (RTM_DELQDISC). Deleting what is not there
    /// is not an error: the desired state (no qdisc) holds.
    public func deleteQdisc(ifindex: Int32, parent: TCHandle) throws(NetlinkError) {
        let handle = parent == .ingressParent ? TCHandle.ingress : .unspecified
        try withQdisc(ifindex, parent: parent, handle: handle, kind: nil) { q throws(NetlinkError) in
            prepare()
            let rc = rtnl_qdisc_delete(sock, q)
            if rc < 0 && (ack.pointee.error == ENOENT || ack.pointee.error == EINVAL) { return }
            try check(rc, "RTM_DELQDISC", "dev #\(ifindex) \(parent)")
        }
    }

    /// `tc -s qdisc show dev IF` (RTM_GETQDISC dump, filtered to the interface).
    public func qdiscs(ifindex: Int32) throws(NetlinkError) -> [Qdisc] {
        try allQdiscs(object: "dev #\(ifindex)") { $0 == ifindex }
    }

    /// `tc -s qdisc show`: every interface's qdiscs and their counters in one RTM_GETQDISC
    /// dump. One request for a whole host's counters, where asking per interface costs a
    /// round trip (and a dump of the same table, which the kernel does not filter) each.
    public func qdiscs() throws(NetlinkError) -> [Qdisc] {
        try allQdiscs(object: "all devices") { _ in true }
    }

    /// Every interface's root qdisc with its kind, handle and counters, and which interfaces
    /// have an ingress qdisc, from one RTM_GETQDISC dump read in place (no libnl objects):
    /// what a controller reads every round. Byte counts are 64-bit (TCA_STATS2's
    /// TCA_STATS_BASIC); drops are the kernel's 32-bit counter.
    public func qdiscCounters() throws(NetlinkError) -> QdiscCounters {
        var out = QdiscCounters()
        try rawDump(type: UInt16(RTM_GETQDISC), body: [UInt8](repeating: 0, count: 20), operation: "RTM_GETQDISC", object: "all devices",
                    restart: { out = QdiscCounters() }) { m in out.add(m) }
        return out
    }

    func allQdiscs(object: @autoclosure () -> String, _ include: (Int32) -> Bool) throws(NetlinkError) -> [Qdisc] {
        let cache: OpaquePointer = try dump("RTM_GETQDISC", object()) {
            var c: OpaquePointer?
            let rc = rtnl_qdisc_alloc_cache(sock, &c)
            return (rc, c)
        }
        defer { nl_cache_free(cache) }
        var out: [Qdisc] = []
        Self.forEach(cache) { o in
            let tc = tandem_tc_cast(UnsafeMutableRawPointer(o))
            let ifindex = rtnl_tc_get_ifindex(tc)
            guard include(ifindex) else { return }
            let kind = rtnl_tc_get_kind(tc).map { String(cString: $0) } ?? ""
            out.append(Qdisc(
                ifindex: ifindex,
                handle: TCHandle(rawValue: rtnl_tc_get_handle(tc)),
                parent: TCHandle(rawValue: rtnl_tc_get_parent(tc)),
                kind: kind,
                stats: Self.stats(tc),
                htbDefaultClass: kind == "htb" ? UInt16(truncatingIfNeeded: rtnl_htb_get_defcls(o)) : nil))
        }
        return out
    }

    /// The root qdisc of an interface, if it has one other than the kernel's default.
    public func rootQdisc(ifindex: Int32) throws(NetlinkError) -> Qdisc? {
        try qdiscs(ifindex: ifindex).first { $0.parent == .root && $0.handle != .unspecified }
    }

    func withQdisc(_ ifindex: Int32, parent: TCHandle, handle: TCHandle, kind: String?, _ body: (OpaquePointer) throws(NetlinkError) -> Void) throws(NetlinkError) {
        guard ifindex > 0 else { throw NetlinkError.invalid("RTM_NEWQDISC", "ifindex \(ifindex)", "no such interface index") }
        guard let q = rtnl_qdisc_alloc() else { throw NetlinkError(operation: "RTM_NEWQDISC", object: "#\(ifindex)", errno: ENOMEM) }
        defer { rtnl_qdisc_put(q) }
        let tc = tandem_tc_cast(UnsafeMutableRawPointer(q))
        rtnl_tc_set_ifindex(tc, ifindex)
        rtnl_tc_set_parent(tc, parent.rawValue)
        if handle != .unspecified { rtnl_tc_set_handle(tc, handle.rawValue) }
        if let kind { _ = rtnl_tc_set_kind(tc, kind) }
        try body(q)
    }

    static func stats(_ tc: OpaquePointer?) -> TCStats {
        TCStats(
            bytes: rtnl_tc_get_stat(tc, RTNL_TC_BYTES),
            packets: rtnl_tc_get_stat(tc, RTNL_TC_PACKETS),
            drops: rtnl_tc_get_stat(tc, RTNL_TC_DROPS),
            overlimits: rtnl_tc_get_stat(tc, RTNL_TC_OVERLIMITS),
            backlog: rtnl_tc_get_stat(tc, RTNL_TC_BACKLOG),
            qlen: rtnl_tc_get_stat(tc, RTNL_TC_QLEN))
    }
}

/// What ``RouteSocket/qdiscCounters()`` reads: root qdiscs by interface index, and the
/// interfaces with an ingress qdisc.
public struct QdiscCounters: Sendable {
    public var roots: [Int32: RootQdiscCounters] = [:]
    public var ingress: Set<Int32> = []
    public init(roots: [Int32: RootQdiscCounters] = [:], ingress: Set<Int32> = []) { self.roots = roots; self.ingress = ingress }

    /// Takes in one dump message: a root qdisc, an ingress qdisc, or (ignored) anything else.
    public mutating func add(_ m: UnsafeRawBufferPointer) {
        if let (ifindex, c) = RootQdiscCounters.parse(m) { roots[ifindex] = c; return }
        guard m.count >= 36, m.loadUnaligned(fromByteOffset: 4, as: UInt16.self) == UInt16(RTM_NEWQDISC),
              m.loadUnaligned(fromByteOffset: 28, as: UInt32.self) == TCHandle.ingressParent.rawValue else { return }
        ingress.insert(m.loadUnaligned(fromByteOffset: 20, as: Int32.self))
    }
}

/// A root qdisc's identity and counters, as ``RouteSocket/qdiscCounters()`` reads them.
public struct RootQdiscCounters: Hashable, Sendable {
    public var kind: String
    public var handle: TCHandle
    public var bytes: UInt64
    public var drops: UInt64
    /// HTB only: the default class's minor (`default 10`) and the direct queue's length in
    /// packets (`direct_qlen`; 0: what no class takes is dropped), nil when not reported.
    public var htbDefaultClass: UInt16?
    public var htbDirectQueue: UInt32?

    public init(kind: String, handle: TCHandle, bytes: UInt64, drops: UInt64, htbDefaultClass: UInt16? = nil, htbDirectQueue: UInt32? = nil) {
        self.kind = kind; self.handle = handle; self.bytes = bytes; self.drops = drops
        self.htbDefaultClass = htbDefaultClass; self.htbDirectQueue = htbDirectQueue
    }

    /// Parses one RTM_NEWQDISC message (netlink header, struct tcmsg, attributes); nil for
    /// anything else, a qdisc that is not a root, or a message too short to be one.
    public static func parse(_ m: UnsafeRawBufferPointer) -> (Int32, RootQdiscCounters)? {
        // nlmsghdr: len u32, type u16, flags u16, seq u32, pid u32; tcmsg: family u8, pad
        // u8 u16, ifindex i32, handle u32, parent u32, info u32.
        guard m.count >= 36, m.loadUnaligned(fromByteOffset: 4, as: UInt16.self) == UInt16(RTM_NEWQDISC),
              m.loadUnaligned(fromByteOffset: 28, as: UInt32.self) == TCHandle.root.rawValue else { return nil }
        let length = min(m.count, Int(m.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
        let ifindex = m.loadUnaligned(fromByteOffset: 20, as: Int32.self)
        var c = RootQdiscCounters(kind: "", handle: TCHandle(rawValue: m.loadUnaligned(fromByteOffset: 24, as: UInt32.self)), bytes: 0, drops: 0)
        var legacy: (UInt64, UInt64)?
        var modern = false
        var options: (start: Int, length: Int)?
        forEachAttribute(m, from: 36, to: length) { type, start, len in
            switch type {
            case 1:   // TCA_KIND, NUL-terminated
                c.kind = String(decoding: UnsafeRawBufferPointer(rebasing: m[start..<(start + len)]).prefix { $0 != 0 }, as: UTF8.self)
            case 2:   // TCA_OPTIONS, read once the kind is known
                options = (start, len)
            case 3 where len >= 20:   // TCA_STATS: struct tc_stats (bytes u64, packets u32, drops u32, ...)
                legacy = (m.loadUnaligned(fromByteOffset: start, as: UInt64.self), UInt64(m.loadUnaligned(fromByteOffset: start + 12, as: UInt32.self)))
            case 7:   // TCA_STATS2: nested gnet stats
                let g = gnetStats(m, from: start, to: start + len)
                if let b = g.bytes { c.bytes = b; modern = true }
                c.drops = g.drops
            default: break
            }
        }
        if !modern, let (b, d) = legacy { c.bytes = b; c.drops = d }
        if c.kind == "htb", let options {
            forEachAttribute(m, from: options.start, to: options.start + options.length) { t, s, l in
                // TCA_HTB_INIT: struct tc_htb_glob (version, rate2quantum, defcls, debug, direct_pkts)
                if t == UInt16(TCA_HTB_INIT) && l >= 12 { c.htbDefaultClass = UInt16(truncatingIfNeeded: m.loadUnaligned(fromByteOffset: s + 8, as: UInt32.self)) }
                if t == UInt16(TCA_HTB_DIRECT_QLEN) && l >= 4 { c.htbDirectQueue = m.loadUnaligned(fromByteOffset: s, as: UInt32.self) }
            }
        }
        return (ifindex, c)
    }

    /// TCA_STATS2's nested gnet stats in `m[from..<to]`: TCA_STATS_BASIC's bytes (nil when
    /// absent) and TCA_STATS_QUEUE's backlog and drops (qlen, backlog, drops: 32-bit).
    static func gnetStats(_ m: UnsafeRawBufferPointer, from: Int, to: Int) -> (bytes: UInt64?, backlog: UInt64, drops: UInt64) {
        var out: (bytes: UInt64?, backlog: UInt64, drops: UInt64) = (nil, 0, 0)
        forEachAttribute(m, from: from, to: to) { t, s, l in
            if t == 1 && l >= 8 { out.bytes = m.loadUnaligned(fromByteOffset: s, as: UInt64.self) }
            if t == 3 && l >= 12 {
                out.backlog = UInt64(m.loadUnaligned(fromByteOffset: s + 4, as: UInt32.self))
                out.drops = UInt64(m.loadUnaligned(fromByteOffset: s + 8, as: UInt32.self))
            }
        }
        return out
    }

    /// Walks attributes in `m[from..<to]`: type (flags masked off), payload start, payload
    /// length. Stops at the first malformed one.
    static func forEachAttribute(_ m: UnsafeRawBufferPointer, from: Int, to: Int, _ body: (UInt16, Int, Int) -> Void) {
        var i = from
        while i + 4 <= to {
            let len = Int(m.loadUnaligned(fromByteOffset: i, as: UInt16.self))
            let type = m.loadUnaligned(fromByteOffset: i + 2, as: UInt16.self) & 0x3fff
            guard len >= 4, i + len <= to else { return }
            body(type, i + 4, len - 4)
            i += (len + 3) & ~3
        }
    }
}
