import CNetlink
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A change the kernel announced on rtnetlink's link and tc multicast groups, as far as a
/// controller needs it to notice a device or a tc object of its own changed by someone else.
public enum RouteEvent: Equatable, Sendable {
    public enum TCObject: Equatable, Sendable { case qdisc, tclass, filter }

    /// RTM_NEWLINK / RTM_DELLINK: an interface made, changed or deleted; `up` is IFF_UP.
    case link(deleted: Bool, index: Int32, name: String, up: Bool, sender: UInt32)
    /// RTM_NEW/DEL QDISC, TCLASS, TFILTER on an interface.
    case tc(TCObject, deleted: Bool, ifindex: Int32, handle: TCHandle, parent: TCHandle, sender: UInt32)
    /// The socket's buffer overflowed (ENOBUFS): events were lost, look at everything.
    case overrun

    /// The netlink port of the socket whose request caused the change, or 0. tc
    /// notifications carry the requester's port in nlmsg_pid; link notifications carry it
    /// only for links made or deleted, and only on newer kernels (about 6.3): a link set up
    /// or down, a carrier change, or any link event on an older kernel says 0.
    public var sender: UInt32 {
        switch self {
        case .link(_, _, _, _, let s), .tc(_, _, _, _, _, let s): s
        case .overrun: 0
        }
    }

    /// Parses one notification (netlink header and body); nil for any other message or one
    /// too short to be one. Reads only within the message's own length.
    public static func parse(_ m: UnsafeRawBufferPointer) -> RouteEvent? {
        guard m.count >= 16 else { return nil }
        let length = min(m.count, Int(m.loadUnaligned(fromByteOffset: 0, as: UInt32.self)))
        let type = Int(m.loadUnaligned(fromByteOffset: 4, as: UInt16.self))
        let sender = m.loadUnaligned(fromByteOffset: 12, as: UInt32.self)
        switch type {
        case RTM_NEWLINK, RTM_DELLINK:
            // struct ifinfomsg: family u8, pad u8, type u16, index i32, flags u32, change u32.
            // Only the interface's own (AF_UNSPEC): a bridge says AF_BRIDGE when a port joins
            // or leaves it, and that RTM_DELLINK is no deletion of the interface.
            guard length >= 32, m.load(fromByteOffset: 16, as: UInt8.self) == UInt8(AF_UNSPEC) else { return nil }
            let index = m.loadUnaligned(fromByteOffset: 20, as: Int32.self)
            let up = m.loadUnaligned(fromByteOffset: 24, as: UInt32.self) & UInt32(IFF_UP) != 0
            var name = ""
            RootQdiscCounters.forEachAttribute(m, from: 32, to: length) { t, s, l in
                if t == UInt16(IFLA_IFNAME) {
                    name = String(decoding: UnsafeRawBufferPointer(rebasing: m[s..<(s + l)]).prefix { $0 != 0 }, as: UTF8.self)
                }
            }
            return .link(deleted: type == RTM_DELLINK, index: index, name: name, up: up, sender: sender)
        case RTM_NEWQDISC, RTM_DELQDISC, RTM_NEWTCLASS, RTM_DELTCLASS, RTM_NEWTFILTER, RTM_DELTFILTER:
            // struct tcmsg: family u8, pad u8 u16, ifindex i32, handle u32, parent u32, info u32
            guard length >= 36 else { return nil }
            let object: TCObject = switch type {
            case RTM_NEWQDISC, RTM_DELQDISC: .qdisc
            case RTM_NEWTCLASS, RTM_DELTCLASS: .tclass
            default: .filter
            }
            let deleted = type == RTM_DELQDISC || type == RTM_DELTCLASS || type == RTM_DELTFILTER
            return .tc(object, deleted: deleted, ifindex: m.loadUnaligned(fromByteOffset: 20, as: Int32.self),
                       handle: TCHandle(rawValue: m.loadUnaligned(fromByteOffset: 24, as: UInt32.self)),
                       parent: TCHandle(rawValue: m.loadUnaligned(fromByteOffset: 28, as: UInt32.self)), sender: sender)
        default:
            return nil
        }
    }
}

/// Listens to rtnetlink's link and tc multicast groups (what `ip monitor link` and `tc
/// monitor` show) on a thread of its own and hands the events on as a stream. Opened in the
/// caller's network namespace or a named one, like ``RouteSocket``.
///
/// Events caused by the sockets whose ports are in `ignoring` (the controller's own
/// requests) are left out. When the kernel could not queue events (ENOBUFS) or the stream's
/// buffer was full, ``RouteEvent/overrun`` follows: what was lost cannot be known.
public typealias RouteMonitor = NetlinkListener<RouteEvent>

extension NetlinkListener where Event == RouteEvent {
    public convenience init(namespace: String? = nil, ignoring: Set<UInt32> = []) throws(NetlinkError) {
        try self.init(namespace: namespace, protocol: NETLINK_ROUTE, groups: UInt32(RTMGRP_LINK) | UInt32(RTMGRP_TC),
                      what: "NETLINK_ROUTE groups link, tc", overrun: .overrun, name: "tandem-route-monitor") { m in
            guard let e = RouteEvent.parse(m), e.sender == 0 || !ignoring.contains(e.sender) else { return nil }
            return e
        }
    }
}

