import Foundation
import TandemProtocol
#if canImport(Glibc)
import Glibc
#endif

/// A byte stream carrying Tandem frames, kept open across the peer going away.
///
/// One OS thread owns the descriptor: it (re)opens it with backoff, reads and splits frames
/// with ``FrameDecoder`` and writes queued frames without ever blocking. What happens is
/// reported as ``Event``s on an AsyncStream.
///
/// Two kinds of endpoint differ in what "read returned 0" means:
/// - ``Endpoint/absentOnEnd``, a virtio-serial port seen from the guest: 0 means no host is
///   attached right now (poll reports POLLHUP at once). The port stays open; the thread backs
///   off and looks again. Writes while no host is there are dropped, never blocked on.
/// - ``Endpoint/closedOnEnd``, a unix socket: 0 means the peer closed; the thread
///   reconnects with backoff (the VM restarting, QEMU's socket coming back).
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
    private let wake = WakePipe()
    private let lock = NSLock()
    private var queue: OutboundQueue
    private var stopped = false
    private var fdForTests: Int32 = -1
    /// Frames dropped because nobody was there or the queue was full.
    public var dropped: Int { lock.withLock { queue.dropped } }
    /// Most frames read per second: beyond it the thread stops reading for the rest of the
    /// second, so a flooding peer fills its own socket buffer, not this process's memory.
    public let maxFramesPerSecond: Int

    /// Most bytes waiting to be written; older frames are dropped beyond it.
    public let maxQueuedBytes: Int
    let minBackoff: Double
    let maxBackoff: Double

    /// Called with every event on the channel's own thread, before it goes to ``events``:
    /// for a reader that must not depend on the cooperative pool (a test's stand-in host).
    let observer: (@Sendable (Event) -> Void)?

    public init(name: String, endpoint: Endpoint, maxQueuedBytes: Int = 1 << 20, minBackoff: Double = 0.05, maxBackoff: Double = 2,
                maxFramesPerSecond: Int = 1000, observer: (@Sendable (Event) -> Void)? = nil, opener: @escaping Opener) {
        self.name = name
        self.observer = observer
        self.maxFramesPerSecond = maxFramesPerSecond
        self.endpoint = endpoint
        self.opener = opener
        self.maxQueuedBytes = maxQueuedBytes
        self.minBackoff = minBackoff
        self.maxBackoff = maxBackoff
        self.queue = OutboundQueue(maxBytes: maxQueuedBytes)
        (events, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(4096))
    }

    private func emit(_ e: Event) {
        observer?(e)
        continuation.yield(e)
    }

    public func start() {
        startThread("tandem-channel-\(name)") { [self] in loop() }
    }

    /// Queues a frame; it is written when the peer can take it.
    public func send(_ frame: [UInt8]) {
        lock.withLock {
            queue.append(frame)
        }
        wake.wake()
    }

    /// Closes the connection and does not reopen it for `seconds` (a misbehaving peer).
    public func disconnect(for seconds: Double) {
        lock.withLock { pauseFor = seconds }
        wake.wake()
    }
    private var pauseFor: Double? = nil

    public func stop() {
        lock.withLock { stopped = true }
        wake.wake()
    }

    private var isStopped: Bool { lock.withLock { stopped } }

    private func loop() {
        var fd: Int32 = -1
        var backoff = Backoff(min: minBackoff, max: maxBackoff)
        var decoder = FrameDecoder()
        var present = false          // a peer is attached (absentOnEnd) / connected (closedOnEnd)
        var partial: ArraySlice<UInt8> = []
        var second = 0.0, framesThisSecond = 0
        defer {
            if fd >= 0 { close(fd) }
            continuation.finish()
        }
        func sleep(_ s: Double) { _ = POSIX.poll([(wake.readFD, Int16(POLLIN))], timeoutMilliseconds: Int32(s * 1000)); wake.drain() }

        while !isStopped {
            if let pause = lock.withLock({ () -> Double? in let p = pauseFor; pauseFor = nil; return p }) {
                if fd >= 0 { close(fd); fd = -1 }
                if present { emit(.disconnected("cut off for \(pause)s")) }
                present = false
                partial = []
                lock.withLock { queue.dropAll() }
                let until = POSIX.now() + pause
                while !isStopped && POSIX.now() < until { sleep(min(0.2, until - POSIX.now())) }
                continue
            }
            if fd < 0 {
                do {
                    fd = try opener()
                    POSIX.setNonBlocking(fd)
                    decoder.reset()
                    partial = []
                    backoff.reset()
                    if endpoint == .closedOnEnd {
                        present = true
                        emit(.connected)
                        _ = try? POSIX.writeSome(fd, [UInt8(ascii: "\n")][...])
                    }
                } catch {
                    emit(.openFailed(String(describing: error)))
                    sleep(backoff.next())
                    continue
                }
            }
            let wantWrite = present && (!partial.isEmpty || lock.withLock { !queue.isEmpty })
            // Everything that needs the loop (a frame to send, stop, a pause) writes the wake
            // pipe: the timeout is only a safety net, long, so that idle channels cost nothing.
            let ev = POSIX.poll([(fd, Int16(POLLIN) | (wantWrite ? Int16(POLLOUT) : 0)), (wake.readFD, Int16(POLLIN))], timeoutMilliseconds: 5000)
            if ev[1] != 0 { wake.drain() }
            let r = ev[0]
            if r & Int16(POLLNVAL) != 0 { close(fd); fd = -1; continue }

            if r & Int16(POLLIN) != 0 || r & Int16(POLLHUP) != 0 || r & Int16(POLLERR) != 0 {
                let result: POSIX.ReadResult
                do { result = try POSIX.read(fd) } catch {
                    // EIO on a pty whose master went away, ECONNRESET on a socket: reopen.
                    if present { emit(.disconnected(error.description)) }
                    present = false
                    close(fd); fd = -1
                    sleep(backoff.next())
                    continue
                }
                switch result {
                case .data(let bytes):
                    if !present {
                        present = true
                        emit(.connected)
                    }
                    decoder.feed(bytes)
                    while let e = decoder.next() {
                        switch e {
                        case .frame(let f): emit(.frame(f))
                        case .oversize(let n): emit(.oversize(n))
                        }
                        framesThisSecond += 1
                    }
                    let now = POSIX.now()
                    if now - second >= 1 { second = now; framesThisSecond = 0 }
                    else if framesThisSecond >= maxFramesPerSecond { sleep(second + 1 - now) }
                    backoff.reset()
                case .wouldBlock:
                    if r & Int16(POLLHUP) != 0 && endpoint == .absentOnEnd { fallthrough }
                case .end:
                    switch endpoint {
                    case .absentOnEnd:
                        // No host on the port: keep it open, keep enforcing, look again later.
                        if present { emit(.disconnected("no host on the port")) }
                        present = false
                        decoder.reset()
                        // (At most half a second between looks: a host that comes is seen soon.)
                        sleep(min(backoff.next(), 0.5))
                    case .closedOnEnd:
                        emit(.disconnected("peer closed the connection"))
                        present = false
                        close(fd); fd = -1
                        sleep(backoff.next())
                    }
                    continue
                }
            }

            // Write what is queued, without blocking.
            if present {
                while true {
                    if partial.isEmpty {
                        guard let next: [UInt8] = lock.withLock({
                            queue.popFirst()
                        }) else { break }
                        partial = next[...]
                    }
                    let n: Int
                    do { n = try POSIX.writeSome(fd, partial) } catch {
                        emit(.disconnected(error.description))
                        present = false
                        if endpoint == .closedOnEnd { close(fd); fd = -1 }
                        partial = []
                        break
                    }
                    if n == 0 { break }
                    partial = partial.dropFirst(n)
                }
            } else {
                // Nobody to write to: what was queued for an absent peer is dropped, never
                // delivered late (stale heartbeats would flood a peer that comes back).
                lock.withLock { queue.dropAll() }
            }
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
