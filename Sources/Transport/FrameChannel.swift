import Foundation
import TandemProtocol
#if canImport(Glibc)
import Glibc
#endif

/// A byte stream carrying Tandem frames, kept open across the peer going away: the agent's
/// end of its virtio-serial port (and a test's stand-in host). One thread of its own polls the
/// descriptor, reads and splits frames (``FrameDecoder``) and reports what happens as
/// ``Event``s on an AsyncStream; frames are written from the sender's thread, the rest of a
/// full buffer by the channel's thread.
///
/// Not on swift-nio: its pipe channel takes the end of input as final (it asserts that a
/// descriptor that polled `POLLHUP` reads end-of-file), and a virtio port's is not. A host that
/// leaves and comes back between the poll and the read leaves nothing to read, and the agent's
/// debug build stopped on that assertion in CI (2026-12-07, a host restart); a host connecting
/// and leaving 300 times in a row brought it down within two connections.
///
/// Two kinds of endpoint differ in what "end of input" means:
/// - ``Endpoint/absentOnEnd``, a virtio-serial port seen from the guest: no host is attached
///   right now (a virtio port reads end-of-file, and polls `POLLHUP`, whenever the host side
///   is closed; once a host is back it reads its bytes again). The descriptor is closed and the
///   port opened again after a pause (at most half a second), until a host speaks. Frames sent
///   while no host is there are dropped.
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
    /// Called with every event on the channel's thread, before it goes to ``events``: for a
    /// reader that must not depend on the cooperative pool (a test's stand-in host).
    let observer: (@Sendable (Event) -> Void)?
    /// Most frames read per second: beyond it reading stops for the rest of the second, so a
    /// flooding peer fills its own buffer, not this process's memory.
    public let maxFramesPerSecond: Int
    /// Most bytes waiting to be written; frames beyond it are dropped.
    public let maxQueuedBytes: Int

    private let lock = NSLock()
    private let wake = WakePipe()
    // Under the lock. The descriptor is opened and closed only by the channel's thread, and
    // never while it polls it: a send from another thread cannot write to a reused number.
    private var fd: Int32 = -1
    private var present = false        // a peer is attached / connected
    private var stopped = false
    private var thread: Thread?
    /// From ``start()`` to the first open (closedOnEnd): frames sent meanwhile wait for it and
    /// go out first once it is open.
    private var opening = false
    /// Frames not yet written while the peer does not read (at most `maxQueuedBytes`, the
    /// oldest dropped first), the one being written too.
    private var queue: OutboundQueue
    /// Set by ``disconnect(for:)``, done by the thread.
    private var pauseFor: Double?
    /// A write from a sender's thread found the peer gone: the thread ends the connection.
    private var writeFailed: String?
    // The channel's thread only.
    private var decoder = FrameDecoder()
    private var backoff: Backoff
    private var nextOpen = 0.0
    private var second = 0.0, framesThisSecond = 0

    /// Frames dropped because nobody was there or too much waited to be written.
    public var dropped: Int { lock.withLock { queue.dropped } }

    public init(name: String, endpoint: Endpoint, maxQueuedBytes: Int = 1 << 20, minBackoff: Double = 0.05, maxBackoff: Double = 2,
                maxFramesPerSecond: Int = 1000, observer: (@Sendable (Event) -> Void)? = nil, opener: @escaping Opener) {
        self.name = name
        self.endpoint = endpoint
        self.opener = opener
        self.observer = observer
        self.maxFramesPerSecond = maxFramesPerSecond
        self.maxQueuedBytes = maxQueuedBytes
        self.backoff = Backoff(min: minBackoff, max: endpoint == .absentOnEnd ? min(maxBackoff, 0.5) : maxBackoff)
        self.queue = OutboundQueue(maxBytes: maxQueuedBytes)
        (events, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(4096))
    }

    private func emit(_ e: Event) {
        observer?(e)
        continuation.yield(e)
    }

    /// Starts the channel's thread (once), which opens the endpoint.
    public func start() {
        lock.withLock {
            guard thread == nil, !stopped else { return }
            if endpoint == .closedOnEnd { opening = true }
            let t = Thread { [self] in run() }
            t.name = "tandem-channel"
            thread = t
            t.start()
        }
    }

    /// Writes a frame when a peer is there; dropped otherwise (never delivered late: stale
    /// heartbeats would flood a peer that comes back). Written at once as far as the
    /// descriptor takes it; a peer that does not read gets the newest frames: beyond
    /// `maxQueuedBytes` waiting, the oldest are dropped.
    public func send(_ frame: [UInt8]) {
        let wakeThread = lock.withLock { () -> Bool in
            if present && fd >= 0 {
                queue.append(frame)
                writeQueued()
                // The rest when the descriptor is writable again (the thread polls for it), or
                // the end of the connection the write found.
                return !queue.isEmpty || writeFailed != nil
            }
            if opening { queue.append(frame) } else { queue.refused() }
            return false
        }
        if wakeThread { wake.wake() }
    }

    /// Closes the connection and does not reopen it for `seconds` (a misbehaving peer).
    public func disconnect(for seconds: Double) {
        lock.withLock { pauseFor = seconds }
        wake.wake()
    }

    /// Stops the thread, closes the descriptor and ends ``events``. Waits for the thread, at
    /// most two seconds: one blocked opening a unix socket whose listener's queue is full
    /// (another client holds QEMU's socket) finishes on its own once the opener returns, and
    /// emits nothing more. (From an observer, on the channel's own thread, it does not wait:
    /// the thread ends right after.)
    public func stop() {
        let t = lock.withLock { () -> Thread? in
            stopped = true
            return thread
        }
        wake.wake()
        if let t, t != Thread.current {
            let deadline = POSIX.now() + 2
            while !t.isFinished && POSIX.now() < deadline { usleep(1000) }
        } else if t == nil {
            continuation.finish()
        }
    }

    // MARK: on the channel's thread

    private func run() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16384, alignment: 8)
        defer { buffer.deallocate() }
        while true {
            var now = POSIX.now()
            let (stop, pause, failed) = lock.withLock { () -> (Bool, Double?, String?) in
                defer { pauseFor = nil; writeFailed = nil }
                return (stopped, pauseFor, writeFailed)
            }
            if stop { break }
            if let pause {
                end("cut off for \(pause)s", now: now, cutOff: true)
                nextOpen = max(nextOpen, now + pause)
            }
            if let failed { end(failed, now: now) }
            if currentFD < 0 && now >= nextOpen { open(now: now) }
            let fd = currentFD
            // Frames read already come out first, within the rate.
            if fd >= 0 { deliver(now: now) }
            let limited = framesThisSecond >= maxFramesPerSecond
            let wantsWrite = lock.withLock { !queue.isEmpty }
            // Over the rate the descriptor is not polled at all until the second is out (a
            // hung-up peer polls ready whatever is asked, again and again); what waits to be
            // written waits with it.
            var ev: Int16 = 0
            if fd >= 0 && !limited { ev = Int16(POLLIN) | (wantsWrite ? Int16(POLLOUT) : 0) }
            let wait: Double? = fd < 0 ? nextOpen - now : limited ? second + 1 - now : nil
            let timeout = wait.map { $0.isNaN ? 0 : Int32(min(max($0 * 1000, 0), 60_000).rounded(.up)) } ?? -1
            var fds: [(Int32, Int16)] = [(wake.readFD, Int16(POLLIN))]
            if ev != 0 { fds.append((fd, ev)) }
            let revents = POSIX.poll(fds, timeoutMilliseconds: timeout)
            if revents[0] != 0 { wake.drain() }
            guard ev != 0, revents[1] != 0 else { continue }
            now = POSIX.now()
            if revents[1] & Int16(POLLOUT) != 0 { lock.withLock { writeQueued() } }
            if revents[1] & ~Int16(POLLOUT) != 0 { read(fd, buffer, now: now) }
        }
        end("stopped", now: POSIX.now(), quiet: true)
        continuation.finish()
    }

    private var currentFD: Int32 { lock.withLock { fd } }

    private func open(now: Double) {
        let new: Int32
        do { new = try opener() } catch {
            let stop = lock.withLock { () -> Bool in opening = false; queue.dropAll(); return stopped }
            if stop { return }
            emit(.openFailed(String(describing: error)))
            nextOpen = now + backoff.next()
            return
        }
        POSIX.setNonBlocking(new)
        decoder.reset()
        let closedOnEnd = endpoint == .closedOnEnd
        let late = lock.withLock { () -> Bool in
            // Stopped while the opener ran: nothing more is said.
            if stopped { return true }
            fd = new
            opening = false
            if closedOnEnd {
                present = true
                // (Then what was sent while the socket was being opened.)
                queue.connectionOpened()
            }
            return false
        }
        if late { close(new); return }
        guard closedOnEnd else { return }
        backoff.reset()
        emit(.connected)
        lock.withLock { writeQueued() }
    }

    /// Reads what is there (at most 64 KiB; a short read emptied it), handing on frames
    /// within the rate; the end of input or an error ends the connection.
    private func read(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, now: Double) {
        var budget = 65536
        while budget > 0 && framesThisSecond < maxFramesPerSecond {
            let got: Int?
            do { got = try POSIX.read(fd, into: buffer) } catch {
                // EIO on a pseudo-terminal whose other side went away, ECONNRESET on a socket.
                end(error.description, now: now)
                return
            }
            // Nothing there: a virtio port whose host left and came back between the poll
            // and the read (what swift-nio asserted could not happen).
            guard let got else { return }
            if got == 0 { end("peer closed the connection", now: now); return }
            budget -= got
            decoder.feed(buffer: UnsafeBufferPointer(start: buffer.baseAddress!.assumingMemoryBound(to: UInt8.self), count: got))
            deliver(now: now)
            if got < buffer.count { return }
        }
    }

    /// Frames the decoder holds, within the rate.
    private func deliver(now: Double) {
        if now - second >= 1 { second = now; framesThisSecond = 0 }
        while framesThisSecond < maxFramesPerSecond, let e = decoder.next() {
            framesThisSecond += 1
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
    }

    /// Closes the connection, says so (a virtio port's end of input: that no host is there,
    /// unless the channel cut it off), and schedules the next open.
    private func end(_ why: String, now: Double, cutOff: Bool = false, quiet: Bool = false) {
        let (old, was) = lock.withLock { () -> (Int32, Bool) in
            let f = fd, p = present
            fd = -1; present = false
            queue.dropAll()
            return (f, p)
        }
        guard old >= 0 else { return }
        close(old)
        decoder.reset()
        if quiet { return }
        switch endpoint {
        case .absentOnEnd:
            // No host on the port: look again soon (a host that comes is seen within half a
            // second: the backoff stops there); the last allocation stays in force meanwhile.
            if was { emit(.disconnected(cutOff ? why : "no host on the port")) }
        case .closedOnEnd:
            emit(.disconnected(why))
        }
        nextOpen = now + backoff.next()
    }

    /// Writes what waits, as far as the descriptor takes it without blocking (under the lock).
    private func writeQueued() {
        guard fd >= 0 else { return }
        do { try queue.write(to: fd) } catch {
            writeFailed = error.description
            queue.dropAll()
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
