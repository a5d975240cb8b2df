import Foundation
import NIOCore
import NIOPosix
import TandemProtocol
#if canImport(Glibc)
import Glibc
#endif

/// A byte stream carrying Tandem frames, kept open across the peer going away, on the
/// swift-nio event loop (``TransportLoop``): the descriptor is handed to
/// `NIOPipeBootstrap.takingOwnershipOfDescriptor(inputOutput:)`, frames are split with
/// ``FrameDecoder``, and what happens is reported as ``Event``s on an AsyncStream.
///
/// Two kinds of endpoint differ in what "end of input" means:
/// - ``Endpoint/absentOnEnd``, a virtio-serial port seen from the guest: no host is attached
///   right now (a virtio port reads end-of-file, and polls `POLLHUP`, whenever the host side
///   is closed). This is the port's own behaviour, and why the channel needs code of its own
///   here: the descriptor is closed and the port opened again after a pause (at most half a
///   second), until a host speaks. Frames sent while no host is there are dropped.
/// - ``Endpoint/closedOnEnd``, a unix socket or a pseudo-terminal's master: the peer closed;
///   the channel reopens with backoff (the VM restarting, QEMU's socket coming back).
public final class FrameChannel: @unchecked Sendable {
    public enum Event: Sendable, Equatable {
        case connected
        case frame([UInt8])
        case oversize(Int)
        /// The peer is gone (with why); the channel keeps trying.
        case disconnected(String)
        /// Opening failed (with why); the channel keeps trying.
        case openFailed(String)
    }

    public enum Endpoint: Sendable { case absentOnEnd, closedOnEnd }

    public typealias Opener = @Sendable () throws -> Int32

    public let name: String
    public let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    private let opener: Opener
    private let endpoint: Endpoint
    private let loop: EventLoop
    /// Called with every event on the event loop, before it goes to ``events``: for a reader
    /// that must not depend on the cooperative pool (a test's stand-in host).
    let observer: (@Sendable (Event) -> Void)?
    /// Most frames read per second: beyond it reading stops for the rest of the second, so a
    /// flooding peer fills its own buffer, not this process's memory.
    public let maxFramesPerSecond: Int
    /// Most bytes waiting to be written; frames beyond it are dropped.
    public let maxQueuedBytes: Int

    // Below: on the event loop, except where a lock is named.
    private let lock = NSLock()
    private var channel: Channel?      // under lock
    private var present = false        // under lock: a peer is attached / connected
    private var stopped = false        // under lock
    private var droppedCount = 0       // under lock
    /// A socket being opened (closedOnEnd): frames sent meanwhile wait for it and go out
    /// first once it is open.
    private var opening = false        // under lock
    /// Frames not yet handed to swift-nio: while opening, or while the peer does not read
    /// (at most `maxQueuedBytes`, the oldest dropped first).
    private var pending: OutboundQueue  // under lock
    private var backoff: Backoff
    private var pausedUntil = 0.0
    private var generation = 0

    /// Frames dropped because nobody was there or too much waited to be written.
    public var dropped: Int { lock.withLock { droppedCount + pending.dropped } }

    public init(name: String, endpoint: Endpoint, maxQueuedBytes: Int = 1 << 20, minBackoff: Double = 0.05, maxBackoff: Double = 2,
                maxFramesPerSecond: Int = 1000, observer: (@Sendable (Event) -> Void)? = nil, opener: @escaping Opener) {
        self.name = name
        self.endpoint = endpoint
        self.opener = opener
        self.observer = observer
        self.maxFramesPerSecond = maxFramesPerSecond
        self.maxQueuedBytes = maxQueuedBytes
        self.backoff = Backoff(min: minBackoff, max: maxBackoff)
        self.pending = OutboundQueue(maxBytes: maxQueuedBytes)
        self.loop = TransportLoop.group.next()
        (events, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(4096))
    }

    fileprivate func emit(_ e: Event) {
        observer?(e)
        continuation.yield(e)
    }

    public func start() { loop.execute { self.open() } }

    /// Writes a frame when a peer is there; dropped otherwise (never delivered late: stale
    /// heartbeats would flood a peer that comes back). A peer that does not read gets the
    /// newest frames: beyond `maxQueuedBytes` waiting, the oldest are dropped.
    public func send(_ frame: [UInt8]) {
        let ch = lock.withLock { () -> Channel? in
            if present, let c = channel { pending.append(frame); return c }
            if opening { pending.append(frame) } else { droppedCount += 1 }
            return nil
        }
        guard let ch else { return }
        ch.eventLoop.execute { self.drain(ch) }
    }

    /// Writes what waits, as far as the channel is writable (the rest when it is again).
    fileprivate func drain(_ ch: Channel) {
        var wrote = false
        while ch.isWritable, let f = lock.withLock({ channel === ch ? pending.popFirst() : nil }) {
            ch.write(ch.allocator.buffer(bytes: f), promise: nil)
            wrote = true
        }
        if wrote { ch.flush() }
    }

    /// Closes the connection and does not reopen it for `seconds` (a misbehaving peer).
    public func disconnect(for seconds: Double) {
        loop.execute {
            self.pausedUntil = POSIX.now() + seconds
            let (ch, was) = self.lock.withLock { () -> (Channel?, Bool) in
                let c = self.channel, p = self.present
                self.channel = nil; self.present = false
                self.pending.dropAll()
                return (c, p)
            }
            self.generation += 1
            if was { self.emit(.disconnected("cut off for \(seconds)s")) }
            ch?.close(promise: nil)
            self.schedule(after: seconds) { self.open() }
        }
    }

