import Netlink
import TandemProtocol

/// The HTB tree the agent keeps on its interface, as a value.
///
/// ```
/// 1:  htb root, default 1:30
/// └─ 1:1   rate = ceil = the soft limit the host granted
///    ├─ 1:100+n  one per granted reservation: rate = reserved, ceil = limit, prio 0
///    ├─ 1:10     TCP:   rate = half the rest, ceil = limit, prio 1
///    ├─ 1:20     UDP:   rate = half the rest, ceil = limit, prio 1
///    └─ 1:30     other (ARP, ICMP, ...): a small rate, ceil = limit, prio 1
/// ```
/// TCP and UDP are each guaranteed the same share and borrow the rest in equal quanta, so an
/// unresponsive UDP flood cannot take what TCP asks for. u32 filters steer reservations'
/// flows (priorities 100 and up, two per reservation: IPv4 and IPv6) before the protocol
/// filters (priorities 60000 to 60003).
public struct ShapingTree: Equatable, Sendable {
    public var classes: [HTBClass]
    public var filters: [U32Filter]
    /// Reservations' rates as shaped (scaled down when they do not fit the limit).
    public var appliedReservations: [String: BitRate]
    /// What the reservations asked for and the limit could not carry.
    public var unmetReservations: BitRate

    public static let qdisc = TCHandle(major: 1, minor: 0)
    public static let top = TCHandle(major: 1, minor: 1)
    public static let tcp = TCHandle(major: 1, minor: 0x10)
    public static let udp = TCHandle(major: 1, minor: 0x20)
    public static let other = TCHandle(major: 1, minor: 0x30)
    public static let defaultMinor: UInt16 = 0x30
    public static let firstReservationMinor: UInt16 = 0x100
    public static let firstReservationPriority: UInt16 = 100
    public static let protocolPriority: UInt16 = 60000
    /// Most reservations one tree holds (class minors 0x100 up, two filters each).
    public static let maxReservations = 4096
    /// The floor below which a class's rate is not cut (HTB needs a rate above 0).
    public static let minimumClassRate = BitRate.kbit(8)

    /// Names the demand report uses for the fixed classes.
    public static func name(of handle: TCHandle) -> String? {
        switch handle {
        case top: return "total"
        case tcp: return "tcp"
        case udp: return "udp"
        case other: return "other"
        default: return handle.minor >= firstReservationMinor ? "rsv-\(handle.minor - firstReservationMinor)" : nil
        }
    }

    /// A granted reservation with the slot the agent gave it (its class and filters).
    public struct Slotted: Equatable, Sendable {
        public var slot: Int
        public var reservation: GrantedReservation
        public init(slot: Int, reservation: GrantedReservation) { self.slot = slot; self.reservation = reservation }
    }

    /// The tree for a limit and the reservations to honour under it.
    ///
    /// If the reservations add up to more than 90% of the limit they are scaled down
    /// together to 90%, and the difference is reported as unmet: TCP, UDP and other
    /// traffic always keep a share.
    public static func desired(limit: BitRate, reservations: [Slotted]) -> ShapingTree {
        let limit = max(limit, .kbit(64))
        let requested = reservations.reduce(BitRate.zero) { $0 + $1.reservation.rate }
        let room = limit.scaled(by: 0.9)
        let scale = requested > room ? Double(room.bitsPerSecond) / Double(requested.bitsPerSecond) : 1
        var classes = [HTBClass(handle: top, parent: qdisc, rate: limit, ceil: limit)]
        var filters: [U32Filter] = []
        var applied: [String: BitRate] = [:]
        var used = BitRate.zero
        for s in reservations.sorted(by: { $0.slot < $1.slot }) {
            let rate = max(s.reservation.rate.scaled(by: scale), minimumClassRate)
            applied[s.reservation.id] = rate
            used = used + rate
            let handle = TCHandle(major: 1, minor: firstReservationMinor + UInt16(s.slot))
            classes.append(HTBClass(handle: handle, parent: top, rate: rate, ceil: limit, prio: 0))
            let sel = s.reservation.selector
            let v4 = (sel.source ?? sel.destination).map(\.address.isIPv4)
            let base = firstReservationPriority + UInt16(2 * s.slot)
            if v4 != false { filters.append(U32Filter(parent: qdisc, priority: base, family: .ipv4, match: sel, target: .classify(handle))) }
            if v4 != true { filters.append(U32Filter(parent: qdisc, priority: base + 1, family: .ipv6, match: sel, target: .classify(handle))) }
        }
        let rest = limit - used
        let otherRate = max(rest.scaled(by: 0.04), minimumClassRate)
        let half = max((rest - otherRate).scaled(by: 0.5), minimumClassRate)
        classes.append(HTBClass(handle: tcp, parent: top, rate: half, ceil: limit, prio: 1, quantum: 60_000))
        classes.append(HTBClass(handle: udp, parent: top, rate: half, ceil: limit, prio: 1, quantum: 60_000))
        classes.append(HTBClass(handle: other, parent: top, rate: otherRate, ceil: limit, prio: 1, quantum: 60_000))
        for (i, (family, proto, target)) in [(FilterFamily.ipv4, FlowProtocol.tcp, tcp), (.ipv4, .udp, udp), (.ipv6, .tcp, tcp), (.ipv6, .udp, udp)].enumerated() {
            filters.append(U32Filter(parent: qdisc, priority: protocolPriority + UInt16(i), family: family, match: FlowSelector(proto: proto), target: .classify(target)))
        }
        let unmet = requested - requested.scaled(by: scale)
        return ShapingTree(classes: classes, filters: filters, appliedReservations: applied, unmetReservations: unmet)
    }
}

