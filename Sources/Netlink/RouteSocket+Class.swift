import CNetlink
import TandemProtocol
#if canImport(Glibc)
import Glibc
#endif

/// An HTB class: what to ask the kernel for, and (from ``RouteSocket/classes(ifindex:)``)
/// what the kernel has.
public struct HTBClass: Hashable, Sendable {
    public var handle: TCHandle
    public var parent: TCHandle
    /// Guaranteed rate.
    public var rate: BitRate
    /// Most the class may borrow up to.
    public var ceil: BitRate
    /// Bytes that may leave at once at `rate`; nil: ``defaultBurst(for:)``.
    public var burst: UInt32?
    /// The same at `ceil`; nil: ``defaultBurst(for:)`` of the ceiling.
    public var cburst: UInt32?
    /// Lower is served first when borrowing.
    public var prio: UInt32
    /// Bytes served per round when borrowing; siblings with equal quanta share excess
    /// equally. nil: ``defaultQuantum(for:)``.
    public var quantum: UInt32?

    public init(handle: TCHandle, parent: TCHandle, rate: BitRate, ceil: BitRate? = nil, burst: UInt32? = nil, cburst: UInt32? = nil, prio: UInt32 = 0, quantum: UInt32? = nil) {
        self.handle = handle; self.parent = parent; self.rate = rate; self.ceil = ceil ?? rate
        self.burst = burst; self.cburst = cburst; self.prio = prio; self.quantum = quantum
    }

    /// The kernel's default (rate/HZ + MTU, with nanosecond psched ticks) is about one MTU,
    /// which under-delivers above ~200 Mbit/s and with GSO packets of 64 KiB. Tandem lets
    /// 5 ms of the rate through at once, and never less than one 64 KiB GSO packet.
    public static func defaultBurst(for rate: BitRate) -> UInt32 {
        UInt32(clamping: max(rate.bytesPerSecond / 200, 65_536))
    }

    /// rate/10 bytes, kept between one MTU and HTB's advice of 200,000.
    public static func defaultQuantum(for rate: BitRate) -> UInt32 {
        UInt32(clamping: min(max(rate.bytesPerSecond / 10, 1_514), 200_000))
    }

    public var effectiveBurst: UInt32 { burst ?? Self.defaultBurst(for: rate) }
    public var effectiveCburst: UInt32 { cburst ?? Self.defaultBurst(for: ceil) }
    public var effectiveQuantum: UInt32 { quantum ?? Self.defaultQuantum(for: rate) }
}

/// A class as dumped: its parameters, level in the tree and counters.
public struct HTBClassState: Hashable, Sendable {
    public var spec: HTBClass
    public var kind: String
    public var level: Int
    public var stats: TCStats
    public init(spec: HTBClass, kind: String = "htb", level: Int = 0, stats: TCStats = TCStats()) {
        self.spec = spec; self.kind = kind; self.level = level; self.stats = stats
    }
}

extension RouteSocket {
    /// How a class request treats an existing class.
    public enum ClassMode: Sendable {
        /// `tc class add`: NLM_F_CREATE|NLM_F_EXCL, EEXIST if present.
        case add
        /// `tc class change`: no flags, ENOENT if absent.
        case change
        /// `tc class replace`: NLM_F_CREATE, creates or changes in place.
        case replace

        var flags: Int32 {
            switch self {
            case .add: return NLM_F_CREATE | NLM_F_EXCL
            case .change: return 0
            case .replace: return NLM_F_CREATE
            }
        }
    }

