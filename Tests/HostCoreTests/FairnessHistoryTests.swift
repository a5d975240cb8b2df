import Testing
@testable import HostCore

/// The fairness page's history: a ring of the last samples, served in columns.
@Suite struct FairnessHistoryTests {
    static func table(_ vms: [(String, UInt64)], jain: Double? = nil) -> [LinkFairness] {
        [LinkFairness(link: "up", capacity: 1_000, utilisation: 0, jain: jain,
                      vms: vms.map { .init(vm: $0.0, weight: 1, min: 0, max: nil, demand: $0.1, allocation: $0.1 * 2, measured: $0.1, share: 0, agent: "none", reserved: 0) })]
    }

    @Test func keepsTheLastSamplesOldestFirst() {
        let h = FairnessHistory(capacity: 3)
        for t in 1...5 { h.record(time: Double(t), links: Self.table([("a", UInt64(t))]), reservations: []) }
        let r = h.report(version: "v", now: 9)
        #expect(r.times == [3, 4, 5])
        #expect(r.history.first?.vms.first?.measured == [3, 4, 5])
        #expect(r.history.first?.vms.first?.allocation == [6, 8, 10])
        #expect(r.links.first?.vms.first?.measured == 5, "the latest table")
    }

    @Test func aVMThatCameOrWentHasGapsWhereItWasNotThere() {
        let h = FairnessHistory()
        h.record(time: 1, links: Self.table([("a", 1)]), reservations: [])
        h.record(time: 2, links: Self.table([("a", 2), ("b", 20)], jain: 0.9), reservations: [])
        h.record(time: 3, links: Self.table([("b", 30)], jain: nil), reservations: [])
        let r = h.report(version: "v", now: 4)
        let series = Dictionary(uniqueKeysWithValues: (r.history.first?.vms ?? []).map { ($0.vm, $0.measured) })
        #expect(series["a"] == [1, 2, nil])
        #expect(series["b"] == [nil, 20, 30])
        #expect(r.history.first?.jain == [nil, 0.9, nil])
    }
}
