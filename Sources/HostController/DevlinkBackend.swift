import Foundation
import HostCore
import Netlink
import TandemProtocol

/// The rate nodes Tandem keeps for `[[group]]`s, as the configuration says now (a reload
/// changes them; the VMs' backends then find their node different and put it right).
public final class DevlinkNodes: @unchecked Sendable {
    /// A group's node: tx_share its guarantee, tx_max its cap (0: none), tx_weight its weight
    /// where the kernel and driver take one.
    public struct Spec: Sendable, Equatable {
        public var name: String
        public var share: BitRate
        public var max: BitRate?
        public var weight: Double
    }
    private let lock = NSLock()
    private var specs: [String: Spec] = [:]

    public init(_ groups: [HostConfig.GroupConfig] = []) { update(groups) }

    public func update(_ groups: [HostConfig.GroupConfig]) {
        let new = Dictionary(groups.map { ($0.name, Spec(name: Self.nodeName($0.name), share: $0.guarantee, max: $0.cap, weight: $0.weight)) }, uniquingKeysWith: { a, _ in a })
        lock.withLock { specs = new }
    }

    func spec(_ group: String?) -> Spec? { group.flatMap { g in lock.withLock { specs[g] } } }

    /// A node's name: the group's, prefixed (a name that is a number would read as a port).
    public static func nodeName(_ group: String) -> String { "tandem-" + group }
    public static func isOurs(_ node: String?) -> Bool { node?.hasPrefix("tandem-") == true }
}

/// An SR-IOV VF limited through its devlink rate leaf (`devlink port function rate set
/// pci/ADDR/PORT tx_max M tx_share S`), the VF's group a rate node whose tx_share and
/// tx_max are the group's guarantee and cap. The NIC then holds the group's budget itself,
/// between rounds too. Needs the PF's eswitch in switchdev mode (VF ports exist only there).
///
/// The VF's counters are read as ``SRIOVBackend`` reads them (the PF's VF list), in the same
/// per-PF batch as the devlink rate dump.
public final class DevlinkBackend: HardLimitBackend {
    public let pf: String
    public let vf: UInt32
    public let setMin: Bool
    let group: String?
    let nodes: DevlinkNodes
    let vfs: SRIOVBackend
    let devlink: RouteSocket
    let leafCache = LeafCache()

    /// The VF's port once found, and what the device was found to take.
    final class LeafCache: @unchecked Sendable {
        private let lock = NSLock()
        private var port: DevlinkPort?
        private var weight = false
        private var noNodes = false
        var value: DevlinkPort? { lock.withLock { port } }
        func set(_ p: DevlinkPort?) { lock.withLock { port = p } }
        /// A weight was written to the device: the node's is compared from then on.
        var takesWeight: Bool { get { lock.withLock { weight } } set { lock.withLock { weight = newValue } } }
        /// The driver refused to make a node: the VM goes on with its leaf alone.
        var nodesRefused: Bool { get { lock.withLock { noNodes } } set { lock.withLock { noNodes = newValue } } }
    }

    public init(pf: String, vf: UInt32, setMin: Bool, group: String?, nodes: DevlinkNodes, netlink: RouteSocket, devlink: RouteSocket) {
        self.pf = pf; self.vf = vf; self.setMin = setMin; self.group = group; self.nodes = nodes
        self.vfs = SRIOVBackend(pf: pf, vf: vf, setMin: setMin, netlink: netlink)
        self.devlink = devlink
        self.batchKey = "devlink:" + (vfs.batchKey ?? pf)
    }

    public var describe: String {
        let leaf = leafCache.value.map { " \($0.bus)/\($0.device)/\($0.index)" } ?? ""
        return "devlink\(leaf) (\(pf) vf \(vf))"
    }

    public func sameLimit(_ a: BitRate, _ b: BitRate) -> Bool { vfs.sameLimit(a, b) }