    /// `tc class add|change|replace dev IF parent P classid H htb rate R ceil C burst B
    /// cburst CB prio N quantum Q` (RTM_NEWTCLASS). Rates are sent as 64-bit bytes per
    /// second (TCA_HTB_RATE64 above 32 bits), so 100 Gbit/s classes work.
    public func setHTBClass(ifindex: Int32, _ c: HTBClass, mode: ClassMode = .replace) throws(NetlinkError) {
        let object = "dev #\(ifindex) class \(c.handle) parent \(c.parent) htb rate \(c.rate) ceil \(c.ceil)"
        // libnl aborts on some of these; the kernel refuses the others less clearly.
        guard ifindex > 0 else { throw NetlinkError.invalid("RTM_NEWTCLASS", object, "no such interface index") }
        guard c.handle.major != 0, c.handle.minor != 0 else {
            throw NetlinkError.invalid("RTM_NEWTCLASS", object, "a class id is MAJOR:MINOR with both above 0")
        }
        guard c.parent.major == c.handle.major else {
            throw NetlinkError.invalid("RTM_NEWTCLASS", object, "parent \(c.parent) and class \(c.handle) must have the same major")
        }
        guard c.rate.bytesPerSecond > 0 else { throw NetlinkError.invalid("RTM_NEWTCLASS", object, "an HTB class needs a rate of at least 8bit") }
        guard c.ceil >= c.rate else { throw NetlinkError.invalid("RTM_NEWTCLASS", object, "ceil \(c.ceil) is below rate \(c.rate)") }
        guard let cl = rtnl_class_alloc() else { throw NetlinkError(operation: "RTM_NEWTCLASS", object: object, errno: ENOMEM) }
        defer { rtnl_class_put(cl) }
        let tc = tandem_tc_cast(UnsafeMutableRawPointer(cl))
        rtnl_tc_set_ifindex(tc, ifindex)
        rtnl_tc_set_parent(tc, c.parent.rawValue)
        rtnl_tc_set_handle(tc, c.handle.rawValue)
        try check(rtnl_tc_set_kind(tc, "htb"), "RTM_NEWTCLASS", object)
        try check(rtnl_htb_set_rate64(cl, c.rate.bytesPerSecond), "RTM_NEWTCLASS", object)
        try check(rtnl_htb_set_ceil64(cl, c.ceil.bytesPerSecond), "RTM_NEWTCLASS", object)
        try check(rtnl_htb_set_rbuffer(cl, c.effectiveBurst), "RTM_NEWTCLASS", object)
        try check(rtnl_htb_set_cbuffer(cl, c.effectiveCburst), "RTM_NEWTCLASS", object)
        try check(rtnl_htb_set_prio(cl, c.prio), "RTM_NEWTCLASS", object)
        try check(rtnl_htb_set_quantum(cl, c.effectiveQuantum), "RTM_NEWTCLASS", object)
        prepare()
        try check(rtnl_class_add(sock, cl, mode.flags), "RTM_NEWTCLASS", object)
    }

    /// `tc class del dev IF classid H` (RTM_DELTCLASS).
    public func deleteClass(ifindex: Int32, handle: TCHandle) throws(NetlinkError) {
        let object = "dev #\(ifindex) class \(handle)"
        guard let cl = rtnl_class_alloc() else { throw NetlinkError(operation: "RTM_DELTCLASS", object: object, errno: ENOMEM) }
        defer { rtnl_class_put(cl) }
        let tc = tandem_tc_cast(UnsafeMutableRawPointer(cl))
        rtnl_tc_set_ifindex(tc, ifindex)
        rtnl_tc_set_handle(tc, handle.rawValue)
        prepare()
        try check(rtnl_class_delete(sock, cl), "RTM_DELTCLASS", object)
    }

