import Foundation
import Testing
@testable import TandemTransport
import TandemTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The agent's channel on its own thread, against real unix socket pairs (the peer's end held
/// by the test). What a virtio port does when its host comes and goes (end of input that is
/// not final) is tested in a guest: VMTests' channel test, whose host connects 80 times.
@Suite(.serialized, .timeLimit(.minutes(1))) struct FrameChannelTests {
    /// Socket pairs handed out one per open; the test keeps the other ends.
    final class Pairs: @unchecked Sendable {
        let lock = NSLock()
        var peers: [Int32] = []
        var refuse = false
        /// While set, an open waits for `gate` first (a frame can be sent while it is under way).
        var gated = false
        let gate = DispatchSemaphore(value: 0)
        func open() throws -> Int32 {
            if lock.withLock({ gated }) { gate.wait() }
            return try lock.withLock {
                if refuse { throw SystemError("open", "test", errno: ECONNREFUSED) }
                var fds: [Int32] = [0, 0]
                guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { throw SystemError("socketpair", "test", errno: errno) }
                POSIX.setNonBlocking(fds[1])
                peers.append(fds[1])
                return fds[0]
            }
        }
        var last: Int32 { lock.withLock { peers.last ?? -1 } }
        var count: Int { lock.withLock { peers.count } }
        deinit { for p in peers { close(p) } }
    }

    /// What the channel reported, recorded on its thread.
    final class Recorder: @unchecked Sendable {
        let lock = NSLock()
        var events: [FrameChannel.Event] = []
        func add(_ e: FrameChannel.Event) { lock.withLock { events.append(e) } }
        var all: [FrameChannel.Event] { lock.withLock { events } }
        var frames: [String] { all.compactMap { if case .frame(let f) = $0 { String(decoding: f, as: UTF8.self) } else { nil } } }
        func count(_ match: (FrameChannel.Event) -> Bool) -> Int { all.filter(match).count }
    }

    static func until(_ what: String, timeout: Double = 5, _ check: () -> Bool) async throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !check() {
            if Date() > deadline { throw SystemError("wait", "\(what) within \(timeout)s", errno: ETIMEDOUT) }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// A channel over socket pairs, started and connected (stop it when done).
    static func connected(maxQueuedBytes: Int = 1 << 20, maxFramesPerSecond: Int = 1000) async throws -> (Pairs, Recorder, FrameChannel) {
        let pairs = Pairs(), rec = Recorder()
        let ch = FrameChannel(name: "t", endpoint: .closedOnEnd, maxQueuedBytes: maxQueuedBytes, minBackoff: 0.01, maxFramesPerSecond: maxFramesPerSecond,
                              observer: rec.add) { try pairs.open() }
        ch.start()
        try await until("connected") { rec.all.contains(.connected) }
        return (pairs, rec, ch)
    }

    static func readAll(_ fd: Int32) -> String {
        var out: [UInt8] = []
        while case .data(let d)? = try? POSIX.read(fd) { out += d }
        return String(decoding: out, as: UTF8.self)
    }

    static func write(_ fd: Int32, _ s: String) { _ = try? POSIX.writeSome(fd, Array(s.utf8)[...]) }

    @Test func aSocketIsConnectedReadWrittenAndReopenedWhenItsPeerCloses() async throws {
        let pairs = Pairs(), rec = Recorder()
        pairs.gated = true
        let ch = FrameChannel(name: "t", endpoint: .closedOnEnd, minBackoff: 0.01, observer: rec.add) { try pairs.open() }
        ch.start()
        defer { ch.stop() }
        ch.send(Array("{\"early\":1}\n".utf8))   // while the first open is under way: waits for it
        pairs.lock.withLock { pairs.gated = false }
        pairs.gate.signal()
        try await Self.until("connected") { rec.all.first == .connected }
        ch.send(Array("{\"b\":2}\n".utf8))
        var got = ""
        try await Self.until("the frames at the peer") { got += Self.readAll(pairs.last); return got.contains("\"b\"") }
        #expect(got == "\n{\"early\":1}\n{\"b\":2}\n", "a newline, then what was sent while opening, then the rest")
        Self.write(pairs.last, "{\"x\":1}\n{\"y\"")
        Self.write(pairs.last, ":2}\n")
        try await Self.until("two frames") { rec.frames.count == 2 }
        #expect(rec.frames == ["{\"x\":1}", "{\"y\":2}"])
        // The peer closes: said, and a new socket opened (a second pair).
        close(pairs.last)
        try await Self.until("reopened") { pairs.count == 2 && rec.count { $0 == .connected } == 2 }
        #expect(rec.all.contains { if case .disconnected = $0 { true } else { false } })
        Self.write(pairs.last, "{\"z\":3}\n")
        try await Self.until("a frame on the new socket") { rec.frames.last == "{\"z\":3}" }
    }

    @Test func aFailedOpenIsRetriedWithBackoff() async throws {
        let pairs = Pairs(), rec = Recorder()
        pairs.refuse = true
        pairs.gated = true
        let ch = FrameChannel(name: "t", endpoint: .closedOnEnd, minBackoff: 0.02, maxBackoff: 0.08, observer: rec.add) { try pairs.open() }
        ch.start()
        defer { ch.stop() }
        ch.send(Array("{\"lost\":1}\n".utf8))   // while the first open is under way, which fails
        pairs.lock.withLock { pairs.gated = false }
        pairs.gate.signal()
        try await Self.until("three failed opens") { rec.count { if case .openFailed = $0 { true } else { false } } >= 3 }
        pairs.lock.withLock { pairs.refuse = false }
        try await Self.until("connected") { rec.all.contains(.connected) }
        #expect(ch.dropped == 1, "what was sent while a first open failed is dropped, not delivered late")
        #expect(Self.readAll(pairs.last) == "\n")
    }

    /// A peer sending faster than the channel's rate fills its own buffer: frames come at
    /// the rate, none lost.
    @Test func aFloodingPeerIsReadAtTheRate() async throws {
        let (pairs, rec, ch) = try await Self.connected(maxFramesPerSecond: 200)
        defer { ch.stop() }
        let peer = pairs.last
        let flood = (0..<500).map { "{\"n\":\($0)}\n" }.joined()
        let t0 = POSIX.now()
        var rest = Array(flood.utf8)[...]
        while !rest.isEmpty {
            let n = (try? POSIX.writeSome(peer, rest)) ?? 0
            rest = rest.dropFirst(n)
            if n == 0 { try await Task.sleep(for: .milliseconds(5)) }
        }
        try await Task.sleep(for: .milliseconds(500))
        let early = rec.frames.count
        #expect(early <= 200, "at most a second's worth in the first half second: \(early)")
        try await Self.until("all 500 frames", timeout: 10) { rec.frames.count == 500 }
        let took = POSIX.now() - t0
        #expect(took >= 1.9, "500 frames at 200 a second take over two seconds: \(took)")
        #expect(rec.frames == (0..<500).map { "{\"n\":\($0)}" })
    }

    @Test func aPeerThatDoesNotReadGetsTheNewestFramesAndTheSenderNeverBlocks() async throws {
        let (pairs, _, ch) = try await Self.connected(maxQueuedBytes: 4096)
        defer { ch.stop() }
        let frame = Array((String(repeating: "x", count: 1000) + "\n").utf8)
        let t0 = POSIX.now()
        for _ in 0..<2000 { ch.send(frame) }   // 2 MB against a socket buffer of a few hundred KB
        #expect(POSIX.now() - t0 < 2, "sending never waits for the peer")
        #expect(ch.dropped > 0, "the oldest frames beyond 4 KiB waiting were dropped")
        // The peer reads at last: everything queued arrives whole (the newest frames).
        var got = ""
        try await Self.until("every frame written or dropped") {
            got += Self.readAll(pairs.last)
            return got.filter { $0 == "\n" }.count - 1 + ch.dropped == 2000
        }
        #expect(got.split(separator: "\n").allSatisfy { $0.count == 1000 }, "no frame cut")
    }

    @Test func disconnectForKeepsItClosedThatLong() async throws {
        let (pairs, rec, ch) = try await Self.connected()
        defer { ch.stop() }
        let cut = POSIX.now()
        ch.disconnect(for: 0.3)
        try await Self.until("disconnected") { rec.all.contains(.disconnected("cut off for 0.3s")) }
        #expect(Self.readAll(pairs.peers[0]).hasPrefix("\n") && recvEOF(pairs.peers[0]), "the socket was closed")
        try await Self.until("reopened") { pairs.count == 2 }
        #expect(POSIX.now() - cut >= 0.29)
    }

    @Test func stopClosesTheDescriptorAndEndsTheEvents() async throws {
        let pairs = Pairs()
        let ch = FrameChannel(name: "t", endpoint: .closedOnEnd) { try pairs.open() }
        ch.start()
        var it = ch.events.makeAsyncIterator()
        #expect(await it.next() == .connected)
        ch.stop()
        #expect(Self.readAll(pairs.last) == "\n" && recvEOF(pairs.last))
        while let e = await it.next() { Issue.record("an event after stop: \(e)") }
        ch.send(Array("{}\n".utf8))
        #expect(ch.dropped == 1)
    }

    /// A unix socket whose listener's queue is full (another client holds QEMU's socket) blocks
    /// the opener in connect(2): stop() still returns within its two seconds, and the thread
    /// ends once the opener gives up, saying nothing more.
    @Test func stopDoesNotWaitForAnOpenerBlockedInConnect() async throws {
        let path = NSTemporaryDirectory() + "tandem-fc-\(getpid())-\(UUID().uuidString.prefix(8)).sock"
        defer { unlink(path) }
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        try #require(bound == 0 && listen(listener, 0) == 0)
        let first = try UnixSocket.connect(path)   // fills the queue (backlog 0 takes one)
        defer { close(first) }
        let rec = Recorder()
        let ch = FrameChannel(name: "t", endpoint: .closedOnEnd, observer: rec.add) { try UnixSocket.connect(path) }
        ch.start()
        try await Task.sleep(for: .milliseconds(300))   // the thread is in connect(2) now
        let t0 = POSIX.now()
        ch.stop()
        let took = POSIX.now() - t0
        #expect(took >= 1.9 && took < 3, "stop waited \(took)s for a thread stuck in the opener")
        close(listener)   // the blocked connect gives up
        var it = ch.events.makeAsyncIterator()
        while let e = await it.next() { Issue.record("an event after stop: \(e)") }
        #expect(rec.all.isEmpty, "\(rec.all)")
    }

    /// The peer's end reads end-of-file: the channel closed its side.
    func recvEOF(_ fd: Int32) -> Bool {
        _ = POSIX.poll([(fd, Int16(POLLIN))], timeoutMilliseconds: 1000)
        if case .end? = try? POSIX.read(fd) { return true }
        return false
    }
}
