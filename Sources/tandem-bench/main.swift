import Foundation

/// `tandem-bench WHAT... [--record FILE] [--compare FILE]`: prints numbers, ratios and targets.
/// WHAT: netlink allocator codec overhead accuracy reaction, or all. Not a test.
let usage = """
usage: tandem-bench [netlink|allocator|codec|overhead|accuracy|reaction|all]... [--count N] [--repetitions N]
                    [--record FILE.json] [--compare FILE.json]
"""
var args = Array(CommandLine.arguments.dropFirst())
@MainActor func option(_ name: String) -> String? {
    guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
    let v = args[i + 1]; args.removeSubrange(i...(i + 1)); return v
}
func fail(_ m: String) -> Never { FileHandle.standardError.write(Data("tandem-bench: \(m)\n".utf8)); exit(2) }
let record = option("--record"), compare = option("--compare")
let count = option("--count").map { Int($0) ?? -1 } ?? 1000
let reps = option("--repetitions").map { Int($0) ?? -1 } ?? 20
guard (1...4000).contains(count) else { fail("--count takes 1 to 4000") }
guard (1...200).contains(reps) else { fail("--repetitions takes 1 to 200") }
let all = ["netlink", "allocator", "codec", "overhead", "accuracy", "reaction"]
var what = args.isEmpty ? ["allocator", "codec"] : args
if what == ["all"] { what = all }
for w in what where !all.contains(w) { fail("unknown benchmark '\(w)'\n\(usage)") }
let needsRoot = Set(what).subtracting(["allocator", "codec"])
if !needsRoot.isEmpty && getuid() != 0 { fail("\(needsRoot.sorted().joined(separator: ", ")) need root (network namespaces)") }

var results: [Result] = []
@MainActor func show(_ title: String, _ rs: [Result]) {
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

do {
    for w in what {
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
        case "overhead": show("overhead", try SystemBench.controllerOverhead() + SystemBench.controllerOverhead(guests: .idleAgents)
                                    + SystemBench.controllerOverhead(guests: .busySynthetic) + SystemBench.agentOverhead())
        case "accuracy": show("accuracy (100% = goodput equal to 95% of the limit; target within 3%)", try await SystemBench.accuracy())
        case "reaction": show("reaction in the lab (\(reps) repetitions)", try Reaction.run(repetitions: reps))
        default: break
        }
    }
} catch {
    fail("\(error)")
}

if let compare {
    guard let data = FileManager.default.contents(atPath: compare), let old = try? JSONDecoder().decode([Result].self, from: data) else { fail("cannot read \(compare)") }
    print("\nagainst \(compare):")
    for r in results {
        guard let o = old.first(where: { $0.name == r.name }), o.value.isFinite, r.value.isFinite, o.value != 0 else { continue }
        let change = (r.value - o.value) / abs(o.value)
        let worse = r.lowerIsBetter ? change > 0.25 : change < -0.25
        print(r.name.padding(toLength: 62, withPad: " ", startingAt: 0) + String(format: " %+6.0f%%  %@", change * 100, worse ? "REGRESSION" : "ok"))
    }
}
if let record {
    let enc = JSONEncoder(); enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    try enc.encode(results).write(to: URL(fileURLWithPath: record))
    print("\nrecorded in \(record)")
}
