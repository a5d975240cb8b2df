import CNetlink
#if canImport(Glibc)
import Glibc
#endif

/// A network interface and its 64-bit counters.
public struct Link: Hashable, Sendable {
    public var index: Int32
    public var name: String
    /// The rtnetlink kind (`veth`, `ifb`, `bridge`), nil for physical devices.
    public var kind: String?
    public var isUp: Bool
    public var mtu: UInt32
    public var mac: String?
    public var stats: LinkStats
}

public struct LinkStats: Hashable, Sendable {
    public var rxBytes: UInt64 = 0
    public var txBytes: UInt64 = 0
    public var rxPackets: UInt64 = 0
    public var txPackets: UInt64 = 0
    public var rxDropped: UInt64 = 0
    public var txDropped: UInt64 = 0
    public init() {}
}

extension RouteSocket {
    /// `ip -s link show dev NAME` (RTM_GETLINK by name).
    public func link(named name: String) throws(NetlinkError) -> Link {
        try validateName(name, "RTM_GETLINK")
        return try getLink(index: 0, name: name)
    }

    /// `ip -s link show` of the interface with this index (RTM_GETLINK by index).
    public func link(index: Int32) throws(NetlinkError) -> Link {
        try getLink(index: index, name: nil)
    }

    /// The index of a named interface.
    public func index(of name: String) throws(NetlinkError) -> Int32 { try link(named: name).index }

    func validateName(_ name: String, _ op: String) throws(NetlinkError) {
        guard !name.isEmpty, name.utf8.count < 16, !name.contains("/"), !name.contains(" ") else {
            throw NetlinkError.invalid(op, "dev '\(name)'", "not a valid interface name (1 to 15 bytes, no '/' or spaces)")
        }
    }

    func getLink(index: Int32, name: String?) throws(NetlinkError) -> Link {
        prepare()
        var obj: OpaquePointer?
        let rc = rtnl_link_get_kernel(sock, index, name, &obj)
        try check(rc, "RTM_GETLINK", name.map { "dev \($0)" } ?? "ifindex \(index)")
        guard let obj else { throw NetlinkError(operation: "RTM_GETLINK", object: name ?? "\(index)", errno: ENODEV) }
        defer { rtnl_link_put(obj) }
        return Self.makeLink(obj)
    }

    static func makeLink(_ l: OpaquePointer) -> Link {
        var stats = LinkStats()
        stats.rxBytes = rtnl_link_get_stat(l, RTNL_LINK_RX_BYTES)
        stats.txBytes = rtnl_link_get_stat(l, RTNL_LINK_TX_BYTES)
        stats.rxPackets = rtnl_link_get_stat(l, RTNL_LINK_RX_PACKETS)
        stats.txPackets = rtnl_link_get_stat(l, RTNL_LINK_TX_PACKETS)
        stats.rxDropped = rtnl_link_get_stat(l, RTNL_LINK_RX_DROPPED)
        stats.txDropped = rtnl_link_get_stat(l, RTNL_LINK_TX_DROPPED)
        var mac: String? = nil
        if let addr = rtnl_link_get_addr(l), nl_addr_get_len(addr) == 6, let raw = nl_addr_get_binary_addr(addr) {
            let b = UnsafeRawBufferPointer(start: raw, count: 6)
            mac = b.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(separator: ":")
        }
        return Link(
            index: rtnl_link_get_ifindex(l),
            name: rtnl_link_get_name(l).map { String(cString: $0) } ?? "",
            kind: rtnl_link_get_type(l).map { String(cString: $0) },
            isUp: rtnl_link_get_flags(l) & UInt32(IFF_UP) != 0,
            mtu: rtnl_link_get_mtu(l),
            mac: mac,
            stats: stats)
    }

    /// `ip link add NAME type ifb` (RTM_NEWLINK, NLM_F_CREATE|NLM_F_EXCL). Fails with EEXIST
    /// if the name is taken.
    public func addIFB(named name: String) throws(NetlinkError) {
        try validateName(name, "RTM_NEWLINK")
        guard let l = rtnl_link_alloc() else { throw NetlinkError(operation: "RTM_NEWLINK", object: name, errno: ENOMEM) }
        defer { rtnl_link_put(l) }
        rtnl_link_set_name(l, name)
        _ = rtnl_link_set_type(l, "ifb")
        prepare()
        try check(rtnl_link_add(sock, l, NLM_F_CREATE | NLM_F_EXCL), "RTM_NEWLINK", "dev \(name) type ifb")
    }

    /// `ip link del NAME` (RTM_DELLINK).
    public func deleteLink(named name: String) throws(NetlinkError) {
        try validateName(name, "RTM_DELLINK")
        guard let l = rtnl_link_alloc() else { throw NetlinkError(operation: "RTM_DELLINK", object: name, errno: ENOMEM) }
        defer { rtnl_link_put(l) }
        rtnl_link_set_name(l, name)
        prepare()
        try check(rtnl_link_delete(sock, l), "RTM_DELLINK", "dev \(name)")
    }

    /// `ip link set NAME up|down` (RTM_NEWLINK changing IFF_UP).
    public func setLink(named name: String, up: Bool) throws(NetlinkError) {
        try validateName(name, "RTM_NEWLINK")
        prepare()
        var orig: OpaquePointer?
        try check(rtnl_link_get_kernel(sock, 0, name, &orig), "RTM_GETLINK", "dev \(name)")
        guard let orig, let change = rtnl_link_alloc() else { throw NetlinkError(operation: "RTM_NEWLINK", object: name, errno: ENODEV) }
        defer { rtnl_link_put(orig); rtnl_link_put(change) }
        if up { rtnl_link_set_flags(change, UInt32(IFF_UP)) } else { rtnl_link_unset_flags(change, UInt32(IFF_UP)) }
        prepare()
        try check(rtnl_link_change(sock, orig, change, 0), "RTM_NEWLINK", "dev \(name) \(up ? "up" : "down")")
    }
}
