import Foundation
import HostCore
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
    func forget(_ name: String) { _ = lock.withLock { indexes.removeValue(forKey: name) } }
    /// The cached index, without asking the kernel.
    func peek(_ name: String) -> Int32? { lock.withLock { indexes[name] } }
}

/// Counters that one request reads for many VMs at once, shared by a round: every root
/// qdisc's counters on a host (one RTM_GETQDISC dump), or all of a PF's VFs (one
/// RTM_GETLINK). One request per round instead of one per VM.
public enum CounterBatch: Sendable {
    /// Root qdiscs by interface index (kind, handle, bytes, drops), and the interfaces
    /// with an ingress qdisc.
    case qdiscs(QdiscCounters)
    /// A PF's VFs by number: TX bytes and drops (zero where the driver keeps no VF
    /// stats), and the max TX rate in force.
    case virtualFunctions([UInt32: (bytes: UInt64, drops: UInt64, maxRate: BitRate)])
    /// A PF's VFs as above, and every devlink rate object (leaves and nodes).
    case devlink(vfs: [UInt32: (bytes: UInt64, drops: UInt64, maxRate: BitRate)], rates: [DevlinkRate])
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
    /// Backends with the same key read their counters from one shared batch per round; nil
    /// for a backend that reads its own (then only ``counters()`` is asked).
    var batchKey: String? { get }
    /// Reads the batch this backend's key names (for it and all that share the key).
    func readBatch() async throws -> CounterBatch
    /// This backend's counters out of a batch, nil if the batch does not have them (a
    /// device re-created since, a tree not ours): then ``counters()`` is asked, and says why.
    func counters(in batch: CounterBatch) -> (sentBytes: UInt64, drops: UInt64?)?
    /// Whether what `prepare` made is still there, as far as the batch shows (nil: it
    /// cannot tell). Checked every round for free; ``isIntact()`` looks closer, less often.
    func isIntact(in batch: CounterBatch) -> Bool?
    /// The limit in force as the batch shows it: nil if it does not show it, `.some(nil)`
    /// for none. A limit changed behind the controller's back is then seen within a round.
    func currentLimit(in batch: CounterBatch) -> BitRate??
    /// Whether a kernel notification (another program's change; the controller's own are
    /// left out) may have touched what `prepare` made: then the VM is repaired at once
    /// instead of at the next round or look.
    func concerns(_ event: RouteEvent) -> Bool
    /// Makes again what `prepare` made and is missing, setting `limit` where no limit is in
    /// force; says what it did (empty: all was there).
    func restore(limit: BitRate) async throws -> [String]
    /// Removes what `prepare` made once `successor` (the VM's new backend, prepared) has
    /// taken over, leaving what the two share.
    func teardown(handingOverTo successor: any HardLimitBackend) async throws
}

