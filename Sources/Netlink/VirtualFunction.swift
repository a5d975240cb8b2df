import TandemProtocol

/// One SR-IOV virtual function as its PF reports it (`ip link show PF`: `vf 3 link/ether
/// ... max_tx_rate 500Mbps, min_tx_rate 100Mbps, spoof checking on, link-state auto, trust off`).
public struct VirtualFunction: Hashable, Sendable {
    public var index: UInt32
    public var mac: String
    /// The NIC's TX limit; zero means unlimited.
    public var maxTxRate: BitRate
    /// The NIC's TX guarantee; zero means none.
    public var minTxRate: BitRate
    public var linkState: LinkState
    /// nil where the driver does not report it.
    public var trust: Bool?
    public var spoofCheck: Bool?
    /// nil when asked without stats (RTEXT_FILTER_SKIP_STATS) or not reported.
    public var stats: VFStats?

    public enum LinkState: UInt32, Hashable, Sendable { case auto = 0, enable = 1, disable = 2, unknown = 0xffff_ffff }
}

/// The VF's 64-bit counters (IFLA_VF_STATS).
public struct VFStats: Hashable, Sendable {
    public var rxPackets: UInt64 = 0
    public var txPackets: UInt64 = 0
    public var rxBytes: UInt64 = 0
    public var txBytes: UInt64 = 0
    public var broadcast: UInt64 = 0
    public var multicast: UInt64 = 0
    public var rxDropped: UInt64 = 0
    public var txDropped: UInt64 = 0
    public init() {}
}

/// VF rates travel as whole Mbit/s (`struct ifla_vf_rate`). Conversion, one way:
/// zero stays zero (unlimited / no guarantee); a nonzero rate below 1 Mbit/s becomes
/// 1 Mbit/s (never "unlimited" by accident); anything else rounds to the nearest Mbit/s,
/// halves up; above `UInt32.max` Mbit/s is refused by the caller's 10 Tbit/s bound.
public enum VFRate {
    public static func megabits(_ r: BitRate) -> UInt32 {
        if r.bitsPerSecond == 0 { return 0 }
        let m = (r.bitsPerSecond + 500_000) / 1_000_000
        return UInt32(clamping: max(m, 1))
    }
    public static func bitRate(megabits: UInt32) -> BitRate { .mbit(UInt64(megabits)) }
}

/// rtnetlink messages for VFs, as plain bytes (see Tests/NetlinkTests/Fixtures/VF-LAYOUT.md).
public enum VFMessages {
    static let RTM_NEWLINK: UInt16 = 16
    static let RTM_GETLINK: UInt16 = 18
    static let IFLA_IFNAME: UInt16 = 3
    static let IFLA_NUM_VF: UInt16 = 21
    static let IFLA_VFINFO_LIST: UInt16 = 22
    static let IFLA_EXT_MASK: UInt16 = 29
    static let IFLA_VF_INFO: UInt16 = 1
    static let IFLA_VF_MAC: UInt16 = 1
    static let IFLA_VF_TX_RATE: UInt16 = 3
    static let IFLA_VF_SPOOFCHK: UInt16 = 4
    static let IFLA_VF_LINK_STATE: UInt16 = 5
    static let IFLA_VF_RATE: UInt16 = 6
    static let IFLA_VF_STATS: UInt16 = 8
    static let IFLA_VF_TRUST: UInt16 = 9
    public static let RTEXT_FILTER_VF: UInt32 = 1
    public static let RTEXT_FILTER_SKIP_STATS: UInt32 = 8

    /// `struct ifinfomsg` for a request on one interface.
    static func ifinfomsg(index: Int32) -> [UInt8] {
        var b: [UInt8] = [0, 0, 0, 0]           // family AF_UNSPEC, pad, type
        b.appendLE(UInt32(bitPattern: index))   // ifi_index
        b.appendLE(UInt32(0))                   // ifi_flags
        b.appendLE(UInt32(0))                   // ifi_change
        return b
    }

    /// The body (after the nlmsghdr) of RTM_NEWLINK setting a VF's rates: what
    /// `ip link set dev PF vf N max_tx_rate MAX min_tx_rate MIN` sends.
    public static func setRateBody(ifindex: Int32, vf: UInt32, minMbit: UInt32, maxMbit: UInt32) -> [UInt8] {
        var w = NetlinkAttributeWriter()
        w.nest(IFLA_VFINFO_LIST) { list in
            list.nest(IFLA_VF_INFO) { info in
                var rate: [UInt8] = []
                rate.appendLE(vf); rate.appendLE(minMbit); rate.appendLE(maxMbit)
                info.put(IFLA_VF_RATE, rate)
            }
        }
        return ifinfomsg(index: ifindex) + w.bytes
    }

    /// The body of RTM_GETLINK for one interface with its VF list, with or without stats.
    public static func getLinkBody(ifindex: Int32, withStats: Bool) -> [UInt8] {
        var w = NetlinkAttributeWriter()
        w.putU32(IFLA_EXT_MASK, RTEXT_FILTER_VF | (withStats ? 0 : RTEXT_FILTER_SKIP_STATS))
        return ifinfomsg(index: ifindex) + w.bytes
    }

