import Testing
@testable import HostController

/// The daemon loop's mailbox (issue #17): events in order, the oldest dropped beyond the
/// limit, and a stalled loop's queue kept within twice the limit (found in review: dropped
/// events' slots stayed in the array).
@Suite struct MailboxTests {
    static func name(_ e: HostDaemon.Event?) -> String {
        switch e {
        case .tick?: "tick"
        case .channels?: "channels"
        case .reload?: "reload"
        case .due?: "due"
        case nil: "nil"
        default: "other"
        }
    }

    @Test func beyondTheLimitTheOldestGoAndTheQueueStaysBounded() async {
        let box = HostDaemon.Mailbox(limit: 2048)
        let kinds: [HostDaemon.Event] = [.tick, .channels, .reload, .due]
        // A loop that takes nothing while 10,000 events come.
        for i in 0..<10_000 { box.yield(kinds[i % 4]) }
        #expect(box.count == 2048)
        #expect(box.slots <= 2 * 2048, "slots held: \(box.slots)")
        // The newest 2048 are kept, oldest first: event 7952 is the first (7952 % 4 == 0).
        #expect(Self.name(await box.next()) == "tick")
        #expect(Self.name(await box.next()) == "channels")
        for _ in 0..<2046 { _ = await box.next() }
        #expect(box.count == 0)
        box.finish()
        #expect(Self.name(await box.next()) == "nil")
    }

    @Test func aWaitingReaderIsGivenTheEventAndFinishEndsIt() async {
        let box = HostDaemon.Mailbox(limit: 4)
        async let first = box.next()
        try? await Task.sleep(for: .milliseconds(20))
        box.yield(.reload)
        #expect(Self.name(await first) == "reload")
        async let second = box.next()
        try? await Task.sleep(for: .milliseconds(20))
        box.finish()
        #expect(Self.name(await second) == "nil")
    }
}