/// What the kernel has on the interface, as far as the planner needs it.
public struct InstalledTree: Equatable, Sendable {
    public enum Root: Equatable, Sendable {
        case none
        /// An HTB qdisc with Tandem's handle.
        case ours(defaultMinor: UInt16?)
        /// Anything else: another tool's qdisc.
        case foreign(kind: String, handle: TCHandle)
    }
    public var root: Root
    public var classes: [HTBClass]
    public var filters: [FilterState]
    public init(root: Root, classes: [HTBClass], filters: [FilterState]) { self.root = root; self.classes = classes; self.filters = filters }
}

/// One change to the kernel's tree.
public enum ShapingOperation: Equatable, Sendable {
    /// `tc qdisc replace dev IF root handle 1: htb default 30` (after deleting a root that is
    /// not ours as it should be)
    case replaceRoot
    case addClass(HTBClass)
    /// In place: counters and queued packets stay.
    case changeClass(HTBClass)
    case deleteClass(TCHandle)
    case addFilter(U32Filter)
    case deleteFilter(priority: UInt16, family: FilterFamily)
}

public enum ShapingPlanner {
    /// The operations that turn `installed` into `desired`, in an order the kernel accepts
    /// and that never leaves traffic unshaped: classes are added and changed before filters
    /// point at them; filters go before the classes they point at. Nothing is torn down to
    /// change a rate. An up-to-date tree gives no operations.
    public static func plan(desired: ShapingTree, installed: InstalledTree) -> [ShapingOperation] {
        var ops: [ShapingOperation] = []
        var current: [TCHandle: HTBClass] = [:]
        var currentFilters = installed.filters
        switch installed.root {
        case .ours(let d) where d == ShapingTree.defaultMinor:
            for c in installed.classes { current[c.handle] = c }
        case .ours, .none, .foreign:
            // (A root of ours with another default class is made again with everything under
            // it: HTB cannot change a root in place, the kernel refuses it.)
            ops.append(.replaceRoot)
            currentFilters = []
        }
        // Parents first: the desired list starts with 1:1.
        for want in desired.classes {
            if let have = current[want.handle] {
                if !same(have, want) { ops.append(.changeClass(want)) }
            } else {
                ops.append(.addClass(want))
            }
        }
        // Filters are identified by priority and family; the classid tells whether the one
        // there still points where it should.
        var wanted: [UInt32: U32Filter] = [:]
        for f in desired.filters { wanted[key(f.priority, f.family.rawValue)] = f }
        var present: [UInt32: TCHandle?] = [:]
        for f in currentFilters where f.kind == "u32" {
            let k = key(f.priority, f.family)
            if present[k] == nil || f.classID != nil { present[k] = f.classID }
        }
        var deletes: [ShapingOperation] = []
        for (k, classID) in present.sorted(by: { $0.key < $1.key }) {
            let family = FilterFamily(rawValue: UInt16(k & 0xffff)) ?? .all
            if let w = wanted[k], case .classify(let target) = w.target, classID == target { continue }
            deletes.append(.deleteFilter(priority: UInt16(k >> 16), family: family))
        }
        // A filter being replaced is deleted first (same priority); the others after the adds.
        let replaced = Set(deletes.compactMap { op -> UInt32? in
            if case .deleteFilter(let p, let f) = op, wanted[key(p, f.rawValue)] != nil { return key(p, f.rawValue) }
            return nil
        })
        for op in deletes { if case .deleteFilter(let p, let f) = op, replaced.contains(key(p, f.rawValue)) { ops.append(op) } }
        for f in desired.filters.sorted(by: { ($0.priority, $0.family.rawValue) < ($1.priority, $1.family.rawValue) }) {
            let k = key(f.priority, f.family.rawValue)
            if present[k] == nil || replaced.contains(k) { ops.append(.addFilter(f)) }
        }
        for op in deletes { if case .deleteFilter(let p, let f) = op, !replaced.contains(key(p, f.rawValue)) { ops.append(op) } }
        // Classes no longer wanted, children before parents (higher minors are leaves here).
        let wantedHandles = Set(desired.classes.map(\.handle))
        for c in installed.classes.sorted(by: { $0.handle > $1.handle }) where !wantedHandles.contains(c.handle) {
            if case .ours = installed.root { ops.append(.deleteClass(c.handle)) }
        }
        return ops
    }

    static func key(_ priority: UInt16, _ family: UInt16) -> UInt32 { UInt32(priority) << 16 | UInt32(family) }

    /// Whether the kernel's class is the wanted one. Bursts come back through the kernel's
    /// time units and may differ by a little.
    static func same(_ have: HTBClass, _ want: HTBClass) -> Bool {
        func close(_ a: UInt32?, _ b: UInt32) -> Bool { guard let a else { return false }; return abs(Int(a) - Int(b)) <= Int(b) / 100 + 2 }
        // HTB keeps rates in bytes per second: compare in that unit.
        return have.parent == want.parent && have.rate.bytesPerSecond == want.rate.bytesPerSecond
            && have.ceil.bytesPerSecond == want.ceil.bytesPerSecond && have.prio == want.prio
            && have.quantum == want.effectiveQuantum && close(have.burst, want.effectiveBurst) && close(have.cburst, want.effectiveCburst)
    }
}
