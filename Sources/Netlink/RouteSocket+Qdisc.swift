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
    /// place, keeping its classes.
    public func replaceHTBRoot(ifindex: Int32, handle: TCHandle, defaultClass: UInt16) throws(NetlinkError) {
        let object = "dev #\(ifindex) root handle \(handle) htb default \(String(defaultClass, radix: 16))"
        guard handle.minor == 0, handle.major != 0, handle != .ingress else {
            throw NetlinkError.invalid("RTM_NEWQDISC", object, "a qdisc handle is MAJOR: with minor 0, major neither 0 nor ffff")
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
        let cache: OpaquePointer = try dump("RTM_GETQDISC", "dev #\(ifindex)") {
            var c: OpaquePointer?
            let rc = rtnl_qdisc_alloc_cache(sock, &c)
            return (rc, c)
        }
        defer { nl_cache_free(cache) }
        var out: [Qdisc] = []
        Self.forEach(cache) { o in
            let tc = tandem_tc_cast(UnsafeMutableRawPointer(o))
            guard rtnl_tc_get_ifindex(tc) == ifindex else { return }
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
