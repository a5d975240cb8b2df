import CKernel
import TandemProtocol
#if canImport(Glibc)
import Glibc
#endif

/// One socket as NETLINK_SOCK_DIAG reports it, with the TCP figures the agent's demand
/// estimate needs.
public struct SocketInfo: Hashable, Sendable {
    public var flow: FlowKey
    /// TCP state number (1 = ESTABLISHED); 7 (CLOSE) for unconnected UDP.
    public var state: UInt8
    public var uid: UInt32
    public var inode: UInt32
    /// TCP only (from the kernel's struct tcp_info); nil for UDP.
    public var tcp: TCPInfo?
}

public struct TCPInfo: Hashable, Sendable {
    /// Bytes the peer acknowledged.
    public var bytesAcked: UInt64
    /// Bytes sent, retransmissions included.
    public var bytesSent: UInt64
    public var bytesRetransmitted: UInt64
    /// Bytes written by the application and not yet sent.
    public var notSentBytes: UInt32
    /// The kernel's most recent delivery-rate sample.
    public var deliveryRate: BitRate
    public var pacingRate: BitRate
    /// The delivery-rate sample was limited by the application, not the network: the
    /// flow does not want more than it gets.
    public var appLimited: Bool
    public var rttMicroseconds: UInt32
    public var congestionWindow: UInt32
    public var unacked: UInt32
}

/// A NETLINK_SOCK_DIAG socket (raw: libnl-idiag sends the legacy request and parses a
/// truncated glibc tcp_info). Like ``RouteSocket`` it belongs to the namespace it was
/// opened in, and has one owner.
public actor SocketDiagnostics {
    let fd: Int32
    /// Most sockets returned per dump; the rest are counted but not decoded.
    public let capacity: Int
    nonisolated(unsafe) let buffer: UnsafeMutablePointer<tandem_sock_info>

    public init(namespace: String? = nil, capacity: Int = 8192) throws(NetlinkError) {
        let open = { tandem_sock_diag_open() }
        let fd: Int32
        if let namespace {
            do { fd = try NetworkNamespace.run(in: namespace, open) } catch {
                throw (error as? NetlinkError) ?? NetlinkError(operation: "setns", object: namespace, errno: EINVAL)
            }
        } else {
            fd = open()
        }
        guard fd >= 0 else { throw NetlinkError(operation: "socket(NETLINK_SOCK_DIAG)", object: "", errno: -fd) }
        self.fd = fd
        self.capacity = capacity
        self.buffer = .allocate(capacity: capacity)
    }

    deinit {
        close(fd)
        buffer.deallocate()
    }

    /// `ss -tni` / `ss -uan`: sockets of a protocol in both address families.
    /// TCP: established and closing states only (those that send); UDP: all.
    /// - Returns: the sockets decoded, and how many the kernel reported in all.
    public func sockets(_ proto: FlowProtocol) throws(NetlinkError) -> (sockets: [SocketInfo], total: Int) {
        guard proto != .any else { throw NetlinkError.invalid("SOCK_DIAG_BY_FAMILY", "any", "ask for tcp or udp") }
        let ipproto: UInt8 = proto == .tcp ? UInt8(IPPROTO_TCP) : UInt8(IPPROTO_UDP)
        // TCP_ESTABLISHED(1), FIN_WAIT1(4), CLOSE_WAIT(8), CLOSING(11): the states that send.
        let states: UInt32 = proto == .tcp ? (1 << 1 | 1 << 4 | 1 << 8 | 1 << 11) : 0xffff_ffff
        var out: [SocketInfo] = []
        var total = 0
        for family in [UInt8(AF_INET), UInt8(AF_INET6)] {
            var seen: Int32 = 0
            let n = tandem_sock_diag_dump(fd, family, ipproto, states, buffer, Int32(capacity - out.count), &seen)
            guard n >= 0 else {
                throw NetlinkError(operation: "SOCK_DIAG_BY_FAMILY", object: "\(proto) \(family == UInt8(AF_INET) ? "ipv4" : "ipv6")", errno: -n)
            }
            total += Int(seen)
            for i in 0..<Int(n) { out.append(Self.decode(buffer[i], proto)) }
        }
        return (out, total)
    }

    static func decode(_ s: tandem_sock_info, _ proto: FlowProtocol) -> SocketInfo {
        func address(_ t: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)) -> IPAddress {
            let b = withUnsafeBytes(of: t) { Array($0) }
            if s.family == UInt8(AF_INET) { return .v4(UInt32(b[0]) << 24 | UInt32(b[1]) << 16 | UInt32(b[2]) << 8 | UInt32(b[3])) }
            return .v6(b)
        }
        let flow = FlowKey(proto: proto, source: address(s.src), sourcePort: s.sport, destination: address(s.dst), destinationPort: s.dport)
        var tcp: TCPInfo? = nil
        if s.has_tcp_info != 0 {
            tcp = TCPInfo(
                bytesAcked: s.bytes_acked, bytesSent: s.bytes_sent, bytesRetransmitted: s.bytes_retrans,
                notSentBytes: s.notsent_bytes,
                deliveryRate: BitRate(bitsPerSecond: s.delivery_rate &* 8), pacingRate: BitRate(bitsPerSecond: s.pacing_rate == .max ? .max : s.pacing_rate &* 8),
                appLimited: s.app_limited != 0, rttMicroseconds: s.rtt_us, congestionWindow: s.snd_cwnd, unacked: s.unacked)
        }
        return SocketInfo(flow: flow, state: s.state, uid: s.uid, inode: s.inode, tcp: tcp)
    }
}

