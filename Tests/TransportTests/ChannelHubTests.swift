import Foundation
import Testing
@testable import TandemTransport
import TandemTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The host's channels, served in passes, against real unix sockets standing in for QEMU's
/// (the listener is the "VM", as QEMU serves the socket and the host connects).
@Suite(.serialized, .exclusive) struct ChannelHubTests {
    final class Peer {
        let path: String
        let listener: Int32
        var conn: Int32 = -1
        init() throws {
            path = NSTemporaryDirectory() + "tandem-hub-\(getpid())-\(UUID().uuidString.prefix(8)).sock"
            listener = try UnixSocket.listen(path, mode: 0o600)
        }
        /// Accepts the hub's connection (made in its last pass).
        func accept() -> Bool {
            if conn >= 0 { close(conn) }
            conn = UnixSocket.accept(listener) ?? -1
            return conn >= 0
        }
        func write(_ s: String) { _ = try? POSIX.writeSome(conn, Array(s.utf8)[...]) }
        func readAll() -> String {
            var out: [UInt8] = []
            while case .data(let d)? = try? POSIX.read(conn) { out += d }
            return String(decoding: out, as: UTF8.self)
        }
        func hangUp() { close(conn); conn = -1 }
        deinit { if conn >= 0 { close(conn) }; close(listener); unlink(path) }
    }

    func frames(_ events: [(String, FrameChannel.Event)]) -> [String] {
        events.compactMap { if case .frame(let f) = $0.1 { return String(decoding: f, as: UTF8.self) } else { return nil } }
    }

    /// The hub watched by a daemon's loop (issue #17): a frame wakes the loop at once, once,
    /// and not again until the caller's pass re-arms the watch; wake-ups are at least
    /// `minGap` apart.
    @Test func aFrameWakesTheLoopOnceUntilRearmed() async throws {
        let peer = try Peer()
        let hub = ChannelHub()
        defer { hub.stop() }
        _ = hub.add(name: "vm1") { [path = peer.path] in try UnixSocket.connect(path) }
        _ = hub.service(now: 1)
        #expect(peer.accept())
        final class Wakes: @unchecked Sendable { let lock = NSLock(); var times: [Double] = [] }
        let wakes = Wakes()
        let loop = DaemonLoop(name: "test-loop")
        loop.start()
        defer { loop.stop() }
        loop.watch(hub.readinessFD, minGap: 0.05) { wakes.lock.withLock { wakes.times.append(POSIX.now()) } }
        try await Task.sleep(for: .milliseconds(100))
        #expect(wakes.lock.withLock { wakes.times.isEmpty }, "nothing to read, no wake-up")
        let sent = POSIX.now()
        peer.write("{\"a\":1}\n")
        var first: Double?
        for _ in 0..<200 where first == nil { first = wakes.lock.withLock { wakes.times.first }; try await Task.sleep(for: .milliseconds(1)) }
        let woke = try #require(first, "woken by the frame")
        print("hub waker: woken \(String(format: "%.2f", (woke - sent) * 1000)) ms after the frame was written")
        #expect(woke - sent < 1, "woken by the frame itself (no pass runs in this test)")
        // Unread, but not re-armed: no second wake-up.
        try await Task.sleep(for: .milliseconds(100))
        #expect(wakes.lock.withLock { wakes.times.count } == 1)
        // Re-armed with the frame still unread: woken again, not (much) before minGap.
        loop.rearm()
        var times: [Double] = []
        for _ in 0..<100 where times.count < 2 { times = wakes.lock.withLock { wakes.times }; try await Task.sleep(for: .milliseconds(10)) }
        #expect(times.count == 2 && times[1] - times[0] >= 0.045, "\(times)")
        // Read, re-armed: quiet again.
        #expect(frames(hub.service(now: 2)) == ["{\"a\":1}"])
        loop.rearm()
        try await Task.sleep(for: .milliseconds(100))
        #expect(wakes.lock.withLock { wakes.times.count } == 2)
    }

    @Test func readsWritesAndReconnects() throws {
        let peer = try Peer()
        let hub = ChannelHub()
        defer { hub.stop() }
        let ch = hub.add(name: "vm1", minBackoff: 0.5, maxBackoff: 2) { [path = peer.path] in try UnixSocket.connect(path) }
        var now = 100.0

        let first = hub.service(now: now)
        #expect(first.count == 1 && first[0].0 == "vm1" && first[0].1 == .connected)
        #expect(peer.accept())
        // The hub starts the connection with a bare newline (ends a cut frame in the peer).
        #expect(peer.readAll() == "\n")

        // Two frames and half a third arrive between passes: one pass reads them all.
        peer.write("{\"a\":1}\n{\"b\":2}\n{\"c\"")
        #expect(frames(hub.service(now: now)) == ["{\"a\":1}", "{\"b\":2}"])
        peer.write(":3}\n")
        #expect(frames(hub.service(now: now)) == ["{\"c\":3}"])
        // Nothing waiting: a pass returns nothing.
        #expect(hub.service(now: now).isEmpty)

        // Sends are written at once, in order.
        ch.send(Array("one\n".utf8)); ch.send(Array("two\n".utf8))
        #expect(peer.readAll() == "one\ntwo\n")
        #expect(hub.flush(now: now).isEmpty)

        // The peer goes away: disconnected, then no reconnect before the backoff has passed.
        peer.hangUp()
        let lost = hub.service(now: now)
        #expect(lost.count == 1)
        if case .disconnected = lost.first?.1 {} else { Issue.record("expected disconnected, got \(lost)") }
        // Frames sent while nobody is connected are dropped, not delivered late.
        ch.send(Array("stale\n".utf8))
        #expect(ch.dropped == 1)
        now += 0.2
        #expect(hub.service(now: now).isEmpty)
        now += 0.4
        #expect(hub.service(now: now).map(\.1) == [.connected])
        #expect(peer.accept())
        #expect(peer.readAll() == "\n")
    }

