import Testing
@testable import TandemTransport

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

    @Test func backoffDoublesUpToItsMaximumAndResets() {
        var b = Backoff(min: 0.1, max: 0.5)
        #expect([b.next(), b.next(), b.next(), b.next(), b.next()] == [0.1, 0.2, 0.4, 0.5, 0.5])
        b.reset()
        #expect(b.next() == 0.1)
    }
}
