import Foundation
import Netlink
import TandemProtocol

/// Interface indexes looked up once and kept until a request fails (the device went).
final class IndexCache: @unchecked Sendable {
    private let lock = NSLock()
    private var indexes: [String: Int32] = [:]
    func get(_ name: String, _ lookup: () async throws -> Int32) async throws -> Int32 {
        if let i = lock.withLock({ indexes[name] }) { return i }
        let i = try await lookup()
        lock.withLock { indexes[name] = i }
        return i
    }
    func forget() { lock.withLock { indexes.removeAll() } }
}

/// Where a VM's hard limit lives, and where its sent bytes are counted.
public protocol HardLimitBackend: Sendable {
    /// A short description: `tc vnet0 via tdm-1a2b3c4d`, `sriov enp3s0f0 vf 1`.
    var describe: String { get }
    /// Makes sure what the limit needs exists, without removing what is there (a
    /// restarted controller takes over the tree of the one before).
    func prepare(initialLimit: BitRate) async throws
    /// Sets the limit (and, where the backend has one, the guarantee).
    func apply(limit: BitRate, guarantee: BitRate) async throws
    /// The limit in force in the kernel now, nil if none is set.
    func currentLimit() async throws -> BitRate?
    /// Bytes the VM has sent (its egress), as the kernel counts them, and packets the
    /// limit dropped (nil where not known).
    func counters() async throws -> (sentBytes: UInt64, drops: UInt64?)
    /// Removes what `prepare` made.
    func teardown() async throws
    /// Whether what `prepare` made is still there (an interface re-created by a VM restart
    /// loses its ingress redirect).
    func isIntact() async -> Bool
    func sameLimit(_ a: BitRate, _ b: BitRate) -> Bool
}

extension HardLimitBackend {
    public func isIntact() async -> Bool { true }
    /// Whether two limits are the same once the kernel has them (HTB keeps bytes per second).
    public func sameLimit(_ a: BitRate, _ b: BitRate) -> Bool { a.bytesPerSecond == b.bytesPerSecond }
}

/// The `tc` backend: a tap/veth VM's egress arrives as the host interface's ingress; it is
/// redirected to an IFB device whose egress HTB class is the VM's limit. Shaped (queued),
/// not policed.
///
/// ```
/// tc qdisc add dev IFACE handle ffff: ingress
/// tc filter add dev IFACE parent ffff: prio 1 protocol all u32 match u32 0 0 action mirred egress redirect dev IFB
/// tc qdisc replace dev IFB root handle 1: htb default 10
/// tc class replace dev IFB parent 1: classid 1:10 htb rate LIMIT ceil LIMIT
/// ```
public struct TCBackend: HardLimitBackend {
    public let interface: String
    public let ifb: String
    let netlink: RouteSocket
    let cache = IndexCache()

    /// The IFB's index, cached: one netlink request per round instead of two.
    func ifbIndex() async throws -> Int32 { try await cache.get(ifb) { try await netlink.index(of: ifb) } }

    /// Runs `body` with the IFB's index; if the request fails, looks the index up again once
    /// (the IFB may have been re-created).
    func withIFB<T>(_ body: (Int32) async throws -> T) async throws -> T {
        do { return try await body(try await ifbIndex()) } catch {
            cache.forget()
            return try await body(try await ifbIndex())
        }
    }
    static let qdisc = TCHandle(major: 1, minor: 0)
    static let leaf = TCHandle(major: 1, minor: 0x10)

    /// The IFB's name is derived from the VM's name, so a restarted controller finds it.
    public init(vm: String, interface: String, netlink: RouteSocket) {
        self.interface = interface
        self.ifb = "tdm-" + Self.hash8(vm)
        self.netlink = netlink
    }

