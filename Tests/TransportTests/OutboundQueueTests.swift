import Testing
@testable import TandemTransport
#if canImport(Glibc)
import Glibc
#endif

@Suite struct OutboundQueueTests {
    @Test func theOldestGoFirstWhenFull() {
        var q = OutboundQueue(maxBytes: 10)
        q.append([1, 1, 1, 1])
        q.append([2, 2, 2, 2])
        q.append([3, 3, 3, 3])   // 12 bytes: the first goes
        #expect(q.dropped == 1 && q.bytes == 8 && q.count == 2)
        #expect(q.popFirst() == [2, 2, 2, 2])
        #expect(q.popFirst() == [3, 3, 3, 3])
        #expect(q.popFirst() == nil && q.isEmpty && q.bytes == 0)
    }

    @Test func aFrameLargerThanTheQueueIsDroppedItself() {
        var q = OutboundQueue(maxBytes: 3)
        q.append([9, 9, 9, 9])
        #expect(q.isEmpty && q.dropped == 1 && q.bytes == 0)
    }

    @Test func dropAllAndRefusedAreCounted() {
        var q = OutboundQueue(maxBytes: 100)
        for i in 0..<5 { q.append([UInt8(i)]) }
        q.dropAll()
        q.refused()
        #expect(q.isEmpty && q.dropped == 6)
        q.append([7])
        #expect(q.popFirst() == [7])
    }

    @Test func manyFramesInAndOutKeepTheirOrder() {
        var q = OutboundQueue(maxBytes: 1 << 20)
        var out: [UInt8] = []
        for round in 0..<50 {
            for i in 0..<20 { q.append([UInt8((round * 20 + i) % 256)]) }
            for _ in 0..<15 { out += q.popFirst() ?? [] }
        }
        while let f = q.popFirst() { out += f }
        #expect(out == (0..<1000).map { UInt8($0 % 256) })
        #expect(q.dropped == 0)
    }

    /// Written to a socket that takes part of a frame: the rest goes next time, from where it
    /// stopped, after the newline a new connection starts with; dropAll drops the half-written
    /// frame too.
    @Test func aFrameCutByAFullSocketIsFinishedNextTime() throws {
        var fds: [Int32] = [0, 0]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        defer { close(fds[0]); close(fds[1]) }
        POSIX.setNonBlocking(fds[0]); POSIX.setNonBlocking(fds[1])
        var q = OutboundQueue(maxBytes: 1 << 22)
        q.connectionOpened()
        let frames = (0..<64).map { i in Array(repeating: UInt8(65 + i % 26), count: 32_767) + [10] }
        for f in frames { q.append(f) }
        var got: [UInt8] = []
        while !q.isEmpty {
            try q.write(to: fds[0])
            while case .data(let d)? = try? POSIX.read(fds[1]) { got += d }
        }
        #expect(got == [10] + frames.flatMap { $0 })
        q.append([1, 2, 3])
        q.connectionOpened()
        #expect(!q.isEmpty)
        q.dropAll()
        #expect(q.isEmpty)
        try q.write(to: fds[0])
        #expect((try? POSIX.read(fds[1])).map { if case .wouldBlock = $0 { true } else { false } } == true, "nothing written after dropAll")
    }

    @Test func backoffDoublesUpToItsMaximumAndResets() {
        var b = Backoff(min: 0.1, max: 0.5)
        #expect([b.next(), b.next(), b.next(), b.next(), b.next()] == [0.1, 0.2, 0.4, 0.5, 0.5])
        b.reset()
        #expect(b.next() == 0.1)
    }
}
