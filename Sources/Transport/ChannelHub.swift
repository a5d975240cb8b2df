import Foundation
import TandemProtocol
#if canImport(Glibc)
import Glibc
#endif

/// Frame channels to many peers (a host's VMs), served in passes by the caller's own loop:
/// no thread per channel, and nothing wakes between passes.
///
/// A ``FrameChannel`` owns a thread that wakes for every frame; for a controller with 64
/// guests that is 64 threads and a context switch or two per frame, most of what idle agents
/// cost the host. The hub instead reads in ``service(now:)``: one `epoll_wait(2)` with no
/// timeout says which channels are readable (one call however many there are), the pass
/// reads those, writes what is still queued, (re)opens what is due. Frames are written when
/// sent. The caller runs a pass every round and at least ten times a second, and, watching
/// ``readinessFD``, soon after a frame comes.
///
/// The channels behave as ``FrameChannel``'s ``FrameChannel/Endpoint/closedOnEnd`` ones (a
/// unix socket that QEMU serves): read returning 0 means the peer closed, and the hub
/// reconnects with backoff. Frames queued while nobody is connected are dropped, never
/// delivered late.
public final class ChannelHub: @unchecked Sendable {
    /// One peer's channel. ``send(_:)`` and ``disconnect(for:)`` may be called from any thread.
    public final class Channel: @unchecked Sendable {
        public let name: String
        let opener: FrameChannel.Opener
        let minBackoff: Double, maxBackoff: Double
        let maxFramesPerSecond: Int
        let maxQueuedBytes: Int
        let hub: ChannelHub   // (a cycle while the hub runs; `stop()` breaks it)
        /// Its key in the hub's epoll set.
        let token: UInt64

        // All below under hub.lock.
        var fd: Int32 = -1
        var present = false
        var nextOpen = 0.0
        var backoff: Backoff
        var decoder = FrameDecoder()
        var queue: OutboundQueue
        var pauseFor: Double?
        var second = 0.0, framesThisSecond = 0
        /// The decoder held frames back at the end of the last read (the rate): the next
        /// pass reads it again, readable or not.
        var held = false

        init(hub: ChannelHub, token: UInt64, name: String, opener: @escaping FrameChannel.Opener, minBackoff: Double, maxBackoff: Double, maxFramesPerSecond: Int, maxQueuedBytes: Int) {
            self.hub = hub; self.token = token; self.name = name; self.opener = opener
            self.minBackoff = minBackoff; self.maxBackoff = maxBackoff; self.backoff = Backoff(min: minBackoff, max: maxBackoff)
            self.queue = OutboundQueue(maxBytes: maxQueuedBytes)
            self.maxFramesPerSecond = maxFramesPerSecond; self.maxQueuedBytes = maxQueuedBytes
        }

        /// Writes a frame now, as far as the socket takes it without blocking; the rest waits
        /// for ``ChannelHub/flush(now:)`` or the next pass. (Written at once, not at the end of
        /// the round: an allocation that reaches the guest a few milliseconds into the round
        /// is enforced for all of it, and the host measures the VM at its new limit in the next
        /// round rather than the one after: the lab's TCP-stops reaction, 223 ms against 281
        /// to 328 ms at p50.) A write that finds the peer gone is reported by the next pass.
        public func send(_ frame: [UInt8]) {
            hub.lock.withLock {
                guard present else { queue.refused(); return }
                queue.append(frame)
                hub.write(self, now: POSIX.now(), &deferred)
            }
        }

        /// What happened while writing outside a pass, for the next pass to report.
        var deferred: [(String, FrameChannel.Event)] = []

        /// Closes the connection (in the next pass) and does not reopen it for `seconds`.
        public func disconnect(for seconds: Double) { hub.lock.withLock { pauseFor = seconds } }

        /// Frames dropped: nobody connected, or the queue full.
        public var dropped: Int { hub.lock.withLock { queue.dropped } }
    }