    public func stop() {
        let ch = lock.withLock { () -> Channel? in
            stopped = true
            let c = channel
            channel = nil
            return c
        }
        ch?.close(promise: nil)
        continuation.finish()
    }

    private var isStopped: Bool { lock.withLock { stopped } }

    private func schedule(after seconds: Double, _ body: @escaping @Sendable () -> Void) {
        loop.scheduleTask(in: .nanoseconds(Int64(max(0, seconds) * 1e9))) { body() }
    }

    // MARK: on the event loop

    private func open() {
        guard !isStopped, lock.withLock({ channel == nil }) else { return }
        let now = POSIX.now()
        if now < pausedUntil { schedule(after: pausedUntil - now) { self.open() }; return }
        let fd: Int32
        do { fd = try opener() } catch {
            emit(.openFailed(String(describing: error)))
            schedule(after: backoff.next()) { self.open() }
            return
        }
        generation += 1
        let gen = generation
        let handler = Reader(channel: self, generation: gen)
        if endpoint == .closedOnEnd { lock.withLock { opening = true } }
        NIOPipeBootstrap(group: loop)
            .channelOption(.allowRemoteHalfClosure, value: true)
            // swift-nio's own buffer stays small; what waits beyond it is `pending` (oldest dropped).
            .channelOption(.writeBufferWaterMark, value: .init(low: 32 * 1024, high: 64 * 1024))
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    try ch.pipeline.syncOperations.addHandler(ByteToMessageHandler(FrameSplitter()))
                    try ch.pipeline.syncOperations.addHandler(handler)
                }
            }
            .takingOwnershipOfDescriptor(inputOutput: fd)
            .whenComplete { result in
                switch result {
                case .failure(let error):
                    // A failed future leaves the descriptor ours (swift-nio's contract): a
                    // regular file given as the port, say.
                    close(fd)
                    self.lock.withLock { self.opening = false; self.pending.dropAll() }
                    self.emit(.openFailed(String(describing: error)))
                    self.schedule(after: self.backoff.next()) { self.open() }
                case .success(let ch):
                    let late = self.lock.withLock { () -> Bool in
                        self.opening = false
                        if self.stopped || self.generation != gen { self.pending.dropAll(); return true }
                        self.channel = ch
                        if self.endpoint == .closedOnEnd { self.present = true }
                        return false
                    }
                    if late { ch.close(promise: nil); return }
                    if self.endpoint == .closedOnEnd {
                        self.backoff.reset()
                        self.emit(.connected)
                        // A bare newline ends whatever cut frame the peer may hold; then what
                        // was sent while the socket was being opened.
                        ch.write(ch.allocator.buffer(bytes: [UInt8(ascii: "\n")]), promise: nil)
                        self.drain(ch)
                        ch.flush()
                    }
                }
            }
    }

    /// A frame (or an oversize line) read from the channel of generation `gen`.
    fileprivate func received(_ e: FrameDecoder.Event, generation gen: Int) {
        guard gen == generation else { return }
        let first = lock.withLock { () -> Bool in
            if present { return false }
            present = true
            return true
        }
        if first { emit(.connected) }
        backoff.reset()
        switch e {
        case .frame(let f): emit(.frame(f))
        case .oversize(let n): emit(.oversize(n))
        }
    }

    /// End of input, an error, or the channel closing, on the channel of generation `gen`.
    fileprivate func ended(_ why: String, generation gen: Int) {
        guard gen == generation else { return }
        generation += 1
        let (ch, was) = lock.withLock { () -> (Channel?, Bool) in
            let c = channel, p = present
            channel = nil; present = false
            pending.dropAll()
            return (c, p)
        }
        ch?.close(promise: nil)
        if isStopped { return }
        switch endpoint {
        case .absentOnEnd:
            // No host on the port: look again soon (a host that comes is seen within half a
            // second); the last allocation stays in force meanwhile.
            if was { emit(.disconnected("no host on the port")) }
            schedule(after: min(backoff.next(), 0.5)) { self.open() }
        case .closedOnEnd:
            emit(.disconnected(why))
            schedule(after: backoff.next()) { self.open() }
        }
    }

    /// Frames to the channel's events, within the frame rate; the end of input to ``ended``.
    final class Reader: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = FrameDecoder.Event
        let channel: FrameChannel
        let generation: Int
        var second = 0.0
        var framesThisSecond = 0

        init(channel: FrameChannel, generation: Int) { self.channel = channel; self.generation = generation }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            channel.received(unwrapInboundIn(data), generation: generation)
            let now = POSIX.now()
            if now - second >= 1 { second = now; framesThisSecond = 0 }
            framesThisSecond += 1
            if framesThisSecond >= channel.maxFramesPerSecond {
                // Over the rate: no more reads until the second is out.
                let ch = context.channel
                ch.setOption(.autoRead, value: false).whenSuccess {
                    ch.eventLoop.scheduleTask(in: .nanoseconds(Int64((self.second + 1 - now) * 1e9))) {
                        ch.setOption(.autoRead, value: true).whenSuccess { ch.read() }
                    }
                }
            }
        }

        func channelWritabilityChanged(context: ChannelHandlerContext) {
            if context.channel.isWritable { channel.drain(context.channel) }
            context.fireChannelWritabilityChanged()
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let e = event as? ChannelEvent, e == .inputClosed {
                channel.ended("peer closed the connection", generation: generation)
            } else {
                context.fireUserInboundEventTriggered(event)
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            channel.ended("peer closed the connection", generation: generation)
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            // EIO on a pseudo-terminal whose other side went away, ECONNRESET on a socket.
            channel.ended(String(describing: error), generation: generation)
        }
    }
}

extension NSLock {
    /// Runs `body` holding the lock.
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock(); defer { unlock() }
        return try body()
    }
}
