import AgentCore
import Netlink
import TandemProtocol

/// What the agent needs of the shaping on its interface: apply a desired tree, read the
/// classes' counters, put the tree back after the interface came back, remove it. In
/// production the ``Shaper`` (netlink, root); in tests a fake that records the trees, so the
/// agent's service tier runs without root.
public protocol GuestShaper: Sendable {
    /// Makes the kernel's tree the desired one; returns the operations it took. A foreign
    /// root qdisc is refused unless `force`.
    @discardableResult
    func apply(_ tree: ShapingTree, force: Bool) async throws -> [ShapingOperation]
    /// Every class's counters.
    func classStats() async throws -> [HTBClassState]
    /// Every class's counters alone (cheaper: read at every report and between them).
    func classCounters() async throws -> [ClassCounters]
    /// After the interface went away and came back: finds it and puts the last tree back.
    /// Returns whether it did anything.
    @discardableResult
    func recover() async throws -> Bool
    /// Removes the tree if it is Tandem's.
    func remove() async throws
    /// The interface's MAC address (for the hello), if it has one.
    func mac() async throws -> String?
}

extension GuestShaper {
    public func classCounters() async throws -> [ClassCounters] {
        try await classStats().map { ClassCounters(handle: $0.spec.handle, bytes: $0.stats.bytes, drops: $0.stats.drops, backlog: $0.stats.backlog) }
    }

    @discardableResult
    public func apply(_ tree: ShapingTree) async throws -> [ShapingOperation] { try await apply(tree, force: false) }
}

extension Shaper: GuestShaper {
    public func mac() async throws -> String? { try await link().mac }
}
