/// A rate in bits per second.
///
/// Tandem keeps every rate in this one unit and converts only at the kernel boundary:
/// VF limits are Mbit/s (`IFLA_VF_RATE`), HTB takes bytes per second, tc text takes bits.
/// Text is written the way tc writes it: `800mbit`, `1.5gbit`, `500kbit`, `100bit`,
/// and tc's byte units are read too (`10mbps` is ten megabytes per second).
public struct BitRate: Hashable, Comparable, Sendable {
    public var bitsPerSecond: UInt64

    public init(bitsPerSecond: UInt64) { self.bitsPerSecond = bitsPerSecond }

    public static let zero = BitRate(bitsPerSecond: 0)
    /// The largest rate any message may carry: 10 Tbit/s.
    public static let protocolMaximum = BitRate(bitsPerSecond: 10_000_000_000_000)

    public static func bits(_ v: UInt64) -> BitRate { BitRate(bitsPerSecond: v) }
    public static func kbit(_ v: UInt64) -> BitRate { BitRate(bitsPerSecond: v * 1_000) }
    public static func mbit(_ v: UInt64) -> BitRate { BitRate(bitsPerSecond: v * 1_000_000) }
    public static func gbit(_ v: UInt64) -> BitRate { BitRate(bitsPerSecond: v * 1_000_000_000) }

    /// Bytes per second, rounded down (HTB's unit).
    public var bytesPerSecond: UInt64 { bitsPerSecond / 8 }
    public var megabitsPerSecond: Double { Double(bitsPerSecond) / 1e6 }

    public static func < (a: BitRate, b: BitRate) -> Bool { a.bitsPerSecond < b.bitsPerSecond }

    /// Adds, saturating at `UInt64.max` instead of trapping.
    public static func + (a: BitRate, b: BitRate) -> BitRate {
        let (v, o) = a.bitsPerSecond.addingReportingOverflow(b.bitsPerSecond)
        return BitRate(bitsPerSecond: o ? .max : v)
    }
    /// Subtracts, saturating at zero instead of trapping.
    public static func - (a: BitRate, b: BitRate) -> BitRate {
        BitRate(bitsPerSecond: a.bitsPerSecond > b.bitsPerSecond ? a.bitsPerSecond - b.bitsPerSecond : 0)
    }
    /// Scales by a non-negative factor, saturating; NaN or negative factors give zero.
    public func scaled(by f: Double) -> BitRate { BitRate(clamping: Double(bitsPerSecond) * f) }

    /// Converts a floating bit rate, clamping NaN and negatives to 0 and huge values to `UInt64.max`.
    public init(clamping bps: Double) {
        if !(bps > 0) { self.bitsPerSecond = 0 }
        else if bps >= 18_446_744_073_709_551_615.0 { self.bitsPerSecond = .max }
        else { self.bitsPerSecond = UInt64(bps.rounded()) }
    }
}

/// Why a rate string was refused; the description names the input.
public struct BitRateParseError: Error, Equatable, CustomStringConvertible, Sendable {
    public enum Reason: Equatable, Sendable { case empty, notANumber, negative, unknownUnit(String), overflow, fractionalBits }
    public var input: String
    public var reason: Reason
    public var description: String {
        switch reason {
        case .empty: return "empty rate: expected a rate such as 800mbit"
        case .notANumber: return "invalid rate '\(input)': expected a number followed by a unit, such as 800mbit"
        case .negative: return "invalid rate '\(input)': a rate cannot be negative"
        case .unknownUnit(let u): return "invalid rate '\(input)': unknown unit '\(u)' (use bit, kbit, mbit, gbit, tbit, or bps, kbps, mbps, gbps, tbps for bytes)"
        case .overflow: return "invalid rate '\(input)': too large"
        case .fractionalBits: return "invalid rate '\(input)': less than one bit per second"
        }
    }
}

extension BitRate {
    /// tc's units (`tc/tc_util.c`, `get_rate64`), matched without regard to case like tc does.
    /// Values are the multiplier to bits per second.
    static let units: [(String, UInt64)] = [
        ("bit", 1), ("kibit", 1024), ("kbit", 1_000), ("mibit", 1_048_576), ("mbit", 1_000_000),
        ("gibit", 1_073_741_824), ("gbit", 1_000_000_000), ("tibit", 1_099_511_627_776), ("tbit", 1_000_000_000_000),
        ("bps", 8), ("kibps", 8 * 1024), ("kbps", 8_000), ("mibps", 8 * 1_048_576), ("mbps", 8_000_000),
        ("gibps", 8 * 1_073_741_824), ("gbps", 8_000_000_000), ("tibps", 8 * 1_099_511_627_776), ("tbps", 8_000_000_000_000),
    ]

