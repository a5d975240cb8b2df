import Foundation
import NIOCore
import NIOPosix
import TandemProtocol
#if canImport(Glibc)
import Glibc
#endif

/// A unix-socket server speaking one JSON request per line, for the agent's reservation
/// socket and the host's admin socket, on swift-nio (``TransportLoop``); lines are split by
/// ``FrameSplitter`` (the protocol's decoder) under `maxLine`.
///
/// Each client is identified by a number and the peer credentials the kernel gives
/// (SO_PEERCRED). A line longer than `maxLine` is refused (``Event/oversize``) and skipped; a
/// client sending faster than `linesPerSecond` has its extra lines dropped
/// (``Event/rateLimited``, at most one a second). Replies are written as they come; a client
/// that does not read them is cut off once 1 MiB waits for it.
public final class LineServer: @unchecked Sendable {
    public struct Client: Hashable, Sendable {
        public var id: Int
        public var pid: Int32
        public var uid: UInt32
        public var gid: UInt32
    }

    public enum Event: Sendable {
        case opened(Client)
        case line(Client, [UInt8])
        case oversize(Client)
        case rateLimited(Client)
        case closed(Client)
    }

    public let path: String
    /// Lines, refusals: bounded (the newest kept).
    public let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    /// Connections opened and closed, apart from the lines and never dropped (two events a
    /// connection at most): a flood of lines cannot push a `.closed` out, which would leave
    /// what that client held (the agent's reservations) behind.
    public let connections: AsyncStream<Event>
    private let connectionsSink: AsyncStream<Event>.Continuation
    /// The listening socket, bound (with the permissions the caller asked for, see
    /// ``UnixSocket/listen(_:mode:)``) before swift-nio takes it over in ``start()``.
    private let listener: Int32
    private let lock = NSLock()
    private var clients: [Int: Channel] = [:]
    private var nextID = 1
    private var server: Channel?
    private var stopped = false
    /// swift-nio took (or is taking) the listening descriptor: it is closed with the server
    /// channel, or by ``start()`` if swift-nio refused it, never by ``stop()``.
    private var handedOver = false
    public let maxLine: Int
    public let maxClients: Int
    /// Connections one user (other than root) may hold, so that one cannot take them all.
    public let maxClientsPerUID: Int
    private var uids: [Int: UInt32] = [:]
    public let linesPerSecond: Double
    /// Bytes of replies that may wait for a client before it is cut off.
    static let maxQueuedBytes = 1 << 20

