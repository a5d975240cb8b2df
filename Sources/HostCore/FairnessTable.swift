import Foundation
import TandemProtocol

/// The fairness table as text, shared by `tandem-host fairness` and the lab.
public enum FairnessTable {
    public static func render(_ links: [LinkFairness]) -> String {
        func rate(_ bps: UInt64) -> String { BitRate(bitsPerSecond: bps).rounded }
        func jain(_ j: Double?) -> String { j.map { String(format: "%.3f", $0) } ?? "-" }
        func table(_ rows: [[String]]) -> String {
            let widths = rows[0].indices.map { i in rows.map { $0[i].count }.max() ?? 0 }
            return rows.map { row in row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ") + "\n" }.joined()
        }
        var out = ""
        for l in links {
            let grouped = !(l.groups ?? []).isEmpty
            out += "link \(l.link)  capacity \(rate(l.capacity))  used \(String(format: "%.0f%%", l.utilisation * 100))  Jain \(jain(l.jain))"
                + (grouped ? "  Jain between groups \(jain(l.jainGroups))" : "") + "\n"
            var rows = [["VM", "WEIGHT", "MIN", "MAX", "RESERVED", "DEMAND", "ALLOCATION", "MEASURED", "SHARE", "AGENT"] + (grouped ? ["GROUP"] : [])]
            for r in l.vms {
                rows.append([r.vm, String(format: "%g", r.weight), rate(r.min), r.max.map(rate) ?? "-", r.reserved > 0 ? rate(r.reserved) : "-", rate(r.demand), rate(r.allocation),
                             rate(r.measured), String(format: "%.1f%%", r.share * 100), r.agent] + (grouped ? [r.group ?? "-"] : []))
            }
            out += table(rows)
            guard let groups = l.groups, grouped else { continue }
            var g = [["GROUP", "WEIGHT", "MIN", "MAX", "DEMAND", "ALLOCATION", "MEASURED", "SHARE", "VMS", "JAIN"]]
            for r in groups {
                g.append([r.group, String(format: "%g", r.weight), rate(r.min), r.max.map(rate) ?? "-", rate(r.demand), rate(r.allocation),
                          rate(r.measured), String(format: "%.1f%%", r.share * 100), "\(r.vms)", jain(r.jain)])
            }
            out += table(g)
        }
        return out
    }
}