    /// The VF's port: the devlink instance whose port has the PF as its netdev, and its PCI VF
    /// port with the VF's number. Cached until a request fails.
    func leaf() async throws -> DevlinkPort {
        if let p = leafCache.value { return p }
        let ports = try await devlink.devlinkPorts()
        guard let uplink = ports.first(where: { $0.netdev == pf }) else {
            throw NetlinkError(operation: "DEVLINK_CMD_PORT_GET", object: "dev \(pf)", errno: 19,
                               detail: "no devlink port has \(pf) as its netdev: the PF has no devlink instance, or its eswitch is not in switchdev mode (devlink dev eswitch set pci/ADDR mode switchdev)")
        }
        let candidates = ports.filter {
            $0.bus == uplink.bus && $0.device == uplink.device && $0.flavour == DevlinkPort.pciVF && $0.vfNumber.map(UInt32.init) == vf && ($0.controller ?? 0) == 0
        }
        // (A physical port carries no PF number: an instance with VFs of several PFs cannot be
        // told apart here, and is refused rather than guessed.)
        if Set(candidates.map { $0.pfNumber ?? 0 }).count > 1 {
            throw NetlinkError(operation: "DEVLINK_CMD_PORT_GET", object: "\(uplink.bus)/\(uplink.device) vf \(vf)", errno: 22,
                               detail: "VF \(vf) of several PFs (\(candidates.map { "pfnum \($0.pfNumber ?? 0) port \($0.index)" }.joined(separator: ", "))): which is \(pf)'s cannot be told")
        }
        guard let port = candidates.first else {
            let count = ports.filter { $0.bus == uplink.bus && $0.device == uplink.device && $0.flavour == DevlinkPort.pciVF }.count
            throw NetlinkError(operation: "DEVLINK_CMD_PORT_GET", object: "\(uplink.bus)/\(uplink.device) vf \(vf)", errno: 19,
                               detail: "no devlink port for VF \(vf) (\(count) VF ports; VF ports exist in switchdev mode, for VFs that are enabled)")
        }
        leafCache.set(port)
        return port
    }

    /// Runs `body` with the VF's port; when the device or port is not there (ENODEV,
    /// ENOENT) looks the port up again once (the device may have been made again).
    func withLeaf<T>(_ body: (DevlinkPort) async throws -> T) async throws -> T {
        do { return try await body(try await leaf()) } catch {
            guard let e = error as? NetlinkError, e.errno == ENODEV || e.errno == ENOENT else { throw error }
            leafCache.set(nil)
            return try await body(try await leaf())
        }
    }

    /// A group's weight as drivers take it (ice: 1 to 200).
    static func weight(_ w: Double) -> UInt32 { UInt32(Swift.max(1, Swift.min(200, w.rounded()))) }

    static func rate(_ r: BitRate?) -> UInt64 { r.map(DevlinkRate.bytesPerSecond) ?? 0 }

    /// The rate objects of the port's device, and the port's leaf among them.
    static func mine(_ port: DevlinkPort, _ rates: [DevlinkRate]) -> [DevlinkRate] { rates.filter { $0.bus == port.bus && $0.device == port.device } }
    static func leaf(_ port: DevlinkPort, _ rates: [DevlinkRate]) -> DevlinkRate? {
        rates.first { $0.bus == port.bus && $0.device == port.device && $0.object == .leaf(port: port.index) }
    }

    /// What is not as it should be in the rate objects `rates` (one dump): the VF's leaf
    /// missing, its node missing or other than the group says, the leaf in another node.
    func differences(_ port: DevlinkPort, _ rates: [DevlinkRate]) -> [String] {
        let mine = Self.mine(port, rates)
        guard let leaf = Self.leaf(port, mine) else { return ["no rate leaf for port \(port.index)"] }
        var out: [String] = []
        let spec = leafCache.nodesRefused ? nil : nodes.spec(group)
        if let spec {
            if let node = mine.first(where: { $0.object == .node(name: spec.name) }) {
                if node.txShare != Self.rate(spec.share) || node.txMax != Self.rate(spec.max)
                    || (leafCache.takesWeight && node.txWeight != Self.weight(spec.weight)) { out.append("node \(spec.name) has other rates") }
            } else {
                out.append("no node \(spec.name)")
            }
        }
        if leaf.parent != spec?.name && (spec != nil || DevlinkNodes.isOurs(leaf.parent)) {
            out.append("leaf in \(leaf.parent ?? "no node")")
        }
        return out
    }

