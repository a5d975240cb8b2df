import Testing
import TandemTestSupport
@testable import TandemProtocol

/// Feeds a stream to a decoder in the given chunks and returns what came out.
func decodeAll(_ stream: [UInt8], chunks: [Int]? = nil, max: Int = Limits.maxFrameBytes) -> [FrameDecoder.Event] {
    var d = FrameDecoder(maxFrameBytes: max)
    var out: [FrameDecoder.Event] = []
    var i = 0
    var sizes = chunks ?? [stream.count]
    while i < stream.count {
        let n = Swift.max(1, Swift.min(sizes.isEmpty ? stream.count : sizes.removeFirst(), stream.count - i))
        d.feed(stream[i..<(i + n)])
        while let e = d.next() { out.append(e) }
        #expect(d.bufferedBytes < max)
        i += n
    }
    return out
}

func frames(_ events: [FrameDecoder.Event]) -> [GuestMessage] {
    events.compactMap {
        if case .frame(let f) = $0, case .message(let m, _, _) = MessageCodec.decodeGuest(f) { return m }
        return nil
    }
}

@Suite struct Framing {
    static let stream: [UInt8] = Samples.guest.flatMap { MessageCodec.encode($0, session: Samples.session) }

    @Test func allAtOnce() { #expect(frames(decodeAll(Self.stream)) == Samples.guest) }

    @Test func oneByteAtATime() {
        #expect(frames(decodeAll(Self.stream, chunks: Array(repeating: 1, count: Self.stream.count))) == Samples.guest)
    }

    @Test(arguments: [1, 2, 3, 42, 1234])
    func randomSplits(seed: UInt64) {
        var rng = SplitMix(seed: seed)
        var chunks: [Int] = []
        var total = 0
        while total < Self.stream.count { let n = Int(rng.next() % 300) + 1; chunks.append(n); total += n }
        #expect(frames(decodeAll(Self.stream, chunks: chunks)) == Samples.guest)
    }

    @Test func messageByMessage() {
        let chunks = Samples.guest.map { MessageCodec.encode($0, session: Samples.session).count }
        #expect(frames(decodeAll(Self.stream, chunks: chunks)) == Samples.guest)
    }

    @Test func garbageBeforeBetweenAndInsideFrames() {
        let a = MessageCodec.encode(.ping(Ping(nonce: 1)), session: Samples.session)
        let b = MessageCodec.encode(.ping(Ping(nonce: 2)), session: Samples.session)
        let c = MessageCodec.encode(.ping(Ping(nonce: 3)), session: Samples.session)
        var s: [UInt8] = Array("\u{1}\u{2}garbage\u{ff}".utf8) + [0xff, 0x00] + Array("\n".utf8)   // garbage before
        s += a
        s += Array("}}}{{{\n\n\r\n".utf8)                                                         // garbage between
        s += b.prefix(20) + Array("\u{7}noise".utf8) + b.dropFirst(20)                             // garbage inside b: b is lost
        s += c
        let events = decodeAll(s, chunks: Array(repeating: 7, count: s.count))
        #expect(frames(events) == [.ping(Ping(nonce: 1)), .ping(Ping(nonce: 3))])
        let refused = events.filter { if case .frame(let f) = $0, case .invalid = MessageCodec.decodeGuest(f) { return true }; return false }
        #expect(refused.count == 3, "the garbage line, the braces line and the corrupted frame")
    }

    @Test func cutFrameFromRestartedPeerCostsOnlyThatFrame() {
        // A peer dies mid-frame, restarts, and (as agents do) starts with a bare newline.
        let cut = Array(MessageCodec.encode(.ping(Ping(nonce: 1)), session: Samples.session).prefix(15))
        let fresh = [UInt8(ascii: "\n")] + MessageCodec.encode(.ping(Ping(nonce: 2)), session: SessionID(7))
        #expect(frames(decodeAll(cut + fresh)) == [.ping(Ping(nonce: 2))])
    }

    @Test func oversizeFrameIsSkippedWithoutBufferingIt() {
        let max = 1024
        let huge = Array(repeating: UInt8(ascii: "x"), count: 10 * max) + [UInt8(ascii: "\n")]
        let ok = MessageCodec.encode(.ping(Ping(nonce: 9)), session: Samples.session)
        // decodeAll checks that the buffer never reaches the limit.
        let events = decodeAll(huge + ok, chunks: [100, 5000, 3, 9000], max: max)
        #expect(events.first == .oversize(bytes: huge.count))
        #expect(frames(events) == [.ping(Ping(nonce: 9))])
    }

    @Test func frameOfExactlyTheLimitPassesOneMoreDoesNot() {
        let max = 64
        let fits = Array(repeating: UInt8(ascii: "a"), count: max - 1) + [10]
        let over = Array(repeating: UInt8(ascii: "b"), count: max) + [10]
        #expect(decodeAll(fits, max: max) == [.frame(Array(fits.dropLast()))])
        #expect(decodeAll(over, max: max) == [.oversize(bytes: max + 1)])
    }

    @Test func staleBytesBeforeHandshakeAreDroppedBySession() {
        // QEMU hands a new host client what the guest wrote before: demand of an old session.
        let old = SessionID(1), new = SessionID(2)
        var s = MessageCodec.encode(.demand(DemandReport(sequence: 99, intervalMilliseconds: 100, epoch: 4, rate: .mbit(5), wantsMore: false)), session: old)
        s += MessageCodec.encode(.hello(Hello(agentVersion: "x", interface: "eth0", mac: "52:54:00:00:00:01")), session: new)
        s += MessageCodec.encode(.demand(DemandReport(sequence: 1, intervalMilliseconds: 100, epoch: 0, rate: .mbit(6), wantsMore: false)), session: new)
        var handshake = HandshakeFilter()
        var accepted: [GuestMessage] = []
        for case .frame(let f) in decodeAll(s) {
            if case .message(let m, let sess, _) = MessageCodec.decodeGuest(f), handshake.accept(m, session: sess) { accepted.append(m) }
        }
        #expect(accepted.count == 2)
        #expect(handshake.session == new)
        if case .demand(let d) = accepted.last { #expect(d.sequence == 1) } else { Issue.record("expected the new demand") }
    }
}