extension HardLimitBackend {
    public var batchKey: String? { nil }
    public func readBatch() async throws -> CounterBatch { .qdiscs(QdiscCounters()) }
    public func isIntact(in batch: CounterBatch) -> Bool? { nil }
    public func currentLimit(in batch: CounterBatch) -> BitRate?? { nil }
    public func counters(in batch: CounterBatch) -> (sentBytes: UInt64, drops: UInt64?)? { nil }
    public func isIntact() async -> Bool { true }
    public func concerns(_ event: RouteEvent) -> Bool { false }
    public func teardown(handingOverTo successor: any HardLimitBackend) async throws { try await teardown() }
    public func restore(limit: BitRate) async throws -> [String] {
        try await prepare(initialLimit: limit)
        return []
    }
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
/// tc qdisc replace dev IFB root handle 1: htb default 10 direct_qlen 0
/// tc class replace dev IFB parent 1: classid 1:10 htb rate LIMIT ceil LIMIT
/// ```
public final class TCBackend: HardLimitBackend {
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
            cache.forget(ifb)
            return try await body(try await ifbIndex())
        }
    }
    static let qdisc = TCHandle(major: 1, minor: 0)
    /// Where a stale root is swapped out to (``HostTreeOperation/parkRoot``).
    static let parked = TCHandle(major: 2, minor: 0)
    static let leaf = TCHandle(major: 1, minor: 0x10)

    /// The IFB's name is derived from the VM's name, so a restarted controller finds it.
    public init(vm: String, interface: String, netlink: RouteSocket) {
        self.interface = interface
        self.ifb = "tdm-" + Self.hash8(vm)
        self.netlink = netlink
        self.batchKey = "qdiscs@\(ObjectIdentifier(netlink).hashValue)"
    }

    public static func hash8(_ s: String) -> String {
        var h: UInt32 = 2_166_136_261
        for b in s.utf8 { h = (h ^ UInt32(b)) &* 16_777_619 }
        let hex = String(h, radix: 16)
        return String(repeating: "0", count: 8 - hex.count) + hex
    }

    public var describe: String { "tc \(interface) via \(ifb)" }

    public func prepare(initialLimit: BitRate) async throws {
        try await reconcile(limit: initialLimit)
    }

    public func restore(limit: BitRate) async throws -> [String] {
        try await reconcile(limit: limit).map { "\($0)" }
    }

    /// The VM's interface or IFB deleted, made again under its name (a new index: a VM
    /// restarted, its tap re-created) or renamed; the IFB down; or a qdisc, class or filter
    /// changed on either. (Link notifications of the controller's own changes may come too:
    /// only tc notifications always carry the requester's port. Its own IFB, made and set up
    /// by a reconcile that has finished, is in the cache by then, and up.)
    public func concerns(_ event: RouteEvent) -> Bool {
        switch event {
        case .overrun: return true
        case .link(let deleted, let index, let name, let up, _):
            if name == interface || name == ifb {
                return deleted || cache.peek(name) != index || (name == ifb && !up)
            }
            // One of ours under another name: renamed.
            return index == cache.peek(interface) || index == cache.peek(ifb)
        case .tc(_, _, let ifindex, _, _, _):
            return ifindex == cache.peek(interface) || ifindex == cache.peek(ifb)
        }
    }

    /// A VM moved to another interface keeps its IFB (named for the VM): only this
    /// interface's ingress (and redirect) is removed.
    public func teardown(handingOverTo successor: any HardLimitBackend) async throws {
        guard let next = successor as? TCBackend, next.ifb == ifb else { return try await teardown() }
        guard next.interface != interface, let vmIndex = try? await netlink.index(of: interface) else { return }
        try await netlink.deleteQdisc(ifindex: vmIndex, parent: .ingressParent)
    }

    /// A filter at the redirect's priority that is not this VM's redirect: another kind, or
    /// a u32 node redirecting to another device. (u32's hash-table entry at the same
    /// priority, which carries no action, is part of any u32 filter and not counted.)
    static func isRedirect(_ f: FilterState, to ifb: Int32) -> Bool {
        f.priority == HostTree.redirectPriority && f.kind == "u32" && f.redirectIfindex == ifb
    }

    static func sendsElsewhere(_ f: FilterState, ifb: Int32?) -> Bool {
        guard f.kind == "u32" else { return true }
        guard let target = f.redirectIfindex else { return false }
        return target != ifb
    }

    /// What the kernel has of this VM's host tree (``InstalledHostTree``): one dump of the
    /// host's qdiscs (the interface's ingress, the IFB's root and its options), the
    /// interface's ingress filters, the IFB's link and its classes.
    public func installed() async throws -> InstalledHostTree {
        let vmIndex = try await netlink.index(of: interface)
        let table = try await netlink.qdiscCounters()
        let ingress = table.ingress.contains(vmIndex)
        let inPlace = ingress ? try await netlink.filters(ifindex: vmIndex, parent: .ingress).filter { $0.priority == HostTree.redirectPriority } : []
        guard let ifbLink = try? await netlink.link(named: ifb) else {
            return InstalledHostTree(ifbExists: false, ingress: ingress, redirect: false, foreignRedirect: inPlace.contains { Self.sendsElsewhere($0, ifb: nil) })
        }
        // Ours only when it points at this VM's IFB: after two taps swapped names a redirect
        // to the other VM's IFB is there, and must not pass for ours.
        let redirect = inPlace.contains { Self.isRedirect($0, to: ifbLink.index) }
        let foreign = inPlace.contains { Self.sendsElsewhere($0, ifb: ifbLink.index) }
        let root = Self.root(table.roots[ifbLink.index])
        let htbAtOurs = table.roots[ifbLink.index].map { $0.kind == "htb" && $0.handle == Self.qdisc } ?? false
        let limit = htbAtOurs ? try await netlink.classes(ifindex: ifbLink.index).first { $0.spec.handle == Self.leaf }?.spec.ceil : nil
        return InstalledHostTree(ifbExists: true, ifbUp: ifbLink.isUp, root: root, limit: limit,
                                 ingress: ingress, redirect: redirect, foreignRedirect: foreign)
    }

    /// The IFB's root as the planner sees it: none (the kernel's default, handle 0), Tandem's
    /// as it makes it now, one at Tandem's handle made otherwise (stale), or another.
    static func root(_ q: RootQdiscCounters?) -> InstalledHostTree.Root {
        guard let q, q.handle != .unspecified else { return .none }
        guard q.handle == Self.qdisc else { return .other }
        let current = q.kind == "htb" && q.htbDefaultClass == Self.leaf.minor && q.htbDirectQueue == HostTree.directQueue
        return current ? .ours : .stale
    }

    /// Makes the kernel's host tree the desired one (``HostTreePlanner``): what is missing is
    /// made, a limit already there is kept. Idempotent: a second call finds nothing to do.
    /// Returns the requests it made.
    @discardableResult
    public func reconcile(limit: BitRate) async throws -> [HostTreeOperation] {
        cache.forget()
        let ops = HostTreePlanner.plan(desired: HostTree(interface: interface, ifb: ifb, limit: limit), installed: try await installed())
        for op in ops {
            switch op {
            case .addIFB: try await netlink.addIFB(named: ifb)
            case .setIFBUp: try await netlink.setLink(named: ifb, up: true)
            case .parkRoot:
                try await withIFB { try await netlink.replaceHTBRoot(ifindex: $0, handle: Self.parked, defaultClass: Self.leaf.minor, directQueue: 0) }
            case .replaceRoot:
                try await withIFB { try await netlink.replaceHTBRoot(ifindex: $0, handle: Self.qdisc, defaultClass: Self.leaf.minor, directQueue: HostTree.directQueue) }
            case .setLimit(let l): try await withIFB { try await netlink.setHTBClass(ifindex: $0, leafClass(l), mode: .replace) }
            case .addIngress: try await netlink.addIngress(ifindex: try await cache.get(interface) { try await netlink.index(of: interface) })
            case .deleteRedirect:
                let vmIndex = try await cache.get(interface) { try await netlink.index(of: interface) }
                try await netlink.deleteFilter(ifindex: vmIndex, parent: .ingress, priority: HostTree.redirectPriority, family: .all)
            case .addRedirect:
                let vmIndex = try await cache.get(interface) { try await netlink.index(of: interface) }
                let ifbIndex = try await ifbIndex()
                try await netlink.addU32Filter(ifindex: vmIndex, U32Filter(parent: .ingress, priority: HostTree.redirectPriority, family: .all, target: .redirect(ifindex: ifbIndex)))
            }
        }
        // The round's batch looks the indexes up in the cache.
        _ = try await ifbIndex()
        _ = try await cache.get(interface) { try await netlink.index(of: interface) }
        return ops
    }

    func leafClass(_ limit: BitRate) -> HTBClass {
        let r = max(limit, HostTree.minimumRate)
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

    /// All tc backends on one socket share one dump of every root qdisc. In Tandem's tree the
    /// IFB's root HTB has a single class, the default one, so the root's counters are the
    /// class's (HTB counts both at dequeue, and a drop in the leaf against both).
    public let batchKey: String?

    public func readBatch() async throws -> CounterBatch {
        .qdiscs(try await netlink.qdiscCounters())
    }

    public func counters(in batch: CounterBatch) -> (sentBytes: UInt64, drops: UInt64?)? {
        guard case .qdiscs(let table) = batch, let index = cache.peek(ifb), let q = table.roots[index],
              q.kind == "htb", q.handle == Self.qdisc else { return nil }
        return (q.bytes, q.drops)
    }

    /// The IFB's HTB root and the VM interface's ingress qdisc, at the indexes `prepare`
    /// found: an interface re-created by a VM restart has a new index without our ingress,
    /// so this notices within a round.
    public func isIntact(in batch: CounterBatch) -> Bool? {
        guard case .qdiscs(let table) = batch, let vmIndex = cache.peek(interface), let ifbIndex = cache.peek(ifb) else { return nil }
        guard let root = table.roots[ifbIndex] else { return false }
        return root.kind == "htb" && root.handle == Self.qdisc && table.ingress.contains(vmIndex)
    }

    /// The redirect filter on the interface's ingress (at the index `prepare` found; a gone
    /// index fails the dump, which reads as not intact).
    public func isIntact() async -> Bool {
        var vmIndex = cache.peek(interface)
        if vmIndex == nil { vmIndex = try? await netlink.index(of: interface) }
        guard let vmIndex, let filters = try? await netlink.filters(ifindex: vmIndex, parent: .ingress),
              let ifbIndex = try? await ifbIndex() else { return false }
        // The redirect, to this VM's own IFB (not one a swap of names left pointing elsewhere).
        return filters.contains { Self.isRedirect($0, to: ifbIndex) }
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
public final class SRIOVBackend: HardLimitBackend {
    public let pf: String
    public let vf: UInt32
    /// Also program the NIC's minimum TX rate with the VM's guarantee.
    public let setMin: Bool
    let netlink: RouteSocket

    public init(pf: String, vf: UInt32, setMin: Bool, netlink: RouteSocket) {
        self.pf = pf; self.vf = vf; self.setMin = setMin; self.netlink = netlink
        self.batchKey = "vfs@\(ObjectIdentifier(netlink).hashValue):\(pf)"
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

    /// The VFs of one PF share one RTM_GETLINK per round: a PF with 64 VFs given to 64 VMs is
    /// one request, not 64 requests that each carry all 64 VFs.
    public let batchKey: String?

    public func readBatch() async throws -> CounterBatch {
        var out: [UInt32: (bytes: UInt64, drops: UInt64, maxRate: BitRate)] = [:]
        for v in try await netlink.virtualFunctions(of: pf, withStats: true) {
            out[v.index] = (v.stats?.txBytes ?? 0, v.stats?.txDropped ?? 0, v.maxTxRate)
        }
        return .virtualFunctions(out)
    }

    public func counters(in batch: CounterBatch) -> (sentBytes: UInt64, drops: UInt64?)? {
        guard case .virtualFunctions(let vfs) = batch, let c = vfs[vf] else { return nil }
        return (c.bytes, c.drops)
    }

    /// A driver reset (or `ip link set ... vf N max_tx_rate`) shows in the next round.
    public func currentLimit(in batch: CounterBatch) -> BitRate?? {
        guard case .virtualFunctions(let vfs) = batch, let c = vfs[vf] else { return nil }
        return .some(c.maxRate == .zero ? nil : c.maxRate)
    }

    public func teardown() async throws {
        try await netlink.setVFRate(pf: pf, vf: vf, max: .zero, min: .zero)
    }

    /// The same VF handed to the `devlink` backend keeps its rate until that one writes its
    /// own (on netdevsim and mlx5 they are one setting: clearing it would lift the limit).
    public func teardown(handingOverTo successor: any HardLimitBackend) async throws {
        if let d = successor as? DevlinkBackend, d.pf == pf, d.vf == vf { return }
        try await teardown()
    }
}

extension HardLimitBackend {
    /// The backend's kind (`tc`, `sriov`, `devlink`): the first word of ``describe``; a
    /// metrics label.
    public var kind: String { String(describe.prefix { $0 != " " }) }
}
