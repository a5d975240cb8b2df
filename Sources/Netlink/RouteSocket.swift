import CNetlink
#if canImport(Glibc)
import Glibc
#endif

/// One netlink socket through libnl, with a single owner: rtnetlink (NETLINK_ROUTE) for
/// links, VFs and tc, or generic netlink (NETLINK_GENERIC, ``init(namespace:protocol:)``)
/// for devlink's rate objects (``DevlinkRate``).
///
/// libnl sockets are not thread-safe (a shared socket mixes up sequence numbers), so each
/// socket is an actor and no libnl object leaves it. Requests ask for acks and for the
/// kernel's extended-ack message, which errors carry. Every call validates its input
/// before libnl sees it: libnl aborts the process on some misuse.
///
/// The socket belongs to the network namespace it was opened in (see ``NetworkNamespace``).
public actor RouteSocket {
    nonisolated(unsafe) let sock: OpaquePointer
    nonisolated(unsafe) let ack: UnsafeMutablePointer<tandem_ack>
    /// Where ``rawDump(type:body:operation:object:restart:each:)`` receives: the kernel's dump
    /// batches are at most 32 KiB, so they always fit.
    nonisolated(unsafe) let dumpBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 8)
    /// Sequence numbers of raw dumps: the upper half, away from libnl's (which start at the
    /// time of day in seconds).
    var rawSequence: UInt32 = 0x8000_0000
    /// The namespace the socket was opened in, or nil for the caller's own.
    public let namespace: String?

    /// How often an interrupted dump (NLM_F_DUMP_INTR: the table changed under it) is retried.
    static let dumpRetries = 5

    /// Which netlink: rtnetlink, or generic netlink (devlink).
    public enum Kind: Sendable {
        case route, generic
        var value: Int32 { self == .route ? NETLINK_ROUTE : NETLINK_GENERIC }
        var name: String { self == .route ? "NETLINK_ROUTE" : "NETLINK_GENERIC" }
    }
    public nonisolated let proto: Kind
    /// Generic netlink families resolved so far (``devlinkFamily()``).
    var families: [String: GenericFamily] = [:]
    /// Devlink devices ("bus/device") that took a tx_weight (true) or refused one (false).
    var weights: [String: Bool] = [:]

    /// Opens a socket in the caller's namespace, or in the named one (`ip netns` name).
    public init(namespace: String? = nil, protocol proto: Kind = .route) throws(NetlinkError) {
        let kind = proto.name
        guard let s = nl_socket_alloc() else {
            throw NetlinkError(operation: "nl_socket_alloc", object: kind, errno: ENOMEM)
        }
        let connect = { () -> Int32 in nl_connect(s, proto.value) }
        var rc: Int32
        if let namespace {
            do { rc = try NetworkNamespace.run(in: namespace, connect) } catch {
                nl_socket_free(s)
                throw (error as? NetlinkError) ?? NetlinkError(operation: "setns", object: namespace, errno: EINVAL)
            }
        } else {
            rc = connect()
        }
        guard rc == 0 else {
            nl_socket_free(s)
            throw NetlinkError(operation: "nl_connect", object: kind, errno: 0, detail: String(cString: nl_geterror(rc)))
        }
        // Large replies (a PF with 256 VFs and their stats) exceed 64 KiB: peek at each
        // message's size before reading it, and give the socket room for big dumps.
        nl_socket_enable_msg_peek(s)
        _ = nl_socket_set_buffer_size(s, 4 << 20, 1 << 20)
        let a = UnsafeMutablePointer<tandem_ack>.allocate(capacity: 1)
        a.initialize(to: tandem_ack())
        // Failing here would misread every kernel errno as 0; without extended acks
        // (-NLE_OPNOTSUPP) errors just lack the kernel's message.
        let ackRC = tandem_install_ack(s, a)
        if ackRC < 0 && ackRC != -NLE_OPNOTSUPP {
            nl_socket_free(s); a.deallocate()
            throw NetlinkError(operation: "nl_socket_modify_err_cb", object: kind, errno: 0, detail: String(cString: nl_geterror(ackRC)))
        }
        self.proto = proto
        self.sock = s
        self.ack = a
        self.namespace = namespace
    }

    deinit {
        nl_socket_free(sock)
        ack.deallocate()
        dumpBuffer.deallocate()
    }

    /// Clears the captured ack before a request.
    func prepare() {
        ack.pointee.error = 0
        ack.pointee.message.0 = 0
    }

    /// Turns a libnl return code into an error naming the request and object.
    func check(_ rc: Int32, _ operation: String, _ object: @autoclosure () -> String) throws(NetlinkError) {
        guard rc < 0 else { return }
        throw failure(rc, operation, object())
    }

    func failure(_ rc: Int32, _ operation: String, _ object: String) -> NetlinkError {
        let kernelErrno = ack.pointee.error
        let message = withUnsafeBytes(of: ack.pointee.message) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        if kernelErrno != 0 {
            return NetlinkError(operation: operation, object: object, errno: kernelErrno, kernelMessage: message.isEmpty ? nil : message)
        }
        return NetlinkError(operation: operation, object: object, errno: 0, detail: String(cString: nl_geterror(rc)))
    }

    /// Runs a dump, retrying while the kernel marks it interrupted.
    func dump<T>(_ operation: String, _ object: @autoclosure () -> String, _ body: () -> (Int32, T?)) throws(NetlinkError) -> T {
        var attempt = 0
        while true {
            prepare()
            let (rc, value) = body()
            if rc == -NLE_DUMP_INTR && attempt < Self.dumpRetries { attempt += 1; continue }
            try check(rc, operation, object())
            guard let value else { throw NetlinkError(operation: operation, object: object(), errno: 0, detail: "no result") }
            return value
        }
    }

    /// Iterates a libnl cache's objects.
    static func forEach(_ cache: OpaquePointer, _ body: (OpaquePointer) -> Void) {
        var obj = nl_cache_get_first(cache)
        while let o = obj {
            body(o)
            obj = nl_cache_get_next(o)
        }
    }

    /// Runs a dump request (`type` with NLM_F_DUMP and `body` after the header) and hands
    /// each reply message to `each` in place: no copies, no libnl objects, and one recv per
    /// kernel batch (libnl peeks at each first). For dumps read every round. Retries an
    /// interrupted dump like ``dump(_:_:_:)``; `restart` is called before each attempt.
    func rawDump(type: UInt16, body: [UInt8], operation: String, object: @autoclosure () -> String,
                 restart: () -> Void, each: (UnsafeRawBufferPointer) -> Void) throws(NetlinkError) {
        _ = try dump(operation, object()) { () -> (Int32, Bool?) in
            restart()
            // Sent and read past libnl, with sequence numbers of its own (libnl's stay in
            // step for its requests, and neither side takes the other's replies).
            rawSequence = rawSequence == UInt32.max ? 0x8000_0000 : rawSequence + 1
            let fd = nl_socket_get_fd(sock)
            var request: [UInt8] = []
            request.appendLE(UInt32(16 + body.count)); request.appendLE(type)
            request.appendLE(UInt16(NLM_F_REQUEST | NLM_F_DUMP)); request.appendLE(rawSequence); request.appendLE(UInt32(0))
            request += body
            while true {
                let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
                if sent >= 0 { break }
                if errno == EINTR { continue }
                ack.pointee.error = errno
                return (-NLE_FAILURE, nil)
            }
            let got = Self.receiveDump(fd: fd, seq: rawSequence, buffer: dumpBuffer, ack: ack, each)
            return (got, got < 0 ? nil : true)
        }
    }

    /// Reads a dump's replies to NLMSG_DONE. Returns 0, -NLE_DUMP_INTR (the table changed
    /// under the dump: what was handed over is incomplete, ask again), or a libnl error with
    /// the kernel's errno left in `ack` for ``failure(_:_:_:)``. Replies to other requests
    /// (another sequence number) are skipped.
    static func receiveDump(fd: Int32, seq: UInt32, buffer: UnsafeMutableRawBufferPointer, ack: UnsafeMutablePointer<tandem_ack>,
                            _ each: (UnsafeRawBufferPointer) -> Void) -> Int32 {
        var interrupted = false
        while true {
            let n = recv(fd, buffer.baseAddress, buffer.count, 0)
            if n < 0 {
                if errno == EINTR { continue }
                ack.pointee.error = errno
                return -NLE_FAILURE
            }
            if n == 0 { ack.pointee.error = EPIPE; return -NLE_FAILURE }
            var off = 0
            while off + 16 <= n {
                let len = Int(buffer.loadUnaligned(fromByteOffset: off, as: UInt32.self))
                guard len >= 16, off + len <= n else { break }
                let type = buffer.loadUnaligned(fromByteOffset: off + 4, as: UInt16.self)
                let flags = buffer.loadUnaligned(fromByteOffset: off + 6, as: UInt16.self)
                if buffer.loadUnaligned(fromByteOffset: off + 8, as: UInt32.self) == seq {
                    if flags & UInt16(NLM_F_DUMP_INTR) != 0 { interrupted = true }
                    switch Int32(type) {
                    case NLMSG_DONE, NLMSG_ERROR:
                        let code = len >= 20 ? buffer.loadUnaligned(fromByteOffset: off + 16, as: Int32.self) : 0
                        if code < 0 { ack.pointee.error = -code; return -NLE_FAILURE }
                        if type == UInt16(NLMSG_DONE) { return interrupted ? -NLE_DUMP_INTR : 0 }
                    case NLMSG_NOOP, NLMSG_OVERRUN:
                        break
                    default:
                        if !interrupted { each(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[off..<(off + len)])) }
                    }
                }
                off += (len + 3) & ~3
            }
        }
    }

    /// Sends a raw (non-dump) request built with libnl's message API and collects every
    /// reply message up to the kernel's ack (libnl adds NLM_F_ACK; leaving the ack unread
    /// would hand it to the next request).
    func rawRequest(_ msg: OpaquePointer, _ operation: String, _ object: String) throws(NetlinkError) -> [[UInt8]] {
        final class Collector { var messages: [[UInt8]] = [] }
        let collector = Collector()
        prepare()
        var sink = tandem_raw_sink(fn: { ctx, data, length in
            let c = Unmanaged<Collector>.fromOpaque(ctx!).takeUnretainedValue()
            c.messages.append(Array(UnsafeRawBufferPointer(start: data, count: Int(length))))
        }, ctx: Unmanaged.passUnretained(collector).toOpaque())
        let rc: Int32 = withUnsafeMutablePointer(to: &sink) { p in
            _ = tandem_set_raw_sink(sock, p)
            defer { _ = tandem_clear_raw_sink(sock) }
            let sent = nl_send_auto(sock, msg)
            if sent < 0 { return sent }
            // libnl's recvmsgs returns after one non-multipart reply; the ack follows it.
            let got = nl_recvmsgs_default(sock)
            return got < 0 ? got : nl_wait_for_ack(sock)
        }
        try check(rc, operation, object)
        return withExtendedLifetime(collector) { collector.messages }
    }
}