    /// Makes the group's node and puts the leaf in it (or out of a node of Tandem's when the
    /// VM is in no group); says what it did.
    func placeLeaf(_ port: DevlinkPort) async throws -> [String] {
        let rates = Self.mine(port, try await devlink.devlinkRates())
        guard let leaf = Self.leaf(port, rates) else {
            throw NetlinkError(operation: "DEVLINK_CMD_RATE_GET", object: "\(port.bus)/\(port.device)/\(port.index)", errno: 19, detail: "the VF's port has no rate leaf")
        }
        var done: [String] = []
        var spec = leafCache.nodesRefused ? nil : nodes.spec(group)
        if let s = spec {
            let weight = Self.weight(s.weight)
            let change = DevlinkRateChange(txShare: Self.rate(s.share), txMax: Self.rate(s.max), txWeight: weight)
            let known = await devlink.devlinkTakesWeight(bus: port.bus, device: port.device)
            if let node = rates.first(where: { $0.object == .node(name: s.name) }) {
                if node.txShare != change.txShare || node.txMax != change.txMax || (known != false && node.txWeight != weight) {
                    try await devlink.setDevlinkRate(bus: port.bus, device: port.device, .node(name: s.name), change)
                    done.append("node \(s.name) set")
                }
            } else {
                do {
                    try await devlink.setDevlinkRate(bus: port.bus, device: port.device, .node(name: s.name), change, new: true)
                    done.append("node \(s.name) made")
                } catch {
                    let e = error
                    guard e.errno == EOPNOTSUPP else { throw e }
                    // A driver without rate nodes: the leaves carry the group's share alone.
                    leafCache.nodesRefused = true
                    spec = nil
                    done.append("no node: the driver makes none (\(e))")
                }
            }
            leafCache.takesWeight = await devlink.devlinkTakesWeight(bus: port.bus, device: port.device) == true
        }
        let want = spec?.name
        if leaf.parent != want && (want != nil || DevlinkNodes.isOurs(leaf.parent)) {
            // The kernel moves a leaf between nodes only through "no node".
            if leaf.parent != nil { try await devlink.setDevlinkRate(bus: port.bus, device: port.device, .leaf(port: port.index), DevlinkRateChange(parent: "")) }
            if let want { try await devlink.setDevlinkRate(bus: port.bus, device: port.device, .leaf(port: port.index), DevlinkRateChange(parent: want)) }
            done.append("leaf put in \(want ?? "no node")")
            if let old = leaf.parent, DevlinkNodes.isOurs(old) { try await deleteIfEmpty(port, old, rates) }
        }
        return done
    }

    /// The leaf's limit first (a VF is never left without one while its node is made), then
    /// its node.
    public func prepare(initialLimit: BitRate) async throws {
        let leaf = try await leafRate()
        if leaf.txMax == 0 { try await apply(limit: initialLimit, guarantee: DevlinkRate.bitRate(bytesPerSecond: leaf.txShare)) }
        _ = try await withLeaf { try await placeLeaf($0) }
    }

    public func restore(limit: BitRate) async throws -> [String] {
        try await withLeaf { try await placeLeaf($0) }
    }

    /// The VF's leaf as the kernel has it (one dump).
    func leafRate() async throws -> DevlinkRate {
        let r = try await withLeaf { Self.leaf($0, try await devlink.devlinkRates()) }
        guard let r else { throw NetlinkError(operation: "DEVLINK_CMD_RATE_GET", object: describe, errno: 19, detail: "the VF's port has no rate leaf") }
        return r
    }

    public func apply(limit: BitRate, guarantee: BitRate) async throws {
        // Never 0 (which means unlimited): at least 1 Mbit/s.
        let max = Swift.max(limit, .mbit(1))
        let change = DevlinkRateChange(txShare: setMin ? DevlinkRate.bytesPerSecond(Swift.min(guarantee, max)) : nil, txMax: DevlinkRate.bytesPerSecond(max))
        try await withLeaf { p in try await devlink.setDevlinkRate(bus: p.bus, device: p.device, .leaf(port: p.index), change) }
    }

    public func currentLimit() async throws -> BitRate? {
        let r = try await leafRate()
        return r.txMax == 0 ? nil : DevlinkRate.bitRate(bytesPerSecond: r.txMax)
    }