    /// `tc -s class show dev IF` (RTM_GETTCLASS dump): every class with its counters.
    public func classes(ifindex: Int32) throws(NetlinkError) -> [HTBClassState] {
        let cache: OpaquePointer = try dump("RTM_GETTCLASS", "dev #\(ifindex)") {
            var c: OpaquePointer?
            let rc = rtnl_class_alloc_cache(sock, ifindex, &c)
            return (rc, c)
        }
        defer { nl_cache_free(cache) }
        var out: [HTBClassState] = []
        Self.forEach(cache) { o in
            let tc = tandem_tc_cast(UnsafeMutableRawPointer(o))
            let kind = rtnl_tc_get_kind(tc).map { String(cString: $0) } ?? ""
            var rate: UInt64 = 0, ceil: UInt64 = 0
            if kind == "htb" {
                _ = rtnl_htb_get_rate64(o, &rate)
                _ = rtnl_htb_get_ceil64(o, &ceil)
            }
            let handle = TCHandle(rawValue: rtnl_tc_get_handle(tc))
            var parent = TCHandle(rawValue: rtnl_tc_get_parent(tc))
            // The kernel reports a class attached to the qdisc itself with parent TC_H_ROOT;
            // it was created (and is named, as in `tc class add ... parent 1:`) by the qdisc's handle.
            if parent == .root { parent = TCHandle(major: handle.major, minor: 0) }
            let spec = HTBClass(
                handle: handle,
                parent: parent,
                rate: BitRate(bitsPerSecond: rate &* 8), ceil: BitRate(bitsPerSecond: ceil &* 8),
                burst: kind == "htb" ? rtnl_htb_get_rbuffer(o) : nil,
                cburst: kind == "htb" ? rtnl_htb_get_cbuffer(o) : nil,
                prio: kind == "htb" ? rtnl_htb_get_prio(o) : 0,
                quantum: kind == "htb" ? rtnl_htb_get_quantum(o) : nil)
            out.append(HTBClassState(spec: spec, kind: kind, level: kind == "htb" ? Int(rtnl_htb_get_level(o)) : 0, stats: Self.stats(tc)))
        }
        return out.sorted { $0.spec.handle < $1.spec.handle }
    }
}

/// A class's counters, as ``RouteSocket/classCounters(ifindex:)`` reads them.
public struct ClassCounters: Hashable, Sendable {
    public var handle: TCHandle
    public var bytes: UInt64
    public var drops: UInt64
    /// Bytes queued now.
    public var backlog: UInt64
    public init(handle: TCHandle, bytes: UInt64, drops: UInt64, backlog: UInt64) {
        self.handle = handle; self.bytes = bytes; self.drops = drops; self.backlog = backlog
    }

    /// Parses one RTM_NEWTCLASS message (netlink header, struct tcmsg, attributes: TCA_STATS2
    /// with TCA_STATS_BASIC's bytes and TCA_STATS_QUEUE's backlog and drops); nil for anything
    /// else or a message too short to be one.
    public static func parse(_ m: UnsafeRawBufferPointer) -> ClassCounters? {
        guard m.count >= 36, m.loadUnaligned(fromByteOffset: 4, as: UInt16.self) == UInt16(RTM_NEWTCLASS) else { return nil }
        let length = min(m.count, Int(m.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
        var c = ClassCounters(handle: TCHandle(rawValue: m.loadUnaligned(fromByteOffset: 24, as: UInt32.self)), bytes: 0, drops: 0, backlog: 0)
        RootQdiscCounters.forEachAttribute(m, from: 36, to: length) { type, start, len in
            guard type == 7 else { return }   // TCA_STATS2
            let g = RootQdiscCounters.gnetStats(m, from: start, to: start + len)
            (c.bytes, c.backlog, c.drops) = (g.bytes ?? 0, g.backlog, g.drops)
        }
        return c
    }
}

extension RouteSocket {
    /// `tc -s class show dev IF`, counters only: one RTM_GETTCLASS dump (the kernel keeps to
    /// the interface) read in place, without libnl's objects: what the agent reads at every
    /// report and between them (``classes(ifindex:)`` decodes each class whole).
    public func classCounters(ifindex: Int32) throws(NetlinkError) -> [ClassCounters] {
        var body = [UInt8](repeating: 0, count: 20)   // struct tcmsg, tcm_ifindex at 4
        withUnsafeBytes(of: ifindex.littleEndian) { for (k, b) in $0.enumerated() { body[4 + k] = b } }
        var out: [ClassCounters] = []
        try rawDump(type: UInt16(RTM_GETTCLASS), body: body, operation: "RTM_GETTCLASS", object: "dev #\(ifindex)", restart: { out = [] }) { m in
            if let c = ClassCounters.parse(m) { out.append(c) }
        }
        return out
    }
}
