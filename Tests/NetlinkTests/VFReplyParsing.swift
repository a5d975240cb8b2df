import Foundation
import Testing
import Netlink
import TandemProtocol
import TandemTestSupport
import TandemLabSupport

@Suite struct VFReplyParsing {
    @Test(arguments: ["kernel-getlink-veth-novf", "kernel-getlink-veth-novf-skipstats"])
    func kernelReplyOfLinkWithoutVFsHasNone(fixture: String) throws {
        let r = try VFMessages.parseLinkReply(try Fixture.bytes(fixture))
        #expect(r.ifindex == 3)
        #expect(r.numVFs == nil)
        #expect(r.vfs.isEmpty)
    }

    /// A PF reply laid out as the kernel's rtnl_fill_vfinfo writes it (Fixtures/VF-LAYOUT.md),
    /// built here because no NIC on these machines has VFs. It is tested against a real
    /// driver (netdevsim) in the VM issue.
    static func syntheticPF(vfs count: Int, stats: Bool, skip: Set<Int> = []) -> [UInt8] {
        var w = NetlinkAttributeWriter()
        w.put(3, Array("pf0\0".utf8))                       // IFLA_IFNAME
        w.putU32(21, UInt32(count))                         // IFLA_NUM_VF
        w.nest(22) { list in                                 // IFLA_VFINFO_LIST
            for i in 0..<count where !skip.contains(i) {
                list.nest(1) { info in                       // IFLA_VF_INFO
                    var mac = le(UInt32(i)) + [0x52, 0x54, 0x00, 0xaa, UInt8(i >> 8), UInt8(i & 0xff)]
                    mac += Array(repeating: 0, count: 26)
                    info.put(1, mac)                                        // IFLA_VF_MAC
                    info.put(13, Array(repeating: 0xff, count: 32))         // IFLA_VF_BROADCAST
                    info.put(2, le(UInt32(i)) + le(UInt32(0)) + le(UInt32(0)))  // IFLA_VF_VLAN
                    info.put(6, le(UInt32(i)) + le(UInt32(i % 7)) + le(UInt32(100 + i)))  // IFLA_VF_RATE vf,min,max
                    info.put(3, le(UInt32(i)) + le(UInt32(100 + i)))         // IFLA_VF_TX_RATE
                    info.put(4, le(UInt32(i)) + le(UInt32(i % 2)))           // IFLA_VF_SPOOFCHK
                    info.put(5, le(UInt32(i)) + le(UInt32(2)))               // IFLA_VF_LINK_STATE disable
                    info.put(7, le(UInt32(i)) + le(UInt32(0xffff_ffff)))     // IFLA_VF_RSS_QUERY_EN
                    info.put(9, le(UInt32(i)) + le(UInt32(0xffff_ffff)))     // IFLA_VF_TRUST not reported
                    if stats {
                        info.nest(8) { s in                                  // IFLA_VF_STATS
                            for t: UInt16 in [0, 1, 2, 3, 4, 5, 7, 8] { s.put(t, le(UInt64(i) << 32 | UInt64(t))) }
                        }
                    }
                    info.nest(12) { v in v.put(1, le(UInt32(i)) + Array(repeating: 0, count: 12)) }  // IFLA_VF_VLAN_LIST
                }
            }
        }
        w.put(0x8000 | 62, [])                                   // a newer kernel's nest type: skipped
        let body: [UInt8] = [0, 0, 1, 0] + le(UInt32(7)) + le(UInt32(0x1043)) + le(UInt32(0)) + w.bytes
        return VFMessages.message(type: 16, flags: 0, seq: 1, port: 1, body: body)
    }

    static func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

    @Test(arguments: [true, false])
    func twoHundredFiftySixVFs(stats: Bool) throws {
        let reply = Self.syntheticPF(vfs: 256, stats: stats)
        if stats {
            #expect(reply.count > 65_536, "larger than the 64 KiB that broke other libraries: the list's length wraps")
        } else {
            #expect(reply.count < 65_536, "without stats 256 VFs fit a 16-bit nest length")
        }
        let r = try VFMessages.parseLinkReply(reply)
        #expect(r.ifindex == 7)
        #expect(r.numVFs == 256)
        #expect(r.vfs.count == 256)
        let vf200 = r.vfs[200]
        #expect(vf200.index == 200)
        #expect(vf200.mac == "52:54:00:aa:00:c8")
        #expect(vf200.maxTxRate == .mbit(300))
        #expect(vf200.minTxRate == .mbit(200 % 7))
        #expect(vf200.spoofCheck == false)
        #expect(vf200.trust == nil)
        #expect(vf200.linkState == .disable)
        if stats {
            #expect(vf200.stats?.txBytes == 200 << 32 | 3)
            #expect(vf200.stats?.rxDropped == 200 << 32 | 7)
        } else {
            #expect(vf200.stats == nil)
        }
        #expect(r.vfs.map(\.index) == (0..<256).map(UInt32.init))
    }

    @Test func skippedVFsAreIdentifiedByTheirIndexNotPosition() throws {
        let r = try VFMessages.parseLinkReply(Self.syntheticPF(vfs: 8, stats: false, skip: [2, 5]))
        #expect(r.numVFs == 8)
        #expect(r.vfs.map(\.index) == [0, 1, 3, 4, 6, 7])
        #expect(r.vfs.allSatisfy { $0.stats == nil })
        #expect(r.vfs[2].maxTxRate == .mbit(103))
    }

    @Test func truncatedOrCorruptRepliesNeverReadOutOfBounds() throws {
        let full = Self.syntheticPF(vfs: 4, stats: true)
        for cut in stride(from: 0, to: full.count, by: 13) {
            var m = Array(full.prefix(cut))
            if m.count >= 4 { m.replaceSubrange(0..<4, with: Self.le(UInt32(m.count))) }
            _ = try? VFMessages.parseLinkReply(m)
        }
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            var m = full
            for _ in 0..<8 { m[Int.random(in: 32..<m.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            _ = try? VFMessages.parseLinkReply(m)
        }
        #expect(throws: VFMessages.ParseError.self) { try VFMessages.parseLinkReply([1, 2, 3]) }
    }
}
