import CNetlink
import TandemProtocol
#if canImport(Glibc)
import Glibc
#endif

/// Which packets a filter is offered (the filter's `protocol`).
public enum FilterFamily: UInt16, Hashable, Sendable, CustomStringConvertible {
    case ipv4 = 0x0800
    case ipv6 = 0x86DD
    case all = 0x0003

    public var description: String {
        switch self { case .ipv4: return "ip"; case .ipv6: return "ipv6"; case .all: return "all" }
    }
}

/// A u32 filter: a match on protocol, addresses and ports, and where matching packets go.
///
/// Ports are matched at a fixed offset after a 20-byte IPv4 header (40 bytes for IPv6),
/// exactly as `tc filter ... u32 match ip dport` does: IPv4 packets with options are not
/// matched by port rules.
public struct U32Filter: Hashable, Sendable {
    public enum Target: Hashable, Sendable {
        /// Put matching packets in this class (`flowid`).
        case classify(TCHandle)
        /// `action mirred egress redirect dev IFINDEX`: how a host shapes a tap or veth's
        /// ingress, by sending it through an IFB device's egress.
        case redirect(ifindex: Int32)
    }

    public var parent: TCHandle
    /// The filter's priority; Tandem gives each filter its own, which is also how it is
    /// found and deleted.
    public var priority: UInt16
    public var family: FilterFamily
    /// What to match; an `any` selector without addresses or ports matches everything.
    public var match: FlowSelector
    public var target: Target

    public init(parent: TCHandle, priority: UInt16, family: FilterFamily, match: FlowSelector = FlowSelector(), target: Target) {
        self.parent = parent; self.priority = priority; self.family = family; self.match = match; self.target = target
    }
}

/// A filter as the kernel lists it. A u32 filter shows as its hash table and its node.
public struct FilterState: Hashable, Sendable {
    public var parent: TCHandle
    public var priority: UInt16
    public var family: UInt16
    public var kind: String
    public var handle: UInt32
    /// The class a u32 node classifies into, if any.
    public var classID: TCHandle?
    /// The interface a u32 node's mirred action redirects to, if it has one.
    public var redirectIfindex: Int32?

    public init(parent: TCHandle, priority: UInt16, family: UInt16, kind: String, handle: UInt32, classID: TCHandle?, redirectIfindex: Int32? = nil) {
        self.parent = parent; self.priority = priority; self.family = family; self.kind = kind; self.handle = handle; self.classID = classID
        self.redirectIfindex = redirectIfindex
    }
}

extension RouteSocket {
    /// `tc filter add dev IF parent P prio N protocol ip u32 match ip protocol 6 0xff match
    /// ip dst 10.0.0.5/32 match ip dport 5201 0xffff flowid 1:20` (RTM_NEWTFILTER,
    /// NLM_F_CREATE|NLM_F_EXCL), or with `action mirred egress redirect dev IFB`.
    public func addU32Filter(ifindex: Int32, _ f: U32Filter) throws(NetlinkError) {
        let object = "dev #\(ifindex) parent \(f.parent) prio \(f.priority) protocol \(f.family) u32 \(f.match)"
        guard ifindex > 0 else { throw NetlinkError.invalid("RTM_NEWTFILTER", object, "no such interface index") }
        guard f.priority > 0 else { throw NetlinkError.invalid("RTM_NEWTFILTER", object, "priority must be above 0") }
        do { try f.match.validate() } catch { throw NetlinkError.invalid("RTM_NEWTFILTER", object, error.description) }
        let m = f.match
        let hasAddressOrPort = m.source != nil || m.destination != nil || m.sourcePort != nil || m.destinationPort != nil
        if f.family == .all && (hasAddressOrPort || m.proto != .any) {
            throw NetlinkError.invalid("RTM_NEWTFILTER", object, "matching protocol, address or port needs family ip or ipv6")
        }
        for p in [m.source, m.destination].compactMap({ $0 }) where p.address.isIPv4 != (f.family == .ipv4) {
            throw NetlinkError.invalid("RTM_NEWTFILTER", object, "address \(p) does not belong to family \(f.family)")
        }
        guard let cls = rtnl_cls_alloc() else { throw NetlinkError(operation: "RTM_NEWTFILTER", object: object, errno: ENOMEM) }
        defer { rtnl_cls_put(cls) }
        let tc = tandem_tc_cast(UnsafeMutableRawPointer(cls))
        rtnl_tc_set_ifindex(tc, ifindex)
        rtnl_tc_set_parent(tc, f.parent.rawValue)
        try check(rtnl_tc_set_kind(tc, "u32"), "RTM_NEWTFILTER", object)
        rtnl_cls_set_prio(cls, f.priority)
        rtnl_cls_set_protocol(cls, f.family.rawValue)

        let v6 = f.family == .ipv6
        var keys = 0
        func key(_ rc: Int32) throws(NetlinkError) { try check(rc, "RTM_NEWTFILTER", object); keys += 1 }
        if m.proto != .any {
            let number: UInt8 = m.proto == .tcp ? 6 : 17
            try key(rtnl_u32_add_key_uint8(cls, number, 0xff, v6 ? 6 : 9, 0))
        }
        for (prefix, isSource) in [(m.source, true), (m.destination, false)] {
            guard let prefix else { continue }
            let bytes = prefix.address.bytes
            if v6 {
                var a = in6_addr()
                withUnsafeMutableBytes(of: &a) { $0.copyBytes(from: bytes) }
                try key(rtnl_u32_add_key_in6_addr(cls, &a, UInt8(prefix.length), isSource ? 8 : 24, 0))
            } else {
                var a = in_addr()
                withUnsafeMutableBytes(of: &a) { $0.copyBytes(from: bytes) }
                try key(rtnl_u32_add_key_in_addr(cls, &a, UInt8(prefix.length), isSource ? 12 : 16, 0))
            }
        }
        let portBase: Int32 = v6 ? 40 : 20
        if let p = m.sourcePort { try key(rtnl_u32_add_key_uint16(cls, p, 0xffff, portBase, 0)) }
        if let p = m.destinationPort { try key(rtnl_u32_add_key_uint16(cls, p, 0xffff, portBase + 2, 0)) }
        if keys == 0 { try key(rtnl_u32_add_key_uint32(cls, 0, 0, 0, 0)) }   // match all

        switch f.target {
        case .classify(let classID):
            guard classID.major == f.parent.major || f.parent == .root else {
                throw NetlinkError.invalid("RTM_NEWTFILTER", object, "flowid \(classID) is not under parent \(f.parent)")
            }
            try check(rtnl_u32_set_classid(cls, classID.rawValue), "RTM_NEWTFILTER", object)
        case .redirect(let target):
            guard target > 0 else { throw NetlinkError.invalid("RTM_NEWTFILTER", object, "redirect target ifindex \(target)") }
            guard let act = rtnl_act_alloc() else { throw NetlinkError(operation: "RTM_NEWTFILTER", object: object, errno: ENOMEM) }
            defer { rtnl_act_put(act) }
            try check(rtnl_tc_set_kind(tandem_tc_cast(UnsafeMutableRawPointer(act)), "mirred"), "RTM_NEWTFILTER", object)
            _ = rtnl_mirred_set_action(act, TCA_EGRESS_REDIR)
            _ = rtnl_mirred_set_policy(act, TC_ACT_STOLEN)
            _ = rtnl_mirred_set_ifindex(act, UInt32(target))
            try check(rtnl_u32_add_action(cls, act), "RTM_NEWTFILTER", object)
        }
        try check(rtnl_u32_set_cls_terminal(cls), "RTM_NEWTFILTER", object)
        prepare()
        try check(rtnl_cls_add(sock, cls, NLM_F_CREATE | NLM_F_EXCL), "RTM_NEWTFILTER", object)
    }

