import Foundation
import Testing
import AgentCore
import GuestAgent
import TandemLabSupport
import TandemTestSupport

/// The agent's shaper against the kernel's tc, in a namespace of the test's own.
@Suite(.serialized, Privileged.enabled)
struct ShaperKernelTests {
    /// An HTB root at the agent's handle with another default class: the kernel refuses to
    /// change an HTB root in place (planned as a replace before, which failed with EINVAL),
    /// so it is deleted and the tree made again.
    @Test func aRootOfOursWithAnotherDefaultClassIsMadeAgain() async throws {
        let ns = try Netns(prefix: "tdm-shp")
        defer { ns.delete() }
        try ns.ip("link add g0 type veth peer name g0p")
        try ns.ip("link set g0 up")
        try ns.tc("qdisc add dev g0 root handle 1: htb default 99")
        let shaper = try await Shaper(interface: "g0", namespace: ns.name)
        let tree = ShapingTree.desired(limit: .mbit(100), reservations: [])
        let ops = try await shaper.apply(tree)
        #expect(ops.first == .replaceRoot)
        #expect(try ns.tc("qdisc show dev g0").contains("default 0x" + String(ShapingTree.defaultMinor, radix: 16)))
        #expect(try await shaper.apply(tree).isEmpty, "applied twice: nothing to do")
    }
}
