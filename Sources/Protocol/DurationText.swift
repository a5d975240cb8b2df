/// Durations as people type them: `100ms`, `2s`, `1.5s`, `5m`, `1h`.
public enum DurationText {
    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public var input: String
        public var description: String { "invalid duration '\(input)': expected a number with ms, s, m or h, such as 100ms or 60s" }
    }

    /// Seconds for the text; a bare number is seconds.
    public static func seconds(_ text: String) throws(ParseError) -> Double {
        let s = text.trimmingCharacters(in: " ")
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (u, f) in units where s.hasSuffix(u) {
            let n = String(s.dropLast(u.count))
            if let v = Double(n), v.isFinite, v >= 0, n.first?.isNumber == true || n.first == "." { return v * f }
            throw ParseError(input: text)
        }
        if let v = Double(s), v.isFinite, v >= 0, s.first?.isNumber == true { return v }
        throw ParseError(input: text)
    }

    public static func format(_ seconds: Double) -> String {
        if seconds < 1 { return "\(Int((seconds * 1000).rounded()))ms" }
        if seconds == seconds.rounded() { return "\(Int(seconds))s" }
        return "\(seconds)s"
    }
}

extension String {
    func trimmingCharacters(in c: Character) -> String {
        var s = Substring(self)
        while s.first == c { s.removeFirst() }
        while s.last == c { s.removeLast() }
        return String(s)
    }
}