    public static func hash8(_ s: String) -> String {
        var h: UInt32 = 2_166_136_261
        for b in s.utf8 { h = (h ^ UInt32(b)) &* 16_777_619 }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 8 - hex.count) + hex
    }

    public var describe: String { "tc \(interface) via \(ifb)" }

    public func prepare(initialLimit: BitRate) async throws {
        cache.forget()
        if (try? await netlink.link(named: ifb)) == nil { try await netlink.addIFB(named: ifb) }
        try await netlink.setLink(named: ifb, up: true)
        let ifbIndex = try await netlink.index(of: ifb)
        let vmIndex = try await netlink.index(of: interface)
        // The limit first, so that nothing is redirected into an unlimited device.
        let root = try await netlink.rootQdisc(ifindex: ifbIndex)
        if root?.kind != "htb" || root?.handle != Self.qdisc {
            try await netlink.replaceHTBRoot(ifindex: ifbIndex, handle: Self.qdisc, defaultClass: Self.leaf.minor)
        }
        if try await currentLimit() == nil {
            try await netlink.setHTBClass(ifindex: ifbIndex, leafClass(initialLimit), mode: .replace)
        }
        try await netlink.addIngress(ifindex: vmIndex)
        let filters = try await netlink.filters(ifindex: vmIndex, parent: .ingress)
        if !filters.contains(where: { $0.priority == 1 && $0.kind == "u32" }) {
            try await netlink.addU32Filter(ifindex: vmIndex, U32Filter(parent: .ingress, priority: 1, family: .all, target: .redirect(ifindex: ifbIndex)))
        }
    }

    func leafClass(_ limit: BitRate) -> HTBClass {
        let r = max(limit, .kbit(8))
        return HTBClass(handle: Self.leaf, parent: Self.qdisc, rate: r, ceil: r)
    }

    public func apply(limit: BitRate, guarantee: BitRate) async throws {
        try await withIFB { try await netlink.setHTBClass(ifindex: $0, leafClass(limit), mode: .replace) }
    }

    public func currentLimit() async throws -> BitRate? {
        try await withIFB { try await netlink.classes(ifindex: $0).first { $0.spec.handle == Self.leaf }?.spec.ceil }
    }

    /// The class's counters: bytes that left the VM's limit, and packets it dropped. (One
    /// dump of all links per round instead was measured slower: libnl parses every link whole.)
    public func counters() async throws -> (sentBytes: UInt64, drops: UInt64?) {
        try await withIFB { index in
            guard let c = try await netlink.classes(ifindex: index).first(where: { $0.spec.handle == Self.leaf }) else {
                throw NetlinkError(operation: "RTM_GETTCLASS", object: "dev \(ifb) class 1:10", errno: 2, detail: "the VM's class is gone")
            }
            return (c.stats.bytes, c.stats.drops)
        }
    }

    public func isIntact() async -> Bool {
        guard let vmIndex = try? await netlink.index(of: interface), let ifbIndex = try? await netlink.index(of: ifb),
              let filters = try? await netlink.filters(ifindex: vmIndex, parent: .ingress) else { return false }
        _ = ifbIndex
        return filters.contains { $0.priority == 1 && $0.kind == "u32" }
    }

    public func teardown() async throws {
        if let vmIndex = try? await netlink.index(of: interface) {
            try await netlink.deleteQdisc(ifindex: vmIndex, parent: .ingressParent)
        }
        if (try? await netlink.link(named: ifb)) != nil { try await netlink.deleteLink(named: ifb) }
    }
}

/// The `sriov` backend: the VF's TX limit in the NIC (IFLA_VF_RATE), counters from
/// IFLA_VF_STATS. The guest cannot undo it.
public struct SRIOVBackend: HardLimitBackend {
    public let pf: String
    public let vf: UInt32
    /// Also program the NIC's minimum TX rate with the VM's guarantee.
    public let setMin: Bool
    let netlink: RouteSocket

    public init(pf: String, vf: UInt32, setMin: Bool, netlink: RouteSocket) {
        self.pf = pf; self.vf = vf; self.setMin = setMin; self.netlink = netlink
    }

    public var describe: String { "sriov \(pf) vf \(vf)" }

    /// VF rates are whole Mbit/s, rounded as ``VFRate`` rounds (at least 1).
    public func sameLimit(_ a: BitRate, _ b: BitRate) -> Bool {
        VFRate.megabits(Swift.max(a, .mbit(1))) == VFRate.megabits(Swift.max(b, .mbit(1)))
    }

    func info(stats: Bool) async throws -> VirtualFunction {
        guard let v = try await netlink.virtualFunctions(of: pf, withStats: stats).first(where: { $0.index == vf }) else {
            throw NetlinkError(operation: "RTM_GETLINK", object: "dev \(pf) vf \(vf)", errno: 19, detail: "no such VF")
        }
        return v
    }

    public func prepare(initialLimit: BitRate) async throws {
        let v = try await info(stats: false)
        if v.maxTxRate == .zero { try await apply(limit: initialLimit, guarantee: v.minTxRate) }
    }

    public func apply(limit: BitRate, guarantee: BitRate) async throws {
        // Never 0 (which means unlimited): at least 1 Mbit/s.
        let max = Swift.max(limit, .mbit(1))
        try await netlink.setVFRate(pf: pf, vf: vf, max: max, min: setMin ? Swift.min(guarantee, max) : nil)
    }

    public func currentLimit() async throws -> BitRate? {
        let v = try await info(stats: false)
        return v.maxTxRate == .zero ? nil : v.maxTxRate
    }

    public func counters() async throws -> (sentBytes: UInt64, drops: UInt64?) {
        let v = try await info(stats: true)
        guard let s = v.stats else { return (0, nil) }
        return (s.txBytes, s.txDropped)
    }

    public func teardown() async throws {
        try await netlink.setVFRate(pf: pf, vf: vf, max: .zero, min: .zero)
    }
}