    /// `tc filter del dev IF parent P prio N protocol PROTO` (RTM_DELTFILTER): removes the
    /// filter at that priority, hash table and all. Missing is not an error.
    public func deleteFilter(ifindex: Int32, parent: TCHandle, priority: UInt16, family: FilterFamily) throws(NetlinkError) {
        let object = "dev #\(ifindex) parent \(parent) prio \(priority) protocol \(family)"
        guard let cls = rtnl_cls_alloc() else { throw NetlinkError(operation: "RTM_DELTFILTER", object: object, errno: ENOMEM) }
        defer { rtnl_cls_put(cls) }
        let tc = tandem_tc_cast(UnsafeMutableRawPointer(cls))
        rtnl_tc_set_ifindex(tc, ifindex)
        rtnl_tc_set_parent(tc, parent.rawValue)
        _ = rtnl_tc_set_kind(tc, "u32")
        rtnl_cls_set_prio(cls, priority)
        rtnl_cls_set_protocol(cls, family.rawValue)
        prepare()
        let rc = rtnl_cls_delete(sock, cls, 0)
        if rc < 0 && ack.pointee.error == ENOENT { return }
        try check(rc, "RTM_DELTFILTER", object)
    }

    /// `tc filter show dev IF parent P` (RTM_GETTFILTER dump).
    public func filters(ifindex: Int32, parent: TCHandle) throws(NetlinkError) -> [FilterState] {
        let cache: OpaquePointer = try dump("RTM_GETTFILTER", "dev #\(ifindex) parent \(parent)") {
            var c: OpaquePointer?
            let rc = rtnl_cls_alloc_cache(sock, ifindex, parent.rawValue, &c)
            return (rc, c)
        }
        defer { nl_cache_free(cache) }
        var out: [FilterState] = []
        Self.forEach(cache) { o in
            let tc = tandem_tc_cast(UnsafeMutableRawPointer(o))
            let kind = rtnl_tc_get_kind(tc).map { String(cString: $0) } ?? ""
            var classID: UInt32 = 0
            let hasClass = kind == "u32" && rtnl_u32_get_classid(o, &classID) == 0 && classID != 0
            // The first mirred action's target (libnl keeps the actions with the filter).
            var redirect: Int32?
            var act = kind == "u32" ? rtnl_u32_get_action(o) : nil
            while let a = act, redirect == nil {
                if rtnl_tc_get_kind(tandem_tc_cast(UnsafeMutableRawPointer(a))).map({ String(cString: $0) }) == "mirred" {
                    redirect = Int32(bitPattern: rtnl_mirred_get_ifindex(a))
                }
                act = rtnl_act_next(a)
            }
            out.append(FilterState(
                parent: TCHandle(rawValue: rtnl_tc_get_parent(tc)),
                priority: rtnl_cls_get_prio(o),
                family: rtnl_cls_get_protocol(o),
                kind: kind,
                handle: rtnl_tc_get_handle(tc),
                classID: hasClass ? TCHandle(rawValue: classID) : nil,
                redirectIfindex: redirect))
        }
        return out
    }
}