    let lock = NSLock()
    private var channels: [Channel] = []
    /// The same channels by token, for what epoll says is readable.
    private var byToken: [UInt64: Channel] = [:]
    /// The open channels' descriptors, each under its channel's token: a pass asks the
    /// kernel which are readable in one call, whatever their number.
    let epoll = EpollSet()
    private var nextToken: UInt64 = 0
    private var stopped = false
    /// Most bytes read from one channel in one pass.
    let readBudget = 65536
    /// Where reads land before the decoder takes them (under the lock): no allocation per read.
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 16384, alignment: 8)

    deinit { scratch.deallocate() }

    public init() {}

    /// Adds a channel; it is opened in the next pass.
    public func add(name: String, minBackoff: Double = 0.1, maxBackoff: Double = 5, maxFramesPerSecond: Int = 200,
                    maxQueuedBytes: Int = 1 << 20, opener: @escaping FrameChannel.Opener) -> Channel {
        let c = lock.withLock { nextToken += 1; return Channel(hub: self, token: nextToken, name: name, opener: opener, minBackoff: minBackoff, maxBackoff: maxBackoff,
                        maxFramesPerSecond: maxFramesPerSecond, maxQueuedBytes: maxQueuedBytes) }
        lock.withLock { channels.append(c); byToken[c.token] = c }
        return c
    }

    /// Closes and forgets a channel (its VM left the configuration); nothing more is reported
    /// for it, and frames still queued for it are dropped.
    public func remove(name: String) {
        lock.withLock {
            for c in channels where c.name == name { drop(c, retryAt: .infinity); byToken[c.token] = nil }
            channels.removeAll { $0.name == name }
        }
    }

    /// One pass over every channel; never blocks. Returns what happened, in order per channel.
    public func service(now: Double) -> [(String, FrameChannel.Event)] {
        lock.withLock {
            var events: [(String, FrameChannel.Event)] = []
            guard !stopped else { return events }
            // One walk over the channels for what does not wait on the kernel: events left by
            // sends, cut-offs, opens that are due, and which channels have frames held back
            // (their rate) or bytes queued. Then only the readable ones are read.
            var openCount = 0
            var held: [Channel] = [], queued: [Channel] = []
            for c in channels {
                if !c.deferred.isEmpty { events += c.deferred; c.deferred.removeAll() }
                if let pause = c.pauseFor {
                    c.pauseFor = nil
                    if c.present { events.append((c.name, .disconnected("cut off for \(pause)s"))) }
                    drop(c, retryAt: now + pause)
                }
                if c.fd < 0 {
                    guard now >= c.nextOpen else { continue }
                    open(c, now: now, &events)
                    if c.fd < 0 { continue }
                }
                openCount += 1
                if c.held { held.append(c) }
                if !c.queue.isEmpty { queued.append(c) }
            }
            guard openCount > 0 else { return events }
            // Readable only: what is queued is written below whatever epoll says (a write that
            // would block costs no more than asking), and asking for EPOLLOUT would make every
            // channel with something queued look ready to read. Read in the channels' order
            // (their tokens increase as they are added); one whose decoder held frames back
            // (its rate) is read again.
            let ready = epoll.ready(max: openCount).sorted()
            for token in ready { if let c = byToken[token], c.fd >= 0 { read(c, now: now, &events) } }
            for c in held where c.fd >= 0 && c.held && !ready.contains(c.token) { read(c, now: now, &events) }
            for c in queued where c.fd >= 0 { write(c, now: now, &events) }
            return events
        }
    }

    /// Writes what full sockets did not take when it was sent, without blocking.
    public func flush(now: Double = POSIX.now()) -> [(String, FrameChannel.Event)] {
        lock.withLock {
            var events: [(String, FrameChannel.Event)] = []
            for c in channels where c.fd >= 0 && !c.queue.isEmpty { write(c, now: now, &events) }
            return events
        }
    }

    /// Closes every channel; later passes do nothing.
    public func stop() {
        lock.withLock {
            stopped = true
            for c in channels { drop(c, retryAt: .infinity) }
            channels.removeAll()
            byToken.removeAll()
        }
    }

    /// Readable (to poll(2)) while a channel is: what a loop watches to run a pass soon after
    /// a frame comes (``DaemonLoop/watch(_:minGap:_:)``), one descriptor however many channels.
    public var readinessFD: Int32 { epoll.fd }

    // MARK: per channel, under the lock

    private func open(_ c: Channel, now: Double, _ events: inout [(String, FrameChannel.Event)]) {
        do {
            c.fd = try c.opener()
        } catch {
            events.append((c.name, .openFailed(String(describing: error))))
            retryLater(c, now: now)
            return
        }
        POSIX.setNonBlocking(c.fd)
        do { try epoll.add(c.fd, token: c.token) } catch {
            close(c.fd); c.fd = -1
            events.append((c.name, .openFailed(String(describing: error))))
            retryLater(c, now: now)
            return
        }
        c.decoder.reset()
        c.present = true
        events.append((c.name, .connected))
        // A bare newline ends whatever cut frame the peer may hold from an earlier connection.
        c.queue.connectionOpened()
    }

    private func read(_ c: Channel, now: Double, _ events: inout [(String, FrameChannel.Event)]) {
        defer { c.held = c.fd >= 0 && c.decoder.hasPending }
        var budget = readBudget
        while true {
            if now - c.second >= 1 { c.second = now; c.framesThisSecond = 0 }
            // Frames already read come out first, within the rate. A flooding peer's rest
            // waits in the decoder (at most one read's worth) and then in its own socket buffer.
            while c.framesThisSecond < c.maxFramesPerSecond, let e = c.decoder.next() {
                switch e {
                case .frame(let f): events.append((c.name, .frame(f)))
                case .oversize(let n): events.append((c.name, .oversize(n)))
                }
                c.framesThisSecond += 1
            }
            if c.framesThisSecond >= c.maxFramesPerSecond || budget <= 0 { return }
            let want = min(budget, scratch.count)
            let got: Int?
            do { got = try POSIX.read(c.fd, into: UnsafeMutableRawBufferPointer(rebasing: scratch[..<want])) } catch {
                // ECONNRESET and the like: the peer is gone.
                lost(c, error.description, now: now, &events)
                return
            }
            guard let got else { return }   // would block
            if got == 0 { lost(c, "peer closed the connection", now: now, &events); return }
            budget -= got
            c.backoff.reset()
            c.decoder.feed(buffer: UnsafeBufferPointer(start: scratch.baseAddress!.assumingMemoryBound(to: UInt8.self), count: got))
            // A short read emptied the socket: no second read just to hear EAGAIN (the next
            // pass's epoll sees whatever comes later).
            if got < want { budget = 0 }
        }
    }

    fileprivate func write(_ c: Channel, now: Double, _ events: inout [(String, FrameChannel.Event)]) {
        guard c.fd >= 0 else { return }
        // (What the socket does not take goes in a later pass.)
        do { try c.queue.write(to: c.fd) } catch { lost(c, error.description, now: now, &events) }
    }

    private func lost(_ c: Channel, _ why: String, now: Double, _ events: inout [(String, FrameChannel.Event)]) {
        if c.present { events.append((c.name, .disconnected(why))) }
        drop(c, retryAt: 0)
        retryLater(c, now: now)
    }

    private func retryLater(_ c: Channel, now: Double) {
        c.nextOpen = now + c.backoff.next()
    }

    private func drop(_ c: Channel, retryAt: Double) {
        if c.fd >= 0 { epoll.remove(c.fd); close(c.fd); c.fd = -1 }
        c.present = false
        c.held = false
        c.queue.dropAll()
        c.nextOpen = retryAt
    }
}
