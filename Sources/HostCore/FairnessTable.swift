import Foundation
import TandemProtocol

/// The fairness table as text, shared by `tandem-host fairness` and the lab.
public enum FairnessTable {
    public static func render(_ links: [LinkFairness]) -> String {
        func rate(_ bps: UInt64) -> String { BitRate(bitsPerSecond: bps).rounded }
        var out = ""
        for l in links {
            out += "link \(l.link)  capacity \(rate(l.capacity))  used \(String(format: "%.0f%%", l.utilisation * 100))  Jain \(l.jain.map { String(format: "%.3f", $0) } ?? "-")\n"
            let cols = ["VM", "WEIGHT", "MIN", "MAX", "DEMAND", "ALLOCATION", "MEASURED", "SHARE", "AGENT"]
            var rows = [cols]
            for r in l.vms {
                rows.append([r.vm, String(format: "%g", r.weight), rate(r.min), r.max.map(rate) ?? "-", rate(r.demand), rate(r.allocation),
                             rate(r.measured), String(format: "%.1f%%", r.share * 100), r.agent])
            }
            let widths = cols.indices.map { i in rows.map { $0[i].count }.max() ?? 0 }
            for row in rows {
                out += row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ") + "\n"
            }
        }
        return out
    }
}
