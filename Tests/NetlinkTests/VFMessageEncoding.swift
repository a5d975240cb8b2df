import Foundation
import Testing
import Netlink
import TandemProtocol
import TandemTestSupport
import TandemLabSupport

enum Fixture {
    static func bytes(_ name: String) throws -> [UInt8] {
        let url = try #require(Bundle.module.url(forResource: name, withExtension: "hex", subdirectory: "Fixtures"))
        let hex = try String(contentsOf: url, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        var out: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            out.append(try #require(UInt8(hex[i..<j], radix: 16)))
            i = j
        }
        return out
    }

    /// Zeroes nlmsg_seq and nlmsg_pid (bytes 8..15): they differ per run.
    static func normalised(_ m: [UInt8]) -> [UInt8] {
        var m = m
        for k in 8..<16 { m[k] = 0 }
        return m
    }
}

@Suite struct VFMessageEncoding {
    /// Requests byte for byte what `ip link set dev vfa vf N max_tx_rate X min_tx_rate Y`
    /// sent (recorded with strace, Fixtures/README.md); vfa had ifindex 3.
    @Test(arguments: [
        ("ip-vf-rate-3-500-100", UInt32(3), UInt32(500), UInt32(100)),
        ("ip-vf-rate-0-0-0", 0, 0, 0),
        ("ip-vf-rate-255-10000-10000", 255, 10000, 10000),
    ])
    func setRateMatchesIproute2(fixture: String, vf: UInt32, maxMbit: UInt32, minMbit: UInt32) throws {
        let ours = VFMessages.message(type: 16, flags: 0x5, seq: 0, port: 0,
                                      body: VFMessages.setRateBody(ifindex: 3, vf: vf, minMbit: minMbit, maxMbit: maxMbit))
        #expect(ours == Fixture.normalised(try Fixture.bytes(fixture)))
    }

    @Test(arguments: [
        (UInt64(0), UInt32(0)), (1, 1), (999_999, 1), (1_000_000, 1), (1_499_999, 1), (1_500_000, 2),
        (500_000_000, 500), (10_000_000_000_000, 10_000_000),
    ])
    func ratesRoundToMegabits(bits: UInt64, mbit: UInt32) {
        #expect(VFRate.megabits(BitRate(bitsPerSecond: bits)) == mbit)
    }

    @Test func getLinkRequestMatchesRecordedRequest() throws {
        // Fixtures/getlink-request-vf*.hex were sent by the recorder with IFLA_EXT_MASK only.
        let withStats = VFMessages.message(type: 18, flags: 0x1, seq: 0, port: 0, body: VFMessages.getLinkBody(ifindex: 3, withStats: true))
        let skip = VFMessages.message(type: 18, flags: 0x1, seq: 0, port: 0, body: VFMessages.getLinkBody(ifindex: 3, withStats: false))
        #expect(withStats == Fixture.normalised(try Fixture.bytes("getlink-request-vf")))
        #expect(skip == Fixture.normalised(try Fixture.bytes("getlink-request-vf-skipstats")))
    }
}