/// A netlink socket bound to multicast groups, read on a thread of its own; each message
/// `parse` makes an event of is handed on in ``events``. When the kernel could not queue
/// messages (ENOBUFS) or the stream's buffer was full, the `overrun` event follows.
public final class NetlinkListener<Event: Sendable>: @unchecked Sendable {
    let fd: Int32
    let wake: (read: Int32, write: Int32)
    /// The descriptors are closed by ``stop()`` (the thread holds the listener until it ends).
    var closed = false
    let parse: @Sendable (UnsafeRawBufferPointer) -> Event?
    let overrun: Event
    let name: String
    let lock = NSLock()
    var thread: Thread?
    var stopped = false
    public let events: AsyncStream<Event>
    let sink: AsyncStream<Event>.Continuation

    /// Room for the events between two reads of the stream; beyond it the oldest are
    /// dropped and an overrun is said.
    static var buffered: Int { 4096 }

    init(namespace: String?, protocol proto: Int32, groups: UInt32, what: String, overrun: Event, name: String,
         parse: @escaping @Sendable (UnsafeRawBufferPointer) -> Event?) throws(NetlinkError) {
        let open = { () -> Int32 in socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), proto) }
        var fd: Int32
        if let namespace {
            do { fd = try NetworkNamespace.run(in: namespace, open) } catch {
                throw (error as? NetlinkError) ?? NetlinkError(operation: "setns", object: namespace, errno: EINVAL)
            }
        } else {
            fd = open()
        }
        guard fd >= 0 else { throw NetlinkError(operation: "socket", object: what, errno: errno) }
        // Room for a burst (a host re-creating dozens of taps at once); past it, an overrun.
        var size: Int32 = 1 << 20
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_nl()
        addr.nl_family = sa_family_t(AF_NETLINK)
        addr.nl_groups = groups
        let bound = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_nl>.size)) }
        }
        guard bound == 0 else {
            let e = errno
            close(fd)
            throw NetlinkError(operation: "bind", object: what, errno: e)
        }
        var p: [Int32] = [0, 0]
        guard pipe(&p) == 0 else {
            let e = errno
            close(fd)
            throw NetlinkError(operation: "pipe", object: what, errno: e)
        }
        for end in p { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        self.fd = fd
        self.wake = (p[0], p[1])
        self.parse = parse
        self.overrun = overrun
        self.name = name
        (events, sink) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(Self.buffered))
    }

    deinit { closeDescriptors() }

    func closeDescriptors() {
        let first: Bool = lock.withLock { defer { closed = true }; return !closed }
        guard first else { return }
        close(fd)
        close(wake.read)
        close(wake.write)
    }

    /// Joins (or leaves) a multicast group of the socket's family: the kernel queues the
    /// group's messages for this socket only while it is a member. Returns whether the kernel
    /// took it.
    @discardableResult
    public func setMembership(group: UInt32, _ member: Bool) -> Bool {
        lock.withLock {
            guard !closed else { return false }
            var g = group
            // SOL_NETLINK 270; NETLINK_ADD_MEMBERSHIP 1, NETLINK_DROP_MEMBERSHIP 2.
            return setsockopt(fd, 270, member ? 1 : 2, &g, socklen_t(MemoryLayout<UInt32>.size)) == 0
        }
    }

    /// Starts the reading thread (once).
    public func start() {
        lock.withLock {
            guard thread == nil, !stopped else { return }
            let t = Thread { [self] in self.loop() }
            t.name = name
            thread = t
            t.start()
        }
    }

    /// Stops the thread, ends the stream and closes the socket (it leaves the groups: the
    /// kernel queues nothing more for it).
    public func stop() {
        let (t, wasClosed): (Thread?, Bool) = lock.withLock {
            stopped = true
            defer { thread = nil }
            return (thread, closed)
        }
        guard !wasClosed else { return }
        var b: UInt8 = 1
        _ = write(wake.write, &b, 1)
        while t.map({ !$0.isFinished }) ?? false { usleep(1000) }
        sink.finish()
        closeDescriptors()
    }

    func loop() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
        defer { buffer.deallocate() }
        var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)]
        while true {
            if lock.withLock({ stopped }) { return }
            let r = poll(&fds, 2, -1)
            if r < 0 {
                if errno == EINTR { continue }
                // Nothing more can be read: whoever follows the stream learns it ended.
                sink.finish()
                return
            }
            if fds[1].revents != 0 { return }
            guard fds[0].revents != 0 else { continue }
            // MSG_TRUNC: the datagram's real length, to tell one cut short (then lost).
            let n = recv(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT) | Int32(MSG_TRUNC))
            if n < 0 {
                if errno == ENOBUFS { yield(overrun) }
                continue
            }
            if n > buffer.count { yield(overrun); continue }
            var off = 0
            while off + 16 <= n {
                let len = Int(buffer.loadUnaligned(fromByteOffset: off, as: UInt32.self))
                guard len >= 16, off + len <= n else { break }
                if let e = parse(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[off..<(off + len)])) { yield(e) }
                off += (len + 3) & ~3
            }
        }
    }

    func yield(_ e: Event) {
        // The oldest event went to make room: say that something was lost.
        if case .dropped = sink.yield(e) { _ = sink.yield(overrun) }
    }
}

extension RouteSocket {
    /// The socket's netlink port: what the kernel's notifications of this socket's changes
    /// carry as their sender (``RouteEvent/sender``).
    public nonisolated var localPort: UInt32 { nl_socket_get_local_port(sock) }
}
