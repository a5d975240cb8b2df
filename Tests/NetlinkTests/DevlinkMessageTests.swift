import Foundation
import Testing
import Netlink
import TandemProtocol
import TandemTestSupport

/// devlink rate messages against bytes recorded from iproute2's `devlink` (6.1) and the
/// kernel (Debian's 6.1 with netdevsim, in deploy/qemu's guest) with `strace -xx`, on
/// 2026-12-07. Each is a generic netlink message without its nlmsghdr: `genlmsghdr`, then
/// attributes. VMTests.devlinkBackendDrivesNetdevsimRateLeavesAndNodes compares them live.
@Suite struct DevlinkMessageTests {
    static func hex(_ s: String) -> [UInt8] {
        stride(from: 0, to: s.count, by: 2).map { UInt8(s.dropFirst($0).prefix(2), radix: 16)! }
    }
    /// A whole message as the dump hands it over: a (zeroed) nlmsghdr first.
    static func message(_ body: [UInt8]) -> ArraySlice<UInt8> { ArraySlice([UInt8](repeating: 0, count: 16) + body) }

    /// `devlink port function rate set netdevsim/netdevsim11/131 tx_share 100mbit tx_max 200mbit`.
    static let iproute2LeafSet = hex("4b0000000e0001006e657464657673696d000000100002006e657464657673696d31310008000300830000000c00a60020bcbe00000000000c00a70040787d0100000000")
    /// The kernel's dump: node tandem-t1 (share 1gbit, max 2gbit); leaf 128 in it (share 500mbit, max 2gbit).
    static let kernelNode = hex("4c0100000e0001006e657464657673696d000000100002006e657464657673696d3131000600a500010000000e00a80074616e64656d2d74310000000c00a60040597307000000000c00a70080b2e60e00000000")
    static let kernelLeaf = hex("4c0100000e0001006e657464657673696d000000100002006e657464657673696d3131000600a5000000000008000300800000000c00a600a0acb903000000000c00a70080b2e60e000000000e00a90074616e64656d2d7431000000")

    @Test func leafSetIsIproute2sBytesButTheVersion() {
        let ours = DevlinkMessages.setBody(bus: "netdevsim", device: "netdevsim11", .leaf(port: 131),
                                           DevlinkRateChange(txShare: DevlinkRate.bytesPerSecond(.mbit(100)), txMax: DevlinkRate.bytesPerSecond(.mbit(200))))
        // devlink 6.1 sends version 0; Tandem the family's version, 1. The kernel reads neither.
        #expect(ours[1] == DevlinkMessages.version)
        var theirs = Self.iproute2LeafSet
        theirs[1] = DevlinkMessages.version
        #expect(ours == theirs)
    }

    @Test func weightIsSentOnlyAsAsked() {
        let with = DevlinkMessages.setBody(bus: "pci", device: "0000:03:00.0", .node(name: "tandem-a"), DevlinkRateChange(txWeight: 3))
        let attrs = NetlinkAttribute.parse(with.dropFirst(4))
        #expect(attrs.map(\.type) == [1, 2, 168, DevlinkMessages.ATTR_RATE_TX_WEIGHT])
        #expect(attrs.last?.u32() == 3)
        let without = DevlinkMessages.setBody(bus: "pci", device: "0000:03:00.0", .node(name: "tandem-a"), DevlinkRateChange(txMax: 0))
        #expect(!NetlinkAttribute.parse(without.dropFirst(4)).contains { $0.type == DevlinkMessages.ATTR_RATE_TX_WEIGHT })
    }

    @Test func kernelRepliesParse() throws {
        let node = try #require(DevlinkMessages.parseRate(Self.message(Self.kernelNode)))
        #expect(node == DevlinkRate(bus: "netdevsim", device: "netdevsim11", object: .node(name: "tandem-t1"),
                                    txShare: DevlinkRate.bytesPerSecond(.gbit(1)), txMax: DevlinkRate.bytesPerSecond(.gbit(2))))
        #expect(node.handle == "netdevsim/netdevsim11/tandem-t1")
        let leaf = try #require(DevlinkMessages.parseRate(Self.message(Self.kernelLeaf)))
        #expect(leaf.object == .leaf(port: 128) && leaf.parent == "tandem-t1" && leaf.txWeight == nil)
        #expect(DevlinkRate.bitRate(bytesPerSecond: leaf.txShare) == .mbit(500) && DevlinkRate.bitRate(bytesPerSecond: leaf.txMax) == .gbit(2))
    }

    /// A reply cut anywhere never reads out of bounds; one without its handle or object is nil.
    @Test func truncatedRepliesAreRefusedNotRead() {
        for n in 0..<Self.kernelLeaf.count {
            let cut = Array(Self.kernelLeaf.prefix(n))
            if let r = DevlinkMessages.parseRate(Self.message(cut)) {
                // Only cuts past the port index can still name the leaf.
                #expect(r.object == .leaf(port: 128) && n >= 52)
            }
        }
        #expect(DevlinkMessages.parsePort(Self.message(Self.kernelNode)) == nil, "a rate reply has no port index")
    }

    /// Rates go out as whole Mbit/s (netdevsim and mlx5 refuse anything else), never 0 for
    /// a rate that is not 0.
    @Test func ratesAreWholeMegabits() {
        #expect(DevlinkRate.bytesPerSecond(.zero) == 0)
        #expect(DevlinkRate.bytesPerSecond(BitRate(bitsPerSecond: 1)) == 125_000)
        #expect(DevlinkRate.bytesPerSecond(BitRate(bitsPerSecond: 1_499_999)) == 125_000)
        #expect(DevlinkRate.bytesPerSecond(BitRate(bitsPerSecond: 1_500_000)) == 250_000)
        #expect(DevlinkRate.bytesPerSecond(.gbit(10)) % 125_000 == 0)
    }

    /// Against this machine's kernel: the family is found and dumps come back (no devices:
    /// nothing), or a kernel without devlink says so by name. A route socket is refused.
    @Test(.enabled(if: Privileged.canRun || Privileged.isCI, "needs root"))
    func theKernelAnswersOrSaysItHasNoDevlink() async throws {
        let generic = try RouteSocket(protocol: .generic)
        do {
            let rates = try await generic.devlinkRates()
            let ports = try await generic.devlinkPorts()
            print("devlink: \(ports.count) ports, \(rates.count) rate objects on this machine")
        } catch {
            #expect("\(error)".contains("no devlink"), "\(error)")
        }
        let route = try RouteSocket()
        await #expect(throws: NetlinkError.self) { try await route.devlinkRates() }
    }
}