    /// A whole message: nlmsghdr (length, type, flags, seq, port id) and body.
    public static func message(type: UInt16, flags: UInt16, seq: UInt32, port: UInt32, body: [UInt8]) -> [UInt8] {
        var m: [UInt8] = []
        m.appendLE(UInt32(16 + body.count)); m.appendLE(type); m.appendLE(flags); m.appendLE(seq); m.appendLE(port)
        return m + body
    }

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Splits a link's attributes, finding IFLA_VFINFO_LIST even when its length wrapped.
    ///
    /// The kernel writes a nest's 16-bit length with whatever the nest grew to, modulo
    /// 65,536: a PF with 256 VFs and their stats has a VF list of about 80 KiB whose length
    /// field says about 14 KiB. The true end is the declared one plus a multiple of 65,536
    /// at which the list's own entries and the attributes after it both parse exactly.
    static func topLevel(_ bytes: ArraySlice<UInt8>) -> ([NetlinkAttribute], NetlinkAttribute?) {
        var attrs: [NetlinkAttribute] = []
        var i = bytes.startIndex
        while i + 4 <= bytes.endIndex {
            guard let declared = bytes.readLE(UInt16.self, at: i - bytes.startIndex),
                  let rawType = bytes.readLE(UInt16.self, at: i - bytes.startIndex + 2), declared >= 4 else { break }
            let type = rawType & 0x3fff
            var length = Int(declared)
            if type == IFLA_VFINFO_LIST {
                var k = 0
                while k < 16 {
                    let end = i + Int(declared) + k * 65_536
                    if end > bytes.endIndex { break }
                    let inner = NetlinkAttribute.parseCounting(bytes[(i + 4)..<end])
                    let after = NetlinkAttribute.parseCounting(bytes[min((end + 3) & ~3, bytes.endIndex)...])
                    if inner.end == end && after.end == bytes.endIndex && inner.attributes.allSatisfy({ $0.type == IFLA_VF_INFO }) {
                        length = end - i
                        break
                    }
                    k += 1
                }
            }
            guard i + length <= bytes.endIndex else { break }
            let a = NetlinkAttribute(type: type, payload: bytes[(i + 4)..<(i + length)])
            if type == IFLA_VFINFO_LIST { return (attrs + NetlinkAttribute.parse(bytes[min((i + length + 3) & ~3, bytes.endIndex)...]), a) }
            attrs.append(a)
            i = min(i + ((length + 3) & ~3), bytes.endIndex)
        }
        return (attrs, nil)
    }

    /// Reads the VF part of an RTM_NEWLINK reply (nlmsghdr included). A link without VFs
    /// (no IFLA_VFINFO_LIST, or an empty one) yields none. VFs are identified by the `vf`
    /// field in their structs, not their position: the kernel skips VFs it cannot read.
    public static func parseLinkReply(_ message: [UInt8]) throws(ParseError) -> (ifindex: Int32, numVFs: UInt32?, vfs: [VirtualFunction]) {
        guard message.count >= 32, let len = message.readLE(UInt32.self, at: 0), Int(len) <= message.count,
              let type = message.readLE(UInt16.self, at: 4) else {
            throw ParseError(description: "reply of \(message.count) bytes is too short for an RTM_NEWLINK message")
        }
        guard type == RTM_NEWLINK else { throw ParseError(description: "reply has type \(type), not RTM_NEWLINK (16)") }
        let ifindex = Int32(bitPattern: message.readLE(UInt32.self, at: 20) ?? 0)
        let (attrs, list) = topLevel(message[32..<Int(len)])
        let numVFs = attrs.first { $0.type == IFLA_NUM_VF }?.u32()
        guard let list else { return (ifindex, numVFs, []) }
        var vfs: [VirtualFunction] = []
        for info in list.nested where info.type == IFLA_VF_INFO {
            var vf = VirtualFunction(index: 0, mac: "", maxTxRate: .zero, minTxRate: .zero, linkState: .auto)
            var haveIndex = false, haveRate = false
            for a in info.nested {
                switch a.type {
                case IFLA_VF_MAC:
                    guard let i = a.u32(), a.payload.count >= 10 else { continue }
                    vf.index = i; haveIndex = true
                    let mac = a.payload.dropFirst(4).prefix(6)
                    vf.mac = mac.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined(separator: ":")
                case IFLA_VF_RATE:
                    guard let i = a.u32(), let mn = a.u32(at: 4), let mx = a.u32(at: 8) else { continue }
                    vf.index = i; haveIndex = true; haveRate = true
                    vf.minTxRate = VFRate.bitRate(megabits: mn)
                    vf.maxTxRate = VFRate.bitRate(megabits: mx)
                case IFLA_VF_TX_RATE where !haveRate:
                    guard let mx = a.u32(at: 4) else { continue }
                    vf.maxTxRate = VFRate.bitRate(megabits: mx)
                case IFLA_VF_SPOOFCHK:
                    if let s = a.u32(at: 4), s != 0xffff_ffff { vf.spoofCheck = s != 0 }
                case IFLA_VF_TRUST:
                    if let s = a.u32(at: 4), s != 0xffff_ffff { vf.trust = s != 0 }
                case IFLA_VF_LINK_STATE:
                    if let s = a.u32(at: 4) { vf.linkState = VirtualFunction.LinkState(rawValue: s) ?? .unknown }
                case IFLA_VF_STATS:
                    var st = VFStats()
                    for s in a.nested {
                        guard let v = s.u64() else { continue }
                        switch s.type {
                        case 0: st.rxPackets = v
                        case 1: st.txPackets = v
                        case 2: st.rxBytes = v
                        case 3: st.txBytes = v
                        case 4: st.broadcast = v
                        case 5: st.multicast = v
                        case 7: st.rxDropped = v
                        case 8: st.txDropped = v
                        default: break   // 6 is padding; newer kernels may add more
                        }
                    }
                    vf.stats = st
                default: break
                }
            }
            if haveIndex { vfs.append(vf) }
        }
        return (ifindex, numVFs, vfs.sorted { $0.index < $1.index })
    }
}
