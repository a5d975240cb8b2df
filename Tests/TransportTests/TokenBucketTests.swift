import Testing
@testable import TandemTransport

@Suite struct TokenBucketTests {
    @Test func aBurstThenTheRate() {
        var b = TokenBucket(rate: 4, burst: 8)
        var taken = 0
        for _ in 0..<10 where b.take(at: 100) { taken += 1 }
        #expect(taken == 8)
        let a1 = b.take(at: 100.1), a2 = b.take(at: 100.25), a3 = b.take(at: 100.25)
        #expect(!a1 && a2 && !a3)
        let fullSoon = b.isFull(at: 101), fullLater = b.isFull(at: 103)
        #expect(!fullSoon)
        #expect(fullLater)
        // A clock that goes back adds nothing.
        var c = TokenBucket(rate: 4, burst: 1)
        let c1 = c.take(at: 10), c2 = c.take(at: 5)
        #expect(c1 && !c2)
    }
}
