import Foundation
import Testing
import TandemLab
import HostCore
import TandemTestSupport
import TandemLabSupport

/// The closed loop end to end: the real lab with short phases, as CI runs it.
@Suite(.serialized, Privileged.traffic, .exclusive)
struct LabTests {
    @Test func shortLabMeetsPhaseTwoAndThreeTargets() async throws {
        try await TrafficGate.shared.run {
            let r = try Shell.run([Binaries.path("tandem-host"), "lab", "--phase", "3s", "--json"])
            let report = try JSONDecoder().decode(Lab.Report.self, from: Data(r.stdout.utf8))
            #expect(report.phases.count == 4)
            let p1 = report.phases[0], p2 = report.phases[1], p3 = report.phases[2]
            print("lab: phase 1 TCP \(p1.vms[0].share), phase 2 TCP \(p2.vms[0].share) Jain \(p2.jain ?? 0) converged \(p2.convergence ?? -1)s, phase 3 UDP \(p3.vms[1].share) in \(p3.convergence ?? -1)s")
            // Phase 1 shows the problem: without control the UDP flood takes the link.
            #expect(p1.vms[0].share < 0.2)
            // Phase 2 (margins below the lab's own targets of 45% and 0.95).
            #expect(p2.vms[0].share >= 0.40)
            #expect((p2.jain ?? 0) >= 0.90)
            // Phase 3: work conserving, quickly.
            #expect(p3.vms[1].share >= 0.85)
            #expect((p3.convergence ?? 99) <= 2.5)
            // Nothing left behind.
            #expect(!(try Shell.check(["ip", "netns", "list"])).contains("tdmlab-"))
        }
    }

    /// Two tenants (issue #17): tenant-a's two VMs (weights 1 and 3) and tenant-b's one, all
    /// flooding; margins a little below the lab's own targets.
    @Test func tenantsLabSharesByGroupThenByVM() async throws {
        try await TrafficGate.shared.run {
            let r = try Shell.run([Binaries.path("tandem-host"), "lab", "--groups", "--phase", "4s", "--json"])
            let report = try JSONDecoder().decode(Lab.Report.self, from: Data(r.stdout.utf8))
            let p = try #require(report.phases.first)
            let (v1, v2, v3) = (Double(p.vms[0].throughput), Double(p.vms[1].throughput), Double(p.vms[2].throughput))
            print("lab --groups: vm1 \(v1 / 1e6), vm2 \(v2 / 1e6), vm3 \(v3 / 1e6) Mbit/s; targets \(p.targets.map { "\($0.what): \($0.measured)" })")
            #expect(abs((v1 + v2) / (v1 + v2 + v3) - 0.5) <= 0.07, "each tenant half")
            #expect(v2 / max(v1, 1) >= 2.2 && v2 / max(v1, 1) <= 3.8, "1:3 inside tenant-a")
            #expect((v1 + v2 + v3) / Double(report.link) >= 0.85, "the link used")
        }
    }

    @Test func staleLabIsCleanedByTheNextRun() throws {
        // A lab that crashed: its namespace carries a pid that no longer runs.
        let gone = try BackgroundProcess(["true"])
        _ = gone.wait(timeout: 5)
        let dead = gone.pid
        try Shell.check(["ip", "netns", "add", "tdmlab-\(dead)-host-1"])
        defer { _ = try? Shell.run(["ip", "netns", "delete", "tdmlab-\(dead)-host-1"]) }
        let removed = Lab.cleanStale()
        #expect(removed.contains("tdmlab-\(dead)-host-1"))
        #expect(!(try Shell.check(["ip", "netns", "list"])).contains("tdmlab-\(dead)"))
    }

    /// Only this project's namespaces are cleaned: another program's `NAME-PID-N` with a
    /// dead PID is left alone (issue #18, item 9).
    @Test func cleaningStaleNamespacesLeavesOtherProgramsAlone() throws {
        let gone = try BackgroundProcess(["true"])
        _ = gone.wait(timeout: 5)
        let dead = gone.pid
        let theirs = "other-\(dead)-1", ours = "tdm-stale-\(dead)-1"
        try Shell.check(["ip", "netns", "add", theirs])
        defer { _ = try? Shell.run(["ip", "netns", "delete", theirs]) }
        try Shell.check(["ip", "netns", "add", ours])
        defer { _ = try? Shell.run(["ip", "netns", "delete", ours]) }
        let removed = Netns.cleanStale()
        #expect(removed.contains(ours))
        #expect(!removed.contains(theirs))
        #expect(try Shell.check(["ip", "netns", "list"]).contains(theirs))
    }

    @Test func labRefusesClearlyWhenItCannotRun() throws {
        let r = try Shell.run([Binaries.path("tandem-host"), "lab", "--vms", "1"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("--vms 1 must be from 2 to 16"))
        let r2 = try Shell.run([Binaries.path("tandem-host"), "lab", "--link", "fast"])
        #expect(r2.stderr.contains("invalid rate 'fast'"))
    }
}
