import Netlink
import TandemProtocol
import AgentCore

/// Applies ``ShapingTree``s to one interface through the netlink module and reads back what
/// is there. Owned by the agent; one netlink socket.
public actor Shaper {
    public let interface: String
    let netlink: RouteSocket
    public private(set) var ifindex: Int32
    public private(set) var applied: ShapingTree?

    public init(interface: String, namespace: String? = nil) async throws {
        self.interface = interface
        self.netlink = try RouteSocket(namespace: namespace)
        self.ifindex = try await netlink.index(of: interface)
    }

    /// What the interface has now.
    public func installed() async throws -> InstalledTree {
        let root = try await netlink.rootQdisc(ifindex: ifindex)
        let kind: InstalledTree.Root
        switch root {
        case nil: kind = .none
        case let q? where q.kind == "htb" && q.handle == ShapingTree.qdisc: kind = .ours(defaultMinor: q.htbDefaultClass)
        case let q?: kind = .foreign(kind: q.kind, handle: q.handle)
        }
        guard case .ours = kind else { return InstalledTree(root: kind, classes: [], filters: []) }
        let classes = try await netlink.classes(ifindex: ifindex).map(\.spec)
        let filters = try await netlink.filters(ifindex: ifindex, parent: ShapingTree.qdisc)
        return InstalledTree(root: kind, classes: classes, filters: filters)
    }

    public struct ForeignQdisc: Error, CustomStringConvertible {
        public var interface: String
        public var kind: String
        public var handle: TCHandle
        public var description: String {
            "\(interface) already has a root qdisc that is not Tandem's (\(kind) \(handle)); remove it or start with --force to replace it"
        }
    }

    /// Makes the kernel's tree the desired one; returns the operations it took.
    /// A foreign root qdisc is refused unless `force`.
    @discardableResult
    public func apply(_ tree: ShapingTree, force: Bool = false) async throws -> [ShapingOperation] {
        let have = try await installed()
        if case .foreign(let kind, let handle) = have.root, !force {
            throw ForeignQdisc(interface: interface, kind: kind, handle: handle)
        }
        let ops = ShapingPlanner.plan(desired: tree, installed: have)
        for op in ops {
            switch op {
            case .replaceRoot:
                if have.root != .none { try await netlink.deleteQdisc(ifindex: ifindex, parent: .root) }
                try await netlink.replaceHTBRoot(ifindex: ifindex, handle: ShapingTree.qdisc, defaultClass: ShapingTree.defaultMinor)
            case .addClass(let c): try await netlink.setHTBClass(ifindex: ifindex, c, mode: .replace)
            case .changeClass(let c): try await netlink.setHTBClass(ifindex: ifindex, c, mode: .change)
            case .deleteClass(let h): try await netlink.deleteClass(ifindex: ifindex, handle: h)
            case .addFilter(let f): try await netlink.addU32Filter(ifindex: ifindex, f)
            case .deleteFilter(let p, let fam): try await netlink.deleteFilter(ifindex: ifindex, parent: ShapingTree.qdisc, priority: p, family: fam)
            }
        }
        applied = tree
        return ops
    }

    /// Every class's counters.
    public func classStats() async throws -> [HTBClassState] {
        try await netlink.classes(ifindex: ifindex)
    }

    public func classCounters() async throws -> [ClassCounters] {
        try await netlink.classCounters(ifindex: ifindex)
    }

    /// After the interface went away and came back (a new index): finds it again and puts
    /// the last tree back. Returns whether it did anything.
    @discardableResult
    public func recover() async throws -> Bool {
        let index = try await netlink.index(of: interface)
        if index == ifindex, let have = try? await installed(), have.root != .none { return false }
        ifindex = index
        if let tree = applied { try await apply(tree) }
        return true
    }

    /// Removes the tree (the root qdisc) if it is Tandem's.
    public func remove() async throws {
        if case .ours = try await installed().root {
            try await netlink.deleteQdisc(ifindex: ifindex, parent: .root)
        }
        applied = nil
    }

    public func link() async throws -> Link { try await netlink.link(index: ifindex) }
}