/// A TCP socket the kernel destroyed, as sock_diag announces it to the groups
/// SKNLGRP_INET_TCP_DESTROY and SKNLGRP_INET6_TCP_DESTROY: a flow that ended. A socket is
/// destroyed once what it held has gone out and its FIN was answered (a process killed
/// mid-transfer: after its queue drained), so the flow sends nothing more from then on.
public enum SocketClosed: Equatable, Sendable {
    case closed(FlowKey)
    /// Announcements were lost (the socket's buffer or the stream's was full).
    case overrun

    static let SOCK_DIAG_BY_FAMILY = 20
    /// SKNLGRP_INET_TCP_DESTROY and SKNLGRP_INET6_TCP_DESTROY.
    static let tcpGroups: [UInt32] = [1, 3]

    /// Parses one SOCK_DIAG_BY_FAMILY message (nlmsghdr, then struct inet_diag_msg: family,
    /// state, timer, retrans; inet_diag_sockid: sport, dport (network order), src[16],
    /// dst[16], if, cookie[2]; expires, rqueue, wqueue, uid, inode); nil for another message
    /// or one too short.
    public static func parse(_ m: UnsafeRawBufferPointer) -> SocketClosed? {
        guard m.count >= 16 + 72, Int(m.loadUnaligned(fromByteOffset: 4, as: UInt16.self)) == SOCK_DIAG_BY_FAMILY,
              Int(m.loadUnaligned(fromByteOffset: 0, as: UInt32.self)) >= 16 + 72 else { return nil }
        let family = m[16]
        guard family == UInt8(AF_INET) || family == UInt8(AF_INET6) else { return nil }
        func port(_ at: Int) -> UInt16 { UInt16(m[at]) << 8 | UInt16(m[at + 1]) }
        func address(_ at: Int) -> IPAddress {
            if family == UInt8(AF_INET) { return .v4(UInt32(m[at]) << 24 | UInt32(m[at + 1]) << 16 | UInt32(m[at + 2]) << 8 | UInt32(m[at + 3])) }
            return .v6(Array(m[at..<(at + 16)]))
        }
        return .closed(FlowKey(proto: .tcp, source: address(24), sourcePort: port(20), destination: address(40), destinationPort: port(22)))
    }
}

/// Listens for TCP sockets the kernel destroys (``SocketClosed``) in the caller's network
/// namespace or a named one. Any user may (the groups take listeners without privileges);
/// without CAP_NET_ADMIN the socket keeps the default buffer, a few hundred announcements.
public typealias SocketCloseMonitor = NetlinkListener<SocketClosed>

extension NetlinkListener where Event == SocketClosed {
    /// `listening`: whether it is in the groups from the start (see ``listen(_:)``).
    public convenience init(namespace: String? = nil, listening: Bool = true) throws(NetlinkError) {
        let bits = listening ? SocketClosed.tcpGroups.reduce(UInt32(0)) { $0 | 1 << ($1 - 1) } : 0
        try self.init(namespace: namespace, protocol: 4 /* NETLINK_SOCK_DIAG */, groups: bits, what: "NETLINK_SOCK_DIAG groups tcp destroy",
                      overrun: .overrun, name: "tandem-socket-monitor", parse: SocketClosed.parse)
    }

    /// Joins or leaves the destroy groups. While a listener is in them the kernel hands every
    /// TCP socket's end to a workqueue to announce it: a guest's agent listens only while a
    /// flow whose end matters is there.
    public func listen(_ on: Bool) {
        for g in SocketClosed.tcpGroups { setMembership(group: g, on) }
    }
}
