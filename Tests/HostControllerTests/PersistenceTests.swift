import Foundation
import Testing
import TandemProtocol
import TandemLabSupport
import TandemTestSupport
@testable import HostController
@testable import HostCore

/// state.json on a bad day (issue #18, item 4): unreadable at start, not writable while
/// running. Real files in a temporary directory; the "cannot write" case puts a regular file
/// where the state directory's parent should be (root ignores permission bits, not that).
@Suite(.serialized) struct PersistenceTests {
    static func tempDir() throws -> String {
        let d = NSTemporaryDirectory() + "tandem-persist-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }

    @Test func anUnreadableStateFileIsMovedAsideAndTheConfigurationsPolicyApplies() async throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "{ this is not what tandem wrote".write(toFile: dir + "/state.json", atomically: true, encoding: .utf8)
        let rig = try Rig(stateDir: dir)
        await rig.controller.prepare()
        for _ in 0..<5 { await rig.round(["vm1": .mbit(400), "vm2": .mbit(400)]) }
        #expect(rig.backends["vm1"]!.limit != nil, "limits set")
        let status = await rig.controller.status(now: rig.now)
        let problem = try #require(status.state)
        #expect(problem.contains("moved to \(dir)/state.json.unreadable-"), "\(problem)")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir)
        let aside = try #require(files.first { $0.hasPrefix("state.json.unreadable-") })
        #expect(try String(contentsOfFile: dir + "/" + aside, encoding: .utf8) == "{ this is not what tandem wrote", "nothing of it lost")
        #expect(await rig.controller.fairness()[0].vms[0].min == 50_000_000, "the configuration's policy")
    }

