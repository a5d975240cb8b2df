import ArgumentParser
import Foundation
import HostController
import TandemLab
import TandemProtocol
import TandemDaemon

extension TandemHost {
    struct Lab: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the paper's experiment in network namespaces: TCP against a UDP flood, with and without Tandem.",
            discussion: """
                Builds a receiver, a host with a bridge and a shared uplink (TBF at --link), and --vms VMs, each a \
                namespace running tandem-agent whose channel is a pseudo-terminal relayed to the controller, which \
                runs in the host namespace. VM1 sends TCP, the others flood UDP at twice the link. Phases: \
                1 no control, 2 under Tandem, 3 VM1 idle (work conserving), 4 VM1 reserves bandwidth for its flow. \
                Needs root, iproute2 and iperf3. Everything it makes is removed on exit, on Ctrl-C, and (after a crash) \
                by the next run.
                """)

        @Option(name: .long, help: "Number of VMs (VM1 TCP, the others UDP floods).") var vms = 2
        @Option(name: .long, help: "The shared link's rate.") var link = "200mbit"
        @Option(name: .long, help: "Length of each phase (e.g. 10s).") var phase = "10s"
        @Option(name: .long, help: "Phase 4's reservation (default: 20% of the link).") var reserve: String?
        @Flag(name: .long, help: "Run the tenants' experiment instead: two [[group]]s with weights 1:1, tenant-a with VM1 (weight 1) and VM2 (weight 3), tenant-b with VM3, all flooding; checks each tenant's half, the 1:3 split inside, and Jain's index at both levels (3 VMs, one phase).") var groups = false
        @Flag(name: .long, help: "Print the results as JSON.") var json = false
        @Flag(name: .long, help: "Keep the logs (in /tmp/tdmlab-PID) after the run.") var keepLogs = false

        func validate() throws {
            guard (2...16).contains(vms) else { throw ValidationError("--vms \(vms) must be from 2 to 16") }
            if groups && vms != 2 && vms != TandemLab.Lab.groupVMs { throw ValidationError("--groups runs \(TandemLab.Lab.groupVMs) VMs: leave --vms out") }
            if groups && reserve != nil { throw ValidationError("--groups has no reservation phase: leave --reserve out") }
            let l: BitRate
            do { l = try BitRate(parsing: link) } catch { throw ValidationError("--link: \(error)") }
            guard l >= .mbit(10), l <= .gbit(10) else { throw ValidationError("--link \(link) must be from 10mbit to 10gbit") }
            guard let p = try? DurationText.seconds(phase), p >= 2, p <= 600 else { throw ValidationError("--phase '\(phase)' must be a duration from 2s to 600s") }
            if let r = reserve {
                let rr: BitRate
                do { rr = try BitRate(parsing: r) } catch { throw ValidationError("--reserve: \(error)") }
                guard rr > .zero, rr <= l.scaled(by: 0.5) else { throw ValidationError("--reserve \(r) must be above 0 and at most half the link") }
            }
        }

        func run() async throws {
            let binaries = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().path
            try TandemLab.Lab.preflight(binaries: binaries)
            var o = TandemLab.Lab.Options(binaries: binaries)
            o.vms = groups ? TandemLab.Lab.groupVMs : vms
            o.groups = groups
            o.link = try BitRate(parsing: link)
            o.phase = try DurationText.seconds(phase)
            o.reservation = try reserve.map { try BitRate(parsing: $0) }
            o.keepLogs = keepLogs
            let quiet = json
            let tty = isatty(2) != 0
            let last = ReportBox()
            let lab = TandemLab.Lab(options: o) { line in
                if quiet { return }
                if tty {
                    // One status line, rewritten in place.
                    FileHandle.standardError.write(Data("\r\u{1B}[K\(line)\(line.contains("\n") ? "\n" : "")".utf8))
                } else if line != last.line {
                    // Logs: only what changed, one line each.
                    last.line = line
                    FileHandle.standardError.write(Data("\(line)\n".utf8))
                }
            }
            let box = ReportBox()
            do {
                try await runUntilSignalled { box.report = try await lab.run() }
            } catch is CancellationError {
                if !quiet && tty { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
                FileHandle.standardError.write(Data("interrupted; everything the lab made is removed\n".utf8))
                throw ExitCode(130)
            }
            if !quiet && tty { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
            guard let report = box.report else { throw CommandFailure("the lab was interrupted; everything it made is removed") }
            if json {
                let enc = JSONEncoder()
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(decoding: try enc.encode(report), as: UTF8.self))
            } else {
                print(render(report))
            }
            if !report.allTargetsMet { throw ExitCode(3) }
        }

        func render(_ r: TandemLab.Lab.Report) -> String {
            var s = "Tandem lab: \(groups ? TandemLab.Lab.groupVMs : vms) VMs sharing \(BitRate(bitsPerSecond: r.link)), \(DurationText.format(r.phaseSeconds)) per phase\n\n"
            for p in r.phases {
                s += "phase \(p.phase): \(p.name)\n"
                for v in p.vms {
                    s += "  \(v.vm)  \(v.traffic.padding(toLength: 22, withPad: " ", startingAt: 0))  \(BitRate(bitsPerSecond: v.throughput).rounded.padding(toLength: 14, withPad: " ", startingAt: 0)) \(String(format: "%5.1f%%", v.share * 100)) of the link\n"
                }
                s += "  Jain's index \(p.jain.map { String(format: "%.3f", $0) } ?? "-")"
                if p.phase > 1 { s += ", converged in \(p.convergence.map { String(format: "%.1fs", $0) } ?? "(not within the phase)")" }
                s += "\n"
                for t in p.targets {
                    s += "  \(t.met ? "ok  " : "MISS") \(t.what): \(t.measured) (target \(t.wanted))\n"
                }
                s += "\n"
            }
            if let t = r.fairnessTable { s += "tandem-host fairness during \(groups ? "the phase" : "phase 2"):\n" + t + "\n" }
            s += r.allTargetsMet ? "all targets met\n" : "some targets missed\n"
            return s
        }
    }
}

final class ReportBox: @unchecked Sendable { var report: TandemLab.Lab.Report?; var line = "" }
