import Testing
import TandemProtocol
@testable import HostCore

@Suite struct HostTreePlannerTests {
    let tree = HostTree(interface: "vnet3", ifb: "tdm-1234abcd", limit: .mbit(40))
    let complete = InstalledHostTree(ifbExists: true, ifbUp: true, root: .ours, limit: .mbit(40), ingress: true, redirect: true)

    @Test func fromNothingTheLimitComesBeforeTheRedirect() {
        let ops = HostTreePlanner.plan(desired: tree, installed: .empty)
        #expect(ops == [.addIFB, .setIFBUp, .replaceRoot, .setLimit(.mbit(40)), .addIngress, .addRedirect])
    }

    @Test func appliedTwiceTheSecondPlanIsEmpty() {
        #expect(HostTreePlanner.plan(desired: tree, installed: complete).isEmpty)
        #expect(HostTreePlanner.plan(desired: tree, installed: complete, keepLimit: false).isEmpty)
    }

    @Test func aLimitAlreadyThereIsKeptUnlessAskedOtherwise() {
        var have = complete
        have.limit = .mbit(7)
        #expect(HostTreePlanner.plan(desired: tree, installed: have).isEmpty, "a restarted controller takes over the kernel's limit")
        #expect(HostTreePlanner.plan(desired: tree, installed: have, keepLimit: false) == [.setLimit(.mbit(40))])
    }

    @Test(arguments: [
        (InstalledHostTree(ifbExists: true, ifbUp: false, root: .ours, limit: .mbit(40), ingress: true, redirect: true), [HostTreeOperation.setIFBUp]),
        (InstalledHostTree(ifbExists: true, ifbUp: true, root: .other, limit: nil, ingress: true, redirect: true), [.replaceRoot, .setLimit(.mbit(40))]),
        (InstalledHostTree(ifbExists: true, ifbUp: true, root: .ours, limit: nil, ingress: true, redirect: true), [.setLimit(.mbit(40))]),
        (InstalledHostTree(ifbExists: true, ifbUp: true, root: .ours, limit: .mbit(40), ingress: true, redirect: false), [.addRedirect]),
        (InstalledHostTree(ifbExists: true, ifbUp: true, root: .ours, limit: .mbit(40), ingress: false, redirect: false), [.addIngress, .addRedirect]),
        // A redirect in the place of ours that points elsewhere (two taps swapped names): out first.
        (InstalledHostTree(ifbExists: true, ifbUp: true, root: .ours, limit: .mbit(40), ingress: true, redirect: false, foreignRedirect: true), [.deleteRedirect, .addRedirect]),
        // ... also beside ours: the delete takes the whole priority, so ours is added again.
        (InstalledHostTree(ifbExists: true, ifbUp: true, root: .ours, limit: .mbit(40), ingress: true, redirect: true, foreignRedirect: true), [.deleteRedirect, .addRedirect]),
        // A re-created IFB: everything under it again, the redirect (to the old index) too is
        // left to the kernel, which dropped it with the old device.
        (InstalledHostTree(ifbExists: false, ingress: true, redirect: false), [.addIFB, .setIFBUp, .replaceRoot, .setLimit(.mbit(40))] + [.addRedirect]),
        // A root at our handle that lets unclassified traffic through (an older Tandem's, or
        // changed by hand): parked (swapped for a root that drops all) and made again, the limit in
        // force carried over.
        (InstalledHostTree(ifbExists: true, ifbUp: true, root: .stale, limit: .mbit(7), ingress: true, redirect: true), [.parkRoot, .replaceRoot, .setLimit(.mbit(7))]),
        (InstalledHostTree(ifbExists: true, ifbUp: true, root: .stale, limit: nil, ingress: true, redirect: true), [.parkRoot, .replaceRoot, .setLimit(.mbit(40))]),
    ])
    func whatIsMissingIsAllThatIsDone(installed: InstalledHostTree, expected: [HostTreeOperation]) {
        #expect(HostTreePlanner.plan(desired: tree, installed: installed) == expected)
    }

    @Test func aStaleRootTakesTheDesiredLimitWhenNotKeepingTheKernels() {
        let stale = InstalledHostTree(ifbExists: true, ifbUp: true, root: .stale, limit: .mbit(7), ingress: true, redirect: true)
        #expect(HostTreePlanner.plan(desired: tree, installed: stale, keepLimit: false) == [.parkRoot, .replaceRoot, .setLimit(.mbit(40))])
    }

    @Test func aLimitBelowWhatHTBTakesIsRaisedToIt() {
        let tiny = HostTree(interface: "t", ifb: "i", limit: .zero)
        #expect(HostTreePlanner.plan(desired: tiny, installed: .empty).contains(.setLimit(HostTree.minimumRate)))
    }
}
