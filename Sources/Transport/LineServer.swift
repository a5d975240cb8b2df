import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A unix-socket server speaking one JSON request per line, for the agent's reservation
/// socket and the host's admin socket.
///
/// One OS thread accepts and reads; each client is identified by a number and the peer
/// credentials the kernel gives (SO_PEERCRED). A line longer than `maxLine` is refused
/// (``Event/oversize``) and skipped; a client sending faster than `linesPerSecond` has its
/// extra lines dropped (``Event/rateLimited``). Replies are queued and written without
/// blocking; a client that does not read them is cut off when its queue passes 1 MiB.
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
    public let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    private let listener: Int32
    private let wake = WakePipe()
    private let lock = NSLock()
    private var outgoing: [Int: [UInt8]] = [:]
    private var closing: Set<Int> = []
    private var stopped = false
    public let maxLine: Int
    public let maxClients: Int
    public let linesPerSecond: Double

    public init(path: String, mode: mode_t = 0o660, maxLine: Int = 4096, maxClients: Int = 256, linesPerSecond: Double = 50) throws(SystemError) {
        self.path = path
        self.maxLine = maxLine
        self.maxClients = maxClients
        self.linesPerSecond = linesPerSecond
        listener = try UnixSocket.listen(path, mode: mode)
        (events, continuation) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(8192))
    }

    public func start() { startThread("tandem-lines") { [self] in loop() } }

    /// Queues a reply; a client that has gone is ignored (nothing is kept for it).
    public func send(_ client: Int, _ line: [UInt8]) {
        let live = lock.withLock { () -> Bool in
            guard liveClients.contains(client) else { return false }
            outgoing[client, default: []] += line
            return true
        }
        if live { wake.wake() }
    }
    private var liveClients: Set<Int> = []

    /// Closes a client after what is queued for it is written.
    public func close(_ client: Int) {
        lock.withLock { _ = closing.insert(client) }
        wake.wake()
    }

    /// Stops serving; the socket file goes at once (not when the thread notices), so a
    /// process that starts next finds no stale one.
    public func stop() {
        let first = lock.withLock { () -> Bool in let f = !stopped; stopped = true; return f }
        if first { unlink(path) }
        wake.wake()
    }

    private struct Conn {
        var client: Client
        var fd: Int32
        var buffer: [UInt8] = []
        var skipping = false
        var tokens: Double
        var lastRefill: Double
        var lastNotice = -1e9
    }

    private func loop() {
        var conns: [Int: Conn] = [:]
        var nextID = 1
        defer {
            for c in conns.values { Glibc.close(c.fd) }
            Glibc.close(listener)
            continuation.finish()
        }
        func drop(_ id: Int) {
            guard let c = conns.removeValue(forKey: id) else { return }
            Glibc.close(c.fd)
            lock.withLock { outgoing[id] = nil; closing.remove(id); liveClients.remove(id) }
            continuation.yield(.closed(c.client))
        }
        while !lock.withLock({ stopped }) {
            let ids = Array(conns.keys)
            var fds: [(Int32, Int16)] = [(listener, Int16(POLLIN)), (wake.readFD, Int16(POLLIN))]
            let pendingOut = lock.withLock { outgoing }
            for id in ids {
                let hasOut = !(pendingOut[id]?.isEmpty ?? true)
                fds.append((conns[id]!.fd, Int16(POLLIN) | (hasOut ? Int16(POLLOUT) : 0)))
            }
            let rev = POSIX.poll(fds, timeoutMilliseconds: 500)
            if rev[1] != 0 { wake.drain() }
            if rev[0] & Int16(POLLIN) != 0 {
                while let fd = UnixSocket.accept(listener) {
                    if conns.count >= maxClients { Glibc.close(fd); continue }
                    let cred = UnixSocket.peerCredentials(fd) ?? (-1, UInt32.max, UInt32.max)
                    let client = Client(id: nextID, pid: cred.pid, uid: cred.uid, gid: cred.gid)
                    conns[nextID] = Conn(client: client, fd: fd, tokens: linesPerSecond, lastRefill: POSIX.now())
                    lock.withLock { _ = liveClients.insert(nextID) }
                    nextID += 1
                    continuation.yield(.opened(client))
                }
            }
            for (k, id) in ids.enumerated() {
                let r = rev[k + 2]
                guard var c = conns[id] else { continue }
                if r & (Int16(POLLIN) | Int16(POLLHUP) | Int16(POLLERR)) != 0 {
                    var closed = false
                    // At most 64 KiB per client per round: one fast client cannot starve the others.
                    var budget = 4
                    while budget > 0 {
                        budget -= 1
                        guard let res = try? POSIX.read(c.fd, max: 16384) else { closed = true; break }
                        switch res {
                        case .end: closed = true
                        case .wouldBlock: break
                        case .data(let bytes):
                            for b in bytes {
                                if b == UInt8(ascii: "\n") {
                                    if c.skipping { c.skipping = false; continuation.yield(.oversize(c.client)) }
                                    else if !c.buffer.isEmpty {
                                        let now = POSIX.now()
                                        c.tokens = min(linesPerSecond, c.tokens + (now - c.lastRefill) * linesPerSecond)
                                        c.lastRefill = now
                                        if c.tokens >= 1 { c.tokens -= 1; continuation.yield(.line(c.client, c.buffer)) }
                                        else if now - c.lastNotice >= 1 {
                                            // Over the limit: dropped, with one notice a second at most.
                                            c.lastNotice = now
                                            continuation.yield(.rateLimited(c.client))
                                        }
                                    }
                                    c.buffer.removeAll(keepingCapacity: true)
                                } else if !c.skipping {
                                    if c.buffer.count >= maxLine { c.skipping = true; c.buffer.removeAll() }
                                    else { c.buffer.append(b) }
                                }
                            }
                            continue
                        }
                        break
                    }
                    conns[id] = c
                    if closed { drop(id); continue }
                }
                // Write what is queued.
                let out = lock.withLock { outgoing[id] ?? [] }
                if !out.isEmpty {
                    if out.count > 1 << 20 { drop(id); continue }
                    guard let n = try? POSIX.writeSome(c.fd, out[...]) else { drop(id); continue }
                    lock.withLock { outgoing[id]?.removeFirst(n) }
                }
                let (closeNow, empty) = lock.withLock { (closing.contains(id), outgoing[id]?.isEmpty ?? true) }
                if closeNow && empty { drop(id) }
            }
            // Closing requests for clients that already went.
            lock.withLock { closing = closing.filter { conns[$0] != nil } }
        }
    }
}
