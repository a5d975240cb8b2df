import Testing
import Netlink
import TandemProtocol
@testable import AgentCore

@Suite struct ShapingPlannerTests {
    static func installed(_ tree: ShapingTree) -> InstalledTree {
        // What the kernel would list for a tree applied exactly.
        InstalledTree(root: .ours(defaultMinor: ShapingTree.defaultMinor),
                      classes: tree.classes.map { var c = $0; c.burst = c.effectiveBurst; c.cburst = c.effectiveCburst; c.quantum = c.effectiveQuantum; return c },
                      filters: tree.filters.flatMap { f -> [FilterState] in
                          guard case .classify(let c) = f.target else { return [] }
                          return [FilterState(parent: f.parent, priority: f.priority, family: f.family.rawValue, kind: "u32", handle: 0x8000_0000, classID: nil),
                                  FilterState(parent: f.parent, priority: f.priority, family: f.family.rawValue, kind: "u32", handle: 0x8000_0800, classID: c)]
                      })
    }

    @Test func emptyInterfaceGetsEverything() {
        let want = ShapingTree.desired(limit: .mbit(100), reservations: [])
        let ops = ShapingPlanner.plan(desired: want, installed: InstalledTree(root: .none, classes: [], filters: []))
        #expect(ops.first == .replaceRoot)
        #expect(ops.filter { if case .addClass = $0 { return true }; return false }.count == 4)
        #expect(ops.filter { if case .addFilter = $0 { return true }; return false }.count == 4)
        // Classes exist before any filter points at them.
        let lastClass = ops.lastIndex { if case .addClass = $0 { return true }; return false }!
        let firstFilter = ops.firstIndex { if case .addFilter = $0 { return true }; return false }!
        #expect(lastClass < firstFilter)
    }

    /// A root of ours whose default class is another (an older agent's, or changed by hand):
    /// HTB cannot change it in place, so the whole tree is made again.
    @Test func aRootOfOursWithAnotherDefaultIsMadeAgainWhole() {
        let want = ShapingTree.desired(limit: .mbit(100), reservations: [])
        var have = Self.installed(want)
        have.root = .ours(defaultMinor: 0x99)
        let ops = ShapingPlanner.plan(desired: want, installed: have)
        #expect(ops.first == .replaceRoot)
        #expect(ops.filter { if case .addClass = $0 { return true }; return false }.count == want.classes.count, "\(ops)")
        #expect(ops.filter { if case .addFilter = $0 { return true }; return false }.count == want.filters.count)
    }

    @Test func upToDateTreeNeedsNothing() {
        let want = ShapingTree.desired(limit: .mbit(100), reservations: [.init(slot: 0, reservation: ShapingTreeTests.rsv)])
        #expect(ShapingPlanner.plan(desired: want, installed: Self.installed(want)).isEmpty)
    }

    @Test func newLimitChangesClassesInPlace() {
        let old = ShapingTree.desired(limit: .mbit(100), reservations: [])
        let new = ShapingTree.desired(limit: .mbit(60), reservations: [])
        let ops = ShapingPlanner.plan(desired: new, installed: Self.installed(old))
        #expect(ops.count == 4)
        #expect(ops.allSatisfy { if case .changeClass = $0 { return true }; return false }, "no teardown: \(ops)")
    }

    @Test func addingAndRemovingAReservation() {
        let base = ShapingTree.desired(limit: .mbit(100), reservations: [])
        let with = ShapingTree.desired(limit: .mbit(100), reservations: [.init(slot: 0, reservation: ShapingTreeTests.rsv)])
        let add = ShapingPlanner.plan(desired: with, installed: Self.installed(base))
        #expect(add.contains(.addClass(with.classes.first { $0.handle.minor == 0x100 }!)))
        #expect(add.contains { if case .addFilter(let f) = $0 { return f.priority == 100 }; return false })
        #expect(!add.contains { if case .deleteFilter = $0 { return true }; return false })
        let remove = ShapingPlanner.plan(desired: base, installed: Self.installed(with))
        let delFilter = remove.firstIndex(of: .deleteFilter(priority: 100, family: .ipv4))
        let delClass = remove.firstIndex(of: .deleteClass(TCHandle(major: 1, minor: 0x100)))
        #expect(delFilter != nil && delClass != nil)
        #expect(delFilter! < delClass!, "the filter goes before its class")
    }

    @Test func filterPointingElsewhereIsReplaced() {
        let want = ShapingTree.desired(limit: .mbit(100), reservations: [])
        var have = Self.installed(want)
        for i in have.filters.indices where have.filters[i].priority == 60000 && have.filters[i].classID != nil {
            have.filters[i].classID = ShapingTree.udp
        }
        let ops = ShapingPlanner.plan(desired: want, installed: have)
        #expect(ops == [.deleteFilter(priority: 60000, family: .ipv4), .addFilter(want.filters[0])])
    }

    @Test func foreignRootIsReplacedWhole() {
        let want = ShapingTree.desired(limit: .mbit(100), reservations: [])
        let ops = ShapingPlanner.plan(desired: want, installed: InstalledTree(root: .foreign(kind: "tbf", handle: TCHandle(major: 8001, minor: 0)), classes: [], filters: []))
        #expect(ops.first == .replaceRoot)
        #expect(ops.count == 9)
    }
}
