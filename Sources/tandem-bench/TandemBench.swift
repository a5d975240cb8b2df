import ArgumentParser
import Foundation
import TandemDaemon

/// `tandem-bench WHAT... [--record FILE] [--compare FILE]`: prints numbers, ratios and targets.
/// Not a test.
@main
struct TandemBench: AsyncParsableCommand {
    static let kinds = ["netlink", "allocator", "codec", "overhead", "accuracy", "reaction", "libvirt"]

    static let configuration = CommandConfiguration(
        commandName: "tandem-bench",
        abstract: "Tandem's benchmarks: numbers, ratios against the obvious alternative, and targets.",
        discussion: """
            WHAT is one or more of \(kinds.joined(separator: ", ")), or all (default: allocator codec). \
            All but allocator and codec need root (network namespaces) and a release build of the daemons \
            beside this one. A figure more than 25% worse than in --compare prints REGRESSION.
            """)

    @Argument(help: "What to measure.") var what: [String] = []
    @Option(name: .long, help: "Objects in the netlink benchmark (1 to 4000).") var count = 1000
    @Option(name: .long, help: "Repetitions of the reaction benchmark (1 to 200).") var repetitions = 20
    @Option(name: .long, help: "Write the results as JSON to this file.") var record: String?
    @Option(name: .long, help: "Compare the results with a JSON file written by --record.") var compare: String?

    var selected: [String] { what == ["all"] ? Self.kinds : what.isEmpty ? ["allocator", "codec"] : what }

    func validate() throws {
        guard (1...4000).contains(count) else { throw ValidationError("--count \(count) must be from 1 to 4000") }
        guard (1...200).contains(repetitions) else { throw ValidationError("--repetitions \(repetitions) must be from 1 to 200") }
        for w in selected where !Self.kinds.contains(w) {
            throw ValidationError("unknown benchmark '\(w)': use \(Self.kinds.joined(separator: ", ")) or all")
        }
        let needsRoot = Set(selected).subtracting(["allocator", "codec", "libvirt"])
        if !needsRoot.isEmpty && getuid() != 0 { throw ValidationError("\(needsRoot.sorted().joined(separator: ", ")) need root (network namespaces)") }
        if let compare, FileManager.default.contents(atPath: compare).flatMap({ try? JSONDecoder().decode([Result].self, from: $0) }) == nil {
            throw ValidationError("--compare \(compare): cannot read results from it")
        }
    }

    func run() async throws {
        var results: [Result] = []
        func show(_ title: String, _ rs: [Result]) {
            print("\n\(title)")
            for r in rs {
                var line = r.name.padding(toLength: 62, withPad: " ", startingAt: 0) + String(format: " %12.2f %@", r.value, r.unit)
                if let t = r.target {
                    let ok = r.lowerIsBetter ? r.value <= t : r.value >= t
                    line += String(format: "   target %@ %g %@: %@", r.lowerIsBetter ? "<=" : ">=", t, r.unit, ok ? "met" : "MISSED")
                }
                print(line)
            }
            results += rs
        }
        for w in selected {
            switch w {
            case "netlink":
                let rows = try await NetlinkBenchmark(count: count).run()
                print("\nnetlink, \(count) objects in one namespace (ms; ratio = other / tandem)")
                for r in rows {
                    print(r.name.padding(toLength: 44, withPad: " ", startingAt: 0) + String(format: " %8.1f %8.1f %8.2fx  ", r.ours * 1000, r.theirs * 1000, r.theirs / r.ours) + r.theirsName)
                    results.append(Result(name: "netlink: \(r.name) vs \(r.theirsName) (ratio)", value: r.theirs / r.ours, unit: "x",
                                          target: r.theirsName.contains("one tc process") ? 40 : r.theirsName.contains("-s -j") ? 3 : 1, lowerIsBetter: false))
                }
            case "allocator": show("allocator", Micro.allocator())
            case "codec": show("protocol codec", Micro.codec())
            case "overhead":
                // TANDEM_BENCH_OVERHEAD picks cases (comma-separated: none, idle, busy, agent),
                // for looking at one. Each controller case has its floor measured right after
                // it, in its namespace: this machine's speed moves from minute to minute (one
                // floor measured once was 0.58 to 1.00% of a core in runs of the same code).
                let cases = ProcessInfo.processInfo.environment["TANDEM_BENCH_OVERHEAD"].map { $0.split(separator: ",").map(String.init) } ?? ["none", "idle", "busy", "agent"]
                var rows: [Result] = []
                for c in cases {
                    switch c {
                    case "none": rows += try SystemBench.controllerOverhead(floor: SystemBench.FloorBox())
                    case "idle": rows += try SystemBench.controllerOverhead(guests: .idleAgents, floor: SystemBench.FloorBox())
                    case "busy": rows += try SystemBench.controllerOverhead(guests: .busySynthetic, floor: SystemBench.FloorBox())
                    case "agent": rows += try SystemBench.agentOverhead()
                    default: throw CommandFailure("TANDEM_BENCH_OVERHEAD: unknown case '\(c)' (none, idle, busy, agent)")
                    }
                }
                show("overhead", rows)
            case "accuracy": show("accuracy (100% = goodput equal to 95% of the limit; target within 3%)", try await SystemBench.accuracy())
            case "reaction": show("reaction in the lab (\(repetitions) repetitions)", try Reaction.run(repetitions: repetitions))
            case "libvirt": show("libvirt (\(repetitions) starts)", try await LibvirtBench.run(repetitions: repetitions))
            default: break
            }
        }
        if let compare, let data = FileManager.default.contents(atPath: compare), let old = try? JSONDecoder().decode([Result].self, from: data) {
            print("\nagainst \(compare):")
            for r in results {
                guard let o = old.first(where: { $0.name == r.name }), o.value.isFinite, r.value.isFinite, o.value != 0 else { continue }
                let change = (r.value - o.value) / abs(o.value)
                let worse = r.lowerIsBetter ? change > 0.25 : change < -0.25
                print(r.name.padding(toLength: 62, withPad: " ", startingAt: 0) + String(format: " %+6.0f%%  %@", change * 100, worse ? "REGRESSION" : "ok"))
            }
        }
        if let record {
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try enc.encode(results).write(to: URL(fileURLWithPath: record))
            print("\nrecorded in \(record)")
        }
    }
}
