import TandemProtocol

/// The host-side shaping of one tap/veth VM (the `tc` backend) as data: the VM's egress is
/// its host interface's ingress, redirected to an IFB device whose root HTB has one class,
/// the VM's limit.
///
/// ```
/// tap (ingress ffff:) --u32 prio 1, mirred redirect--> ifb (htb 1:, default 1:10, direct_qlen 0)
///                                                       └─ class 1:10 rate=ceil=limit
/// ```
///
/// The root drops what no class takes (`direct_qlen 0`): a class 1:10 deleted behind the
/// controller's back stops the VM's traffic until it is put back, instead of letting it
/// through HTB's unlimited direct queue.
///
/// ``HostTreePlanner`` compares it with what the kernel has (``InstalledHostTree``) and
/// returns the requests that make the two the same, in an order that never lets the VM's
/// traffic into an unlimited device: the limit exists before the redirect.
public struct HostTree: Equatable, Sendable {
    /// The VM's host interface (tap, macvtap, veth).
    public var interface: String
    /// The IFB device that carries the VM's limit.
    public var ifb: String
    /// The limit to set where the kernel has none.
    public var limit: BitRate

    /// The root qdisc's major number and the class's minor: `1:` and `1:10`.
    public static let qdiscMajor: UInt16 = 1
    public static let leafMinor: UInt16 = 0x10
    /// The redirect filter's priority on the interface's ingress.
    public static let redirectPriority: UInt16 = 1
    /// HTB cannot take less than this.
    public static let minimumRate = BitRate.kbit(8)
    /// The root's direct queue, in packets: none (default-deny).
    public static let directQueue: UInt32 = 0

    public init(interface: String, ifb: String, limit: BitRate) { self.interface = interface; self.ifb = ifb; self.limit = limit }
}

/// What the kernel has for one VM's host tree, as far as the plan needs it.
public struct InstalledHostTree: Equatable, Sendable {
    public enum Root: Equatable, Sendable {
        case none
        /// Tandem's: HTB at `1:` with default class `1:10` and no direct queue.
        case ours
        /// A root at Tandem's handle `1:` that is not as Tandem makes it now: another kind,
        /// another default class, or an HTB that lets unclassified traffic through its
        /// direct queue (as Tandem made it before the default-deny). The kernel cannot change
        /// it in place: it is swapped for a root that drops everything, then made again (the
        /// class's limit carried over), so the VM's traffic is never unlimited in between.
        case stale
        /// Any other root qdisc on the IFB, at another handle (replaced in one request: the
        /// IFB is Tandem's own device).
        case other
    }
    public var ifbExists: Bool
    public var ifbUp: Bool
    public var root: Root
    /// The limit class's ceiling, if the class exists.
    public var limit: BitRate?
    public var ingress: Bool
    /// The redirect to this VM's own IFB.
    public var redirect: Bool
    /// A filter in the redirect's place that sends the traffic elsewhere (another VM's IFB
    /// after two taps swapped names, or anything else): it is deleted first.
    public var foreignRedirect: Bool

    public init(ifbExists: Bool, ifbUp: Bool = false, root: Root = .none, limit: BitRate? = nil, ingress: Bool = false, redirect: Bool = false, foreignRedirect: Bool = false) {
        self.ifbExists = ifbExists; self.ifbUp = ifbUp; self.root = root; self.limit = limit; self.ingress = ingress; self.redirect = redirect
        self.foreignRedirect = foreignRedirect
    }

    /// Nothing there yet.
    public static let empty = InstalledHostTree(ifbExists: false)
}

/// One request of a host tree plan, in the order given.
public enum HostTreeOperation: Equatable, Sendable {
    /// `ip link add IFB type ifb`
    case addIFB
    /// `ip link set IFB up`
    case setIFBUp
    /// `tc qdisc replace dev IFB root handle 2: htb default 10 direct_qlen 0`: a stale root at
    /// Tandem's handle swapped, in one request, for one that drops everything (no class)
    case parkRoot
    /// `tc qdisc replace dev IFB root handle 1: htb default 10 direct_qlen 0`
    case replaceRoot
    /// `tc class replace dev IFB parent 1: classid 1:10 htb rate R ceil R`
    case setLimit(BitRate)
    /// `tc qdisc add dev IF ingress`
    case addIngress
    /// `tc filter del dev IF parent ffff: prio 1`: a filter there that is not this VM's redirect
    case deleteRedirect
    /// `tc filter add dev IF parent ffff: prio 1 u32 match u32 0 0 action mirred egress redirect dev IFB`
    case addRedirect
}

/// Desired host tree against the installed one: the requests that make them the same.
/// Pure; the same plan applied twice gives an empty plan the second time.
public enum HostTreePlanner {
    /// `keepLimit`: a limit the kernel already has is kept (a restarted controller takes
    /// over without a gap); otherwise the desired limit is set when it differs.
    public static func plan(desired: HostTree, installed: InstalledHostTree, keepLimit: Bool = true) -> [HostTreeOperation] {
        var ops: [HostTreeOperation] = []
        if !installed.ifbExists { ops.append(.addIFB) }
        if !installed.ifbUp { ops.append(.setIFBUp) }
        // A new root drops the classes under it.
        let rootOK = installed.ifbExists && installed.root == .ours
        let stale = installed.ifbExists && installed.root == .stale
        if stale { ops.append(.parkRoot) }
        if !rootOK { ops.append(.replaceRoot) }
        let limit = max(desired.limit, HostTree.minimumRate)
        if rootOK {
            if installed.limit == nil || (!keepLimit && installed.limit != limit) { ops.append(.setLimit(limit)) }
        } else {
            // A stale root's class had a limit: it is the one in force, and stays.
            ops.append(.setLimit(stale && keepLimit ? installed.limit.map { max($0, HostTree.minimumRate) } ?? limit : limit))
        }
        // The limit first, so that nothing is redirected into an unlimited device.
        if !installed.ingress { ops.append(.addIngress) }
        // A foreign filter in the redirect's place goes, with whatever shares its priority
        // (ours too, if it is there): then ours is added.
        let foreign = installed.ingress && installed.foreignRedirect
        if foreign { ops.append(.deleteRedirect) }
        if foreign || !(installed.ingress && installed.redirect) { ops.append(.addRedirect) }
        return ops
    }
}
