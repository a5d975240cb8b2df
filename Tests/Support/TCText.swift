import TandemProtocol

/// Reads tc's text output, as an oracle independent of libnl: iproute2 6.1 prints HTB
/// classes and u32 keys only as text (`tc -j class show` falls back to text for htb).
public enum TCText {
    public struct Class: Equatable, Sendable {
        public var handle: String
        public var parent: String
        public var prio: Int?
        public var rate: BitRate?
        public var ceil: BitRate?
        public var quantum: Int?
        public var sentBytes: UInt64?
        public var drops: UInt64?
    }

    /// Parses `tc -d -s class show` lines: `class htb 1:10 parent 1:1 prio 0 quantum 6000 rate 50Mbit ceil 100Mbit ...`
    /// followed by ` Sent N bytes M pkt (dropped D, ...)`.
    public static func classes(_ text: String) -> [Class] {
        var out: [Class] = []
        for line in text.split(separator: "\n") {
            let w = line.split(separator: " ").map(String.init)
            if w.first == "class", w.count > 2 {
                var c = Class(handle: w[2], parent: "root")
                var i = 3
                while i < w.count {
                    switch w[i] {
                    case "root": c.parent = "root"
                    case "parent" where i + 1 < w.count: c.parent = w[i + 1]; i += 1
                    case "prio" where i + 1 < w.count: c.prio = Int(w[i + 1]); i += 1
                    case "quantum" where i + 1 < w.count: c.quantum = Int(w[i + 1]); i += 1
                    case "rate" where i + 1 < w.count: c.rate = try? BitRate(parsing: w[i + 1]); i += 1
                    case "ceil" where i + 1 < w.count: c.ceil = try? BitRate(parsing: w[i + 1]); i += 1
                    default: break
                    }
                    i += 1
                }
                out.append(c)
            } else if w.first == "Sent", w.count > 1, !out.isEmpty {
                out[out.count - 1].sentBytes = UInt64(w[1])
                if let d = w.firstIndex(of: "(dropped"), d + 1 < w.count {
                    out[out.count - 1].drops = UInt64(w[d + 1].trimmingCharacters(in: [","]))
                }
            }
        }
        return out
    }

    public struct Filter: Equatable, Sendable {
        public var pref: Int
        public var proto: String
        public var handle: String?
        public var flowid: String?
        public var matches: [String]
        public var mirredTo: String?
    }

    /// Parses `tc filter show`: the u32 node lines (those with `fh ...::...`) and their
    /// `match VALUE/MASK at OFF` lines.
    public static func u32Nodes(_ text: String) -> [Filter] {
        var out: [Filter] = []
        for line in text.split(separator: "\n") {
            let w = line.split(separator: " ").map(String.init)
            if w.first == "filter" {
                guard let fh = w.firstIndex(of: "fh"), fh + 1 < w.count, w[fh + 1].split(separator: ":", omittingEmptySubsequences: false).count == 3,
                      w.contains("order") else { continue }
                var f = Filter(pref: 0, proto: "", handle: w[fh + 1], flowid: nil, matches: [])
                if let p = w.firstIndex(of: "pref"), p + 1 < w.count { f.pref = Int(w[p + 1]) ?? 0 }
                if let p = w.firstIndex(of: "protocol"), p + 1 < w.count { f.proto = w[p + 1] }
                // tc prints `*flowid` for a non-terminal node, `flowid` (after `terminal`) otherwise.
                if let p = w.firstIndex(where: { $0 == "flowid" || $0 == "*flowid" }), p + 1 < w.count { f.flowid = w[p + 1] }
                out.append(f)
            } else if w.first == "match", w.count >= 4, !out.isEmpty {
                out[out.count - 1].matches.append("\(w[1]) at \(w[3])")
            } else if let r = w.firstIndex(of: "redirect"), !out.isEmpty, let d = w.firstIndex(of: "device"), d + 1 < w.count, r < d {
                out[out.count - 1].mirredTo = w[d + 1].trimmingCharacters(in: [")"])
            }
        }
        return out
    }
}

extension String {
    func trimmingCharacters(in set: Set<Character>) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}