    /// A peer that does not read: what its socket does not take waits (up to the queue's
    /// bound, older frames dropped beyond it) and goes out whole and in order once it reads.
    @Test func aFullSocketKeepsTheRestForLater() throws {
        let peer = try Peer()
        let hub = ChannelHub()
        defer { hub.stop() }
        let ch = hub.add(name: "vm1", maxQueuedBytes: 1 << 20) { [path = peer.path] in try UnixSocket.connect(path) }
        _ = hub.service(now: 0)
        #expect(peer.accept())
        #expect(peer.readAll() == "\n")
        let frames = (0..<40).map { i in [UInt8](repeating: UInt8(ascii: "a") + UInt8(i % 26), count: 65535) + [10] }
        for f in frames { ch.send(f) }
        #expect(ch.dropped > 0, "2.5 MiB do not fit a socket buffer and a 1 MiB queue")
        var got: [UInt8] = []
        for _ in 0..<1000 {
            got += Array(peer.readAll().utf8)
            _ = hub.flush(now: 0)
            if got.count + ch.dropped * 65536 >= 40 * 65536 { break }
        }
        got += Array(peer.readAll().utf8)
        let lines = got.split(separator: 10, omittingEmptySubsequences: false).dropLast()
        #expect(lines.count + ch.dropped == 40)
        #expect(lines.allSatisfy { $0.count == 65535 && Set($0).count == 1 }, "only whole frames")
        // In order: the first frames (in the socket) and then the newest (the queue's).
        let order = lines.map { Int($0.first! - UInt8(ascii: "a")) }
        #expect(order.first == 0 && order.last == 39 % 26)
    }

    /// A send that finds the peer gone is reported by the next pass; nothing is written after.
    @Test func aPeerGoneWhileSendingIsReportedByTheNextPass() throws {
        let peer = try Peer()
        let hub = ChannelHub()
        defer { hub.stop() }
        let ch = hub.add(name: "vm1", minBackoff: 1) { [path = peer.path] in try UnixSocket.connect(path) }
        _ = hub.service(now: 0)
        #expect(peer.accept())
        peer.hangUp()
        ch.send(Array("lost\n".utf8))
        let events = hub.service(now: 0.1)
        #expect(events.count == 1)
        if case .disconnected = events.first?.1 {} else { Issue.record("expected disconnected, got \(events)") }
        ch.send(Array("dropped\n".utf8))
        #expect(ch.dropped >= 1)
    }

    @Test func openFailuresBackOffAndRecover() throws {
        let path = NSTemporaryDirectory() + "tandem-hub-absent-\(getpid()).sock"
        unlink(path)
        let hub = ChannelHub()
        defer { hub.stop() }
        _ = hub.add(name: "vm1", minBackoff: 1, maxBackoff: 4) { try UnixSocket.connect(path) }
        var now = 0.0
        var attempts: [Double] = []
        while now < 10 {
            for (_, e) in hub.service(now: now) { if case .openFailed = e { attempts.append(now) } }
            now += 0.25
        }
        // 1 s, 2 s, then 4 s (the cap) between attempts.
        #expect(attempts == [0, 1, 3, 7])
    }

    @Test func cutOffClosesAndStaysAwayForThePause() throws {
        let peer = try Peer()
        let hub = ChannelHub()
        defer { hub.stop() }
        let ch = hub.add(name: "vm1", minBackoff: 0.1) { [path = peer.path] in try UnixSocket.connect(path) }
        _ = hub.service(now: 0)
        #expect(peer.accept())
        ch.disconnect(for: 5)
        let cut = hub.service(now: 1)
        #expect(cut.count == 1)
        if case .disconnected(let why) = cut.first?.1 { #expect(why.contains("cut off")) } else { Issue.record("expected disconnected, got \(cut)") }
        // The peer sees the connection closed (after the greeting newline).
        #expect(peer.readAll() == "\n")
        var b: UInt8 = 0
        #expect(Glibc.read(peer.conn, &b, 1) == 0)
        #expect(hub.service(now: 5.9).isEmpty)
        #expect(hub.service(now: 6).map(\.1) == [.connected])
    }

    @Test func aFloodingPeerIsReadAtMostTheFrameRateEachSecond() throws {
        let peer = try Peer()
        let hub = ChannelHub()
        defer { hub.stop() }
        _ = hub.add(name: "vm1", maxFramesPerSecond: 50) { [path = peer.path] in try UnixSocket.connect(path) }
        _ = hub.service(now: 0)
        #expect(peer.accept())
        peer.write(String(repeating: "x\n", count: 500))
        var n = 0
        for t in stride(from: 0.0, to: 1, by: 0.1) { n += frames(hub.service(now: t)).count }
        // 50 in the first second, whatever was read at once; the rest waits.
        #expect(n == 50)
        #expect(frames(hub.service(now: 1.0)).count == 50)
        #expect(frames(hub.service(now: 1.5)).isEmpty)
    }
}