    /// Parses tc's notation. A bare number is bits per second, as in tc.
    ///
    /// The arithmetic is exact (decimal digits times an integer unit, in 128 bits), so every
    /// rate ``description`` prints parses back to itself; a result with a fraction of a bit
    /// rounds half up.
    public init(parsing text: String) throws(BitRateParseError) {
        let s = text.trimmingWhitespace()
        guard !s.isEmpty else { throw BitRateParseError(input: text, reason: .empty) }
        var rest = Substring(s)
        if rest.first == "-" { throw BitRateParseError(input: text, reason: .negative) }
        if rest.first == "+" { rest = rest.dropFirst() }
        let wholeDigits = rest.prefix(while: { $0.isASCII && $0.isNumber })
        rest = rest.dropFirst(wholeDigits.count)
        var fracDigits: Substring = ""
        if rest.first == "." {
            rest = rest.dropFirst()
            fracDigits = rest.prefix(while: { $0.isASCII && $0.isNumber })
            rest = rest.dropFirst(fracDigits.count)
        }
        guard !wholeDigits.isEmpty || !fracDigits.isEmpty else { throw BitRateParseError(input: text, reason: .notANumber) }
        let unitText = String(rest).lowercased()
        var multiplier: UInt64 = 1
        if !unitText.isEmpty {
            guard let unit = Self.units.first(where: { $0.0 == unitText }) else {
                throw BitRateParseError(input: text, reason: .unknownUnit(unitText))
            }
            multiplier = unit.1
        }
        // Leading zeros do not count towards the size; more than 20 significant digits overflow.
        let whole = wholeDigits.drop(while: { $0 == "0" })
        guard whole.count <= 20, let w = whole.isEmpty ? 0 : UInt128(whole) else { throw BitRateParseError(input: text, reason: .overflow) }
        // Beyond 19 fractional digits nothing can change the result.
        let frac = fracDigits.prefix(19)
        let f = frac.isEmpty ? 0 : UInt128(frac) ?? 0
        var scale: UInt128 = 1
        for _ in 0..<frac.count { scale *= 10 }
        let (wm, o1) = w.multipliedReportingOverflow(by: UInt128(multiplier))
        guard !o1 else { throw BitRateParseError(input: text, reason: .overflow) }
        let fracBits = f * UInt128(multiplier)     // < 10^19 * 8.8e12: fits
        let (q, r) = fracBits.quotientAndRemainder(dividingBy: scale)
        let total = wm + q + (r * 2 >= scale && scale > 1 ? 1 : 0)
        guard total <= UInt128(UInt64.max) else { throw BitRateParseError(input: text, reason: .overflow) }
        if total == 0 && (f > 0) { throw BitRateParseError(input: text, reason: .fractionalBits) }
        if wm == 0 && q == 0 && f > 0 { throw BitRateParseError(input: text, reason: .fractionalBits) }
        self.bitsPerSecond = UInt64(total)
    }
}

extension BitRate: CustomStringConvertible, LosslessStringConvertible {
    public init?(_ description: String) { try? self.init(parsing: description) }

    /// tc-style text with the largest decimal unit that keeps at most three decimals exact:
    /// `800mbit`, `1.5gbit`, `100bit`.
    public var description: String {
        let v = bitsPerSecond
        let scales: [(String, UInt64)] = [("tbit", 1_000_000_000_000), ("gbit", 1_000_000_000), ("mbit", 1_000_000), ("kbit", 1_000)]
        for (name, scale) in scales where v >= scale && v % (scale / 1000) == 0 {
            let whole = v / scale, frac = (v % scale) / (scale / 1000)
            if frac == 0 { return "\(whole)\(name)" }
            var fracText = String(frac)
            while fracText.count < 3 { fracText = "0" + fracText }
            while fracText.hasSuffix("0") { fracText.removeLast() }
            return "\(whole).\(fracText)\(name)"
        }
        return "\(v)bit"
    }
}

extension BitRate {
    /// For people: three significant digits in the largest fitting unit (`95.8mbit`,
    /// `1.2gbit`, `640kbit`). Not exact; ``description`` is.
    public var rounded: String {
        let v = Double(bitsPerSecond)
        for (name, scale) in [("tbit", 1e12), ("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)] where v >= scale {
            let x = v / scale
            let text = x >= 100 ? String(Int(x.rounded())) : x >= 10 ? String(format1(x, 1)) : String(format1(x, 2))
            return text + name
        }
        return "\(bitsPerSecond)bit"
    }

    private func format1(_ x: Double, _ decimals: Int) -> String {
        let p = decimals == 1 ? 10.0 : 100.0
        var s = String((x * p).rounded() / p)
        if s.hasSuffix(".0") { s.removeLast(2) }
        return s
    }
}

/// On the wire a rate is an integer number of bits per second.
extension BitRate: Codable {
    public init(from decoder: any Decoder) throws {
        self.bitsPerSecond = try decoder.singleValueContainer().decode(UInt64.self)
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(bitsPerSecond)
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