    public func counters() async throws -> (sentBytes: UInt64, drops: UInt64?) { try await vfs.counters() }

    /// The PF's VF list and the devlink rate objects, one request each per round for all the
    /// PF's VFs.
    public let batchKey: String?

    public func readBatch() async throws -> CounterBatch {
        guard case .virtualFunctions(let v) = try await vfs.readBatch() else { return .virtualFunctions([:]) }
        return .devlink(vfs: v, rates: try await devlink.devlinkRates())
    }

    public func counters(in batch: CounterBatch) -> (sentBytes: UInt64, drops: UInt64?)? {
        guard case .devlink(let v, _) = batch else { return nil }
        return vfs.counters(in: .virtualFunctions(v))
    }

    /// A device made again (a driver reload) has its leaves back without their node: seen
    /// in the next round.
    public func isIntact(in batch: CounterBatch) -> Bool? {
        guard case .devlink(_, let rates) = batch, let port = leafCache.value else { return nil }
        return differences(port, rates).isEmpty
    }

    public func currentLimit(in batch: CounterBatch) -> BitRate?? {
        guard case .devlink(_, let rates) = batch, let port = leafCache.value, let r = Self.leaf(port, rates) else { return nil }
        return .some(r.txMax == 0 ? nil : DevlinkRate.bitRate(bytesPerSecond: r.txMax))
    }

    /// The closer look: the port found again (a device made again could number its ports
    /// otherwise), then the rate objects.
    public func isIntact() async -> Bool {
        let cached = leafCache.value
        leafCache.set(nil)
        guard let port = try? await leaf(), let rates = try? await devlink.devlinkRates() else { return false }
        return port == cached && differences(port, rates).isEmpty
    }

    /// The leaf back to no limit and out of its node; the node deleted when no other leaf is
    /// in it (the kernel refuses to delete a node with members: then it stays for them).
    public func teardown() async throws {
        try await withLeaf { p in
            try await devlink.setDevlinkRate(bus: p.bus, device: p.device, .leaf(port: p.index), DevlinkRateChange(txShare: setMin ? 0 : nil, txMax: 0))
            try await leaveNode(p)
        }
    }

    /// Handing the same VF over (to the `sriov` backend, or to `devlink` with another group):
    /// the leaf leaves this backend's node, if still in it, and its rates stay for the
    /// successor to write over (clearing them would leave the VF unlimited meanwhile: on
    /// netdevsim and mlx5 the leaf's rates are the VF's). Another device: ``teardown()``.
    public func teardown(handingOverTo successor: any HardLimitBackend) async throws {
        let sameVF = (successor as? SRIOVBackend).map { $0.pf == pf && $0.vf == vf } ?? (successor as? DevlinkBackend).map { $0.pf == pf && $0.vf == vf } ?? false
        guard sameVF else { return try await teardown() }
        try await withLeaf { try await leaveNode($0) }
    }

    /// Out of this backend's node (Tandem's, and the one its group names if it is still that);
    /// a node of Tandem's left without members deleted. One dump.
    func leaveNode(_ p: DevlinkPort) async throws {
        let rates = Self.mine(p, try await devlink.devlinkRates())
        let node = nodes.spec(group)?.name
        let parent = Self.leaf(p, rates)?.parent
        if let parent, DevlinkNodes.isOurs(parent), node == nil || parent == node {
            try await devlink.setDevlinkRate(bus: p.bus, device: p.device, .leaf(port: p.index), DevlinkRateChange(parent: ""))
        }
        for n in Set([parent, node].compactMap { $0 }) where DevlinkNodes.isOurs(n) && rates.contains(where: { $0.object == .node(name: n) }) {
            try await deleteIfEmpty(p, n, rates)
        }
    }

    /// A node of Tandem's that no rate object but this VF's leaf is in (as `rates`, one dump
    /// taken before the leaf left it, show) is deleted.
    func deleteIfEmpty(_ p: DevlinkPort, _ node: String, _ rates: [DevlinkRate]) async throws {
        let members = rates.contains { $0.bus == p.bus && $0.device == p.device && $0.parent == node && $0.object != .leaf(port: p.index) }
        if !members { try await devlink.deleteDevlinkNode(bus: p.bus, device: p.device, name: node) }
    }
}
