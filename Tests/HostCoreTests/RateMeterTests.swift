import Testing
import TandemProtocol
@testable import HostCore

@Suite struct RateMeterTests {
    @Test func steadyRate() {
        var m = RateMeter(ceiling: .gbit(10))
        #expect(m.sample(bytes: 0, at: 0) == .first)
        #expect(m.sample(bytes: 12_500_000, at: 1) == .rate(.mbit(100)))
        #expect(m.sample(bytes: 12_500_000, at: 2) == .rate(.zero))
    }

    @Test(arguments: [UInt64(1) << 32, UInt64(1) << 36])
    func wrapsAreRatesNotHuge(width: UInt64) {
        var m = RateMeter(ceiling: .gbit(10))
        _ = m.sample(bytes: width - 1_000_000, at: 0)
        #expect(m.sample(bytes: 250_000, at: 0.1) == .wrapped(.mbit(100)))
    }

    @Test func resetIsReportedNotNegative() {
        var m = RateMeter(ceiling: .gbit(10))
        _ = m.sample(bytes: 9_000_000_000_000, at: 0)
        #expect(m.sample(bytes: 1_000, at: 1) == .reset)
        #expect(m.sample(bytes: 1_000 + 125_000, at: 2) == .rate(.mbit(1)), "and carries on from the new value")
    }

    @Test func glitchesAreClamped() {
        var m = RateMeter(ceiling: .gbit(1))
        _ = m.sample(bytes: 0, at: 0)
        #expect(m.sample(bytes: 1 << 40, at: 0.001) == .rate(.gbit(1)))
        #expect(m.sample(bytes: 1 << 40, at: 0.001) == .rate(.zero), "no time passed: no rate")
    }
}