    public init(path: String, mode: mode_t = 0o660, maxLine: Int = 4096, maxClients: Int = 256, maxClientsPerUID: Int = 32, linesPerSecond: Double = 50) throws(SystemError) {
        self.path = path
        self.maxLine = maxLine
        self.maxClients = maxClients
        self.maxClientsPerUID = maxClientsPerUID
        self.linesPerSecond = linesPerSecond
        listener = try UnixSocket.listen(path, mode: mode)
        (events, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(8192))
        (connections, connectionsSink) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .unbounded)
    }

    /// Serves the socket on the event loop. Throws (and closes the socket) if swift-nio cannot
    /// take it: the daemon must not run without its socket.
    public func start() throws {
        let bootstrap = ServerBootstrap(group: TransportLoop.group)
            .childChannelOption(.writeBufferWaterMark, value: .init(low: Self.maxQueuedBytes / 2, high: Self.maxQueuedBytes))
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameSplitter(maxFrameBytes: maxLine + 1)))
                    try channel.pipeline.syncOperations.addHandler(ClientHandler(server: self))
                }
            }
        // While swift-nio takes the descriptor, stop() leaves it alone (see `handedOver`).
        guard lock.withLock({ () -> Bool in
            guard !stopped && !handedOver else { return false }
            handedOver = true
            return true
        }) else { return }
        let ch: Channel
        do { ch = try bootstrap.withBoundSocket(listener).wait() } catch {
            // On failure the descriptor is still ours (swift-nio's contract).
            Glibc.close(listener)
            lock.withLock { stopped = true }
            unlink(path)
            continuation.finish()
            connectionsSink.finish()
            throw SystemError("listen", "\(path) (swift-nio: \(error))", errno: (error as? IOError)?.errnoCode ?? EINVAL)
        }
        // From here swift-nio owns the descriptor and closes it with the channel.
        let late = lock.withLock { () -> Bool in server = ch; return stopped }
        if late { ch.close(promise: nil) }
    }

    /// Writes a reply; a client that has gone is ignored (nothing is kept for it). A client
    /// with more than 1 MiB of replies unread is cut off.
    public func send(_ client: Int, _ line: [UInt8]) {
        guard let ch = lock.withLock({ clients[client] }) else { return }
        ch.eventLoop.execute {
            guard ch.isActive else { return }
            if !ch.isWritable { ch.close(promise: nil); return }
            ch.writeAndFlush(ch.allocator.buffer(bytes: line), promise: nil)
        }
    }

    /// Closes a client after what was sent to it is written.
    public func close(_ client: Int) {
        guard let ch = lock.withLock({ clients[client] }) else { return }
        ch.eventLoop.execute {
            // Writes complete in order: when this empty one has, everything before it has.
            ch.writeAndFlush(ch.allocator.buffer(capacity: 0)).whenComplete { _ in ch.close(promise: nil) }
        }
    }

    /// Stops serving; the socket file goes at once, so a process that starts next finds no
    /// stale one. Clients are closed; the event stream ends.
    public func stop() {
        let (first, ch, open, ours) = lock.withLock { () -> (Bool, Channel?, [Channel], Bool) in
            let f = !stopped
            stopped = true
            return (f, server, Array(clients.values), !handedOver)
        }
        guard first else { return }
        unlink(path)
        if ours { Glibc.close(listener) }
        ch?.close(promise: nil)
        for c in open { c.close(promise: nil) }
        continuation.finish()
        connectionsSink.finish()
    }

    // MARK: per client, on the event loop

    fileprivate func opened(_ channel: Channel, _ cred: PeerCred) -> Client? {
        let client = lock.withLock { () -> Client? in
            guard !stopped, clients.count < maxClients else { return nil }
            guard cred.uid == 0 || uids.values.lazy.filter({ $0 == cred.uid }).count < maxClientsPerUID else { return nil }
            let c = Client(id: nextID, pid: cred.pid, uid: cred.uid, gid: cred.gid)
            nextID += 1
            clients[c.id] = channel
            uids[c.id] = c.uid
            return c
        }
        if let client { connectionsSink.yield(.opened(client)) }
        return client
    }

    fileprivate func closed(_ client: Client) {
        lock.withLock { _ = clients.removeValue(forKey: client.id); _ = uids.removeValue(forKey: client.id) }
        connectionsSink.yield(.closed(client))
    }

    fileprivate func yield(_ e: Event) { continuation.yield(e) }

    /// One client's lines: its credentials, its token bucket.
    final class ClientHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = FrameDecoder.Event
        let server: LineServer
        var client: Client?
        var budget: TokenBucket
        var lastNotice = -1e9

        init(server: LineServer) { self.server = server; budget = TokenBucket(rate: server.linesPerSecond, burst: server.linesPerSecond) }

        func channelActive(context: ChannelHandlerContext) {
            let channel = context.channel
            // On the event loop the option is read at once and the future is already
            // complete: the client is known before its first line is read.
            let unknown = PeerCred(pid: -1, uid: .max, gid: .max)
            let cred: EventLoopFuture<PeerCred> = (channel as? SocketOptionProvider)?
                .unsafeGetSocketOption(level: .init(rawValue: SOL_SOCKET), name: .init(rawValue: SO_PEERCRED))
                ?? channel.eventLoop.makeSucceededFuture(unknown)
            cred.whenComplete { [self] result in
                client = server.opened(channel, (try? result.get()) ?? unknown)
                if client == nil { channel.close(promise: nil) }
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            if let client { server.closed(client) }
            client = nil
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard let client else { return }
            switch unwrapInboundIn(data) {
            case .oversize: server.yield(.oversize(client))
            case .frame(let bytes):
                let now = POSIX.now()
                if budget.take(at: now) {
                    server.yield(.line(client, bytes))
                } else if now - lastNotice >= 1 {
                    // Over the limit: dropped, with one notice a second at most.
                    lastNotice = now
                    server.yield(.rateLimited(client))
                }
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
    }
}

/// `struct ucred` as the kernel writes it for SO_PEERCRED.
struct PeerCred: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}
