import CNetlink
import TandemProtocol
#if canImport(Glibc)
import Glibc
#endif

extension RouteSocket {
    /// `ip -s link show dev PF`, the VF lines (RTM_GETLINK with IFLA_EXT_MASK =
    /// RTEXT_FILTER_VF, plus RTEXT_FILTER_SKIP_STATS unless `withStats`).
    ///
    /// Built by hand rather than through rtnl_link_vf_get, which crashes on a link without
    /// a VF list; libnl peeks at each message's size, so a PF with 256 VFs and their
    /// stats (well over 64 KiB) is read whole.
    public func virtualFunctions(of pf: String, withStats: Bool = true) throws(NetlinkError) -> [VirtualFunction] {
        let index = try index(of: pf)
        let body = VFMessages.getLinkBody(ifindex: index, withStats: withStats)
        let replies = try request(type: VFMessages.RTM_GETLINK, body: body, operation: "RTM_GETLINK", object: "dev \(pf) (VFs)")
        guard let reply = replies.first(where: { $0.readLE(UInt16.self, at: 4) == VFMessages.RTM_NEWLINK }) else {
            throw NetlinkError(operation: "RTM_GETLINK", object: "dev \(pf)", errno: 0, detail: "no RTM_NEWLINK in the reply")
        }
        do {
            return try VFMessages.parseLinkReply(reply).vfs
        } catch {
            throw NetlinkError(operation: "RTM_GETLINK", object: "dev \(pf)", errno: EPROTO, detail: error.description)
        }
    }

    /// `ip link set dev PF vf N max_tx_rate MAX min_tx_rate MIN` (RTM_NEWLINK with
    /// IFLA_VFINFO_LIST > IFLA_VF_INFO > IFLA_VF_RATE, Mbit/s; see ``VFRate`` for rounding).
    ///
    /// The kernel sets min and max together and clears the one left out, so both are always
    /// sent: when `min` is nil the VF's current minimum is read first and kept.
    /// A minimum above a nonzero maximum is refused before anything is sent.
    public func setVFRate(pf: String, vf: UInt32, max: BitRate, min: BitRate? = nil) throws(NetlinkError) {
        let object = "dev \(pf) vf \(vf) max_tx_rate \(max) min_tx_rate \(min.map(\.description) ?? "(kept)")"
        guard max <= .protocolMaximum, (min ?? .zero) <= .protocolMaximum else {
            throw NetlinkError.invalid("RTM_NEWLINK", object, "rates above 10tbit are not rates a NIC takes")
        }
        let maxM = VFRate.megabits(max)
        var minM: UInt32
        if let min {
            minM = VFRate.megabits(min)
        } else {
            guard let current = try virtualFunctions(of: pf, withStats: false).first(where: { $0.index == vf }) else {
                throw NetlinkError(operation: "RTM_GETLINK", object: "dev \(pf) vf \(vf)", errno: ENODEV, detail: "no such VF")
            }
            minM = VFRate.megabits(current.minTxRate)
            // A kept minimum above the new maximum would be refused: lower it with the max.
            if maxM != 0 && minM > maxM { minM = maxM }
        }
        if maxM != 0 && minM > maxM {
            throw NetlinkError.invalid("RTM_NEWLINK", object, "min_tx_rate \(minM)Mbit is above max_tx_rate \(maxM)Mbit")
        }
        let index = try index(of: pf)
        _ = try request(type: VFMessages.RTM_NEWLINK, body: VFMessages.setRateBody(ifindex: index, vf: vf, minMbit: minM, maxMbit: maxM),
                        operation: "RTM_NEWLINK", object: object, expectAck: true)
    }

    /// Sends a message whose body was built in Swift; libnl fills the header (sequence
    /// number, port, NLM_F_REQUEST|NLM_F_ACK) and matches the replies to it.
    func request(type: UInt16, flags: Int32 = 0, body: [UInt8], operation: String, object: String, expectAck: Bool = false) throws(NetlinkError) -> [[UInt8]] {
        guard let msg = nlmsg_alloc_simple(Int32(type), flags) else { throw NetlinkError(operation: operation, object: object, errno: ENOMEM) }
        defer { nlmsg_free(msg) }
        let rc = body.withUnsafeBytes { nlmsg_append(msg, UnsafeMutableRawPointer(mutating: $0.baseAddress), $0.count, Int32(NLMSG_ALIGNTO)) }
        try check(rc, operation, object)
        if expectAck {
            prepare()
            var sent = nl_send_auto(sock, msg)
            if sent >= 0 { sent = nl_wait_for_ack(sock) }
            try check(sent, operation, object)
            return []
        }
        return try rawRequest(msg, operation, object)
    }
}