    @Test func aPolicyThatCannotBeSavedIsNotAppliedAndSaysWhy() async throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "".write(toFile: dir + "/blocker", atomically: true, encoding: .utf8)
        let rig = try Rig(stateDir: dir + "/blocker/state")
        await rig.controller.prepare()
        await #expect(throws: PolicyError.self) { _ = try await rig.controller.setPolicy(vm: "vm1", weight: 3, min: nil, max: nil) }
        do { _ = try await rig.controller.setPolicy(vm: "vm1", weight: 3, min: nil, max: nil) } catch {
            #expect("\(error)".hasPrefix("not applied: it could not be saved"), "\(error)")
        }
        #expect(await rig.controller.fairness()[0].vms[0].weight == 1, "not applied")
        // The directory can be made now: the same request goes through.
        try FileManager.default.removeItem(atPath: dir + "/blocker")
        _ = try await rig.controller.setPolicy(vm: "vm1", weight: 3, min: nil, max: nil)
        #expect(await rig.controller.fairness()[0].vms[0].weight == 3)
        #expect(FileManager.default.fileExists(atPath: dir + "/blocker/state/state.json"))
    }

    /// A guest churning reservations on a slow disk (0.3 s a write): the rounds do not wait
    /// for the writes (issue #18, item 2). Measured as the time each round takes.
    @Test func aSlowDiskDoesNotHoldTheRounds() async throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let rig = try Rig(stateDir: dir)
        rig.slowDisk = 0.3
        try rig.makeController()
        await rig.controller.prepare()
        await rig.connect("vm1")
        var slowest = 0.0
        for i in 0..<30 {
            // As many reserve/release pairs as the guest's message budget lets through.
            await rig.guest("vm1", .reserve(ReserveRequest(id: "r-\(i)", rate: .mbit(1), selector: FlowSelector(proto: .tcp, destinationPort: 5201))))
            await rig.guest("vm1", .release(ReleaseRequest(id: "r-\(i)")))
            let t0 = Date()
            await rig.round(["vm1": .mbit(40), "vm2": .mbit(40)])
            slowest = max(slowest, Date().timeIntervalSince(t0))
        }
        print("slow disk: the slowest of 30 rounds took \(String(format: "%.1f", slowest * 1000)) ms with 0.3 s writes")
        #expect(slowest < 0.2, "a round waited for the disk: \(slowest) s (2x the 100 ms interval is the bound)")
        await rig.controller.flush()
        #expect(FileManager.default.fileExists(atPath: dir + "/state.json"))
    }

    @Test func reservationsThatCouldNotBeSavedAreWrittenOnceTheyCanBe() async throws {
        let dir = try Self.tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "".write(toFile: dir + "/blocker", atomically: true, encoding: .utf8)
        let rig = try Rig(stateDir: dir + "/blocker/state")
        await rig.controller.prepare()
        await rig.connect("vm1")
        let selector = FlowSelector(proto: .tcp, destination: IPPrefix("10.0.0.9"), destinationPort: 5201)
        await rig.guest("vm1", .reserve(ReserveRequest(id: "r-1", rate: .mbit(10), selector: selector)))
        for _ in 0..<15 { await rig.round(["vm1": .mbit(40)]) }
        await rig.controller.flush()   // (writes run beside the rounds: their outcome waited for)
        let problem = try #require(await rig.controller.status(now: rig.now).state)
        #expect(problem.hasPrefix("not saved, retrying: "), "\(problem)")
        try FileManager.default.removeItem(atPath: dir + "/blocker")
        for _ in 0..<15 { await rig.round(["vm1": .mbit(40)]) }
        await rig.controller.flush()
        #expect(await rig.controller.status(now: rig.now).state == nil)
        let saved = try String(contentsOfFile: dir + "/blocker/state/state.json", encoding: .utf8)
        #expect(saved.contains("r-1"), "the reservation was kept and written: \(saved)")
    }

    /// The state directory on a real filesystem that fills up and then goes read-only: a
    /// 64 KiB tmpfs of the test's own, unmounted after. The controller keeps running and
    /// enforcing, says why nothing is saved, refuses what it cannot save, loses nothing
    /// already saved, and writes what waited once it can; a controller started on the
    /// read-only directory takes what was saved.
    @Test(Privileged.enabled) func aFullDiskAndAReadOnlyStateDirectoryLoseNothing() async throws {
        let dir = try Self.tempDir()
        try Shell.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tandem-test", dir])
        defer {
            _ = try? Shell.run(["umount", dir])
            try? FileManager.default.removeItem(atPath: dir)
        }
        let rig = try Rig(stateDir: dir)
        await rig.controller.prepare()
        _ = try await rig.controller.setPolicy(vm: "vm1", weight: 3, min: nil, max: nil)
        let saved = try String(contentsOfFile: dir + "/state.json", encoding: .utf8)
        #expect(saved.contains("\"weight\" : 3"), "\(saved)")

        // Full: what is there is left, a policy change is refused, a reservation waits.
        _ = try? Shell.run(["dd", "if=/dev/zero", "of=\(dir)/fill", "bs=4k"])
        do {
            _ = try await rig.controller.setPolicy(vm: "vm1", weight: 5, min: nil, max: nil)
            Issue.record("a policy that cannot be saved was applied")
        } catch {
            #expect("\(error)".contains("No space left on device"), "\(error)")
        }
        #expect(await rig.controller.fairness()[0].vms[0].weight == 3)
        await rig.connect("vm1")
        let selector = FlowSelector(proto: .tcp, destination: IPPrefix("10.0.0.9"), destinationPort: 5201)
        await rig.guest("vm1", .reserve(ReserveRequest(id: "r-full", rate: .mbit(10), selector: selector)))
        for _ in 0..<15 { await rig.round(["vm1": .mbit(400), "vm2": .mbit(400)]) }
        await rig.controller.flush()
        let full = try #require(await rig.controller.status(now: rig.now).state)
        #expect(full.hasPrefix("not saved, retrying: ") && full.contains("No space left on device"), "\(full)")
        #expect(try String(contentsOfFile: dir + "/state.json", encoding: .utf8) == saved, "what was saved is intact")
        #expect(rig.backends["vm1"]!.limit != nil && rig.backends["vm2"]!.limit != nil, "limits still enforced")

        // Room again: the waiting reservation is written.
        try FileManager.default.removeItem(atPath: dir + "/fill")
        for _ in 0..<15 { await rig.round(["vm1": .mbit(400), "vm2": .mbit(400)]) }
        await rig.controller.flush()
        #expect(await rig.controller.status(now: rig.now).state == nil)
        let written = try String(contentsOfFile: dir + "/state.json", encoding: .utf8)
        #expect(written.contains("r-full") && written.contains("\"weight\" : 3"))

        // Read-only: the same, with the filesystem's own error.
        try Shell.run(["mount", "-o", "remount,ro", dir])
        do {
            _ = try await rig.controller.setPolicy(vm: "vm2", weight: 2, min: nil, max: nil)
            Issue.record("a policy that cannot be saved was applied")
        } catch {
            #expect("\(error)".contains("Read-only file system"), "\(error)")
        }
        await rig.guest("vm1", .release(ReleaseRequest(id: "r-full")))
        for _ in 0..<15 { await rig.round(["vm1": .mbit(400), "vm2": .mbit(400)]) }
        await rig.controller.flush()
        #expect(await rig.controller.status(now: rig.now).state?.contains("Read-only file system") == true)
        #expect(try String(contentsOfFile: dir + "/state.json", encoding: .utf8) == written)
        // A controller started now, on the read-only directory, takes what was saved.
        let again = try Rig(stateDir: dir)
        await again.controller.prepare()
        #expect(await again.controller.fairness()[0].vms[0].weight == 3)
        #expect(await again.controller.status(now: again.now).state == nil, "reading needs no writing")
        try Shell.run(["mount", "-o", "remount,rw", dir])
        for _ in 0..<15 { await rig.round(["vm1": .mbit(400), "vm2": .mbit(400)]) }
        await rig.controller.flush()
        #expect(await rig.controller.status(now: rig.now).state == nil)
        #expect(!(try String(contentsOfFile: dir + "/state.json", encoding: .utf8)).contains("r-full"), "the release written")
    }
}
