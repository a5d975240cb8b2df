import Testing
@testable import TandemProtocol

@Suite struct BitRateParsing {
    @Test(arguments: [
        ("800mbit", 800_000_000), ("1gbit", 1_000_000_000), ("1.5gbit", 1_500_000_000),
        ("500kbit", 500_000), ("100bit", 100), ("100", 100), ("10mbps", 80_000_000),
        ("1Gbit", 1_000_000_000), ("  20MBIT ", 20_000_000), ("1kibit", 1024), ("1mibit", 1_048_576),
        ("2.25mbit", 2_250_000), ("10tbit", 10_000_000_000_000), ("0", 0), ("0mbit", 0), ("1bps", 8),
        ("+5kbit", 5000), ("1kbps", 8000), ("1.000001mbit", 1_000_001),
        // Found by fuzzing: exact decimal arithmetic, so printed rates parse back exactly.
        ("8999998099980.009kbit", 8_999_998_099_980_009), ("18446744073709551.615kbit", .max), ("0.0000000001tbit", 100),
        ("1.5bit", 2), ("000000000000000000000000001mbit", 1_000_000),
    ] as [(String, UInt64)])
    func parsesTcNotation(text: String, bits: UInt64) throws {
        #expect(try BitRate(parsing: text).bitsPerSecond == bits)
    }

    @Test(arguments: [
        ("", BitRateParseError.Reason.empty), ("   ", .empty), ("-5mbit", .negative), ("mbit", .notANumber),
        ("nan", .notANumber), ("NaNmbit", .notANumber), ("inf", .notANumber), ("5furlongs", .unknownUnit("furlongs")),
        ("5 mbit", .unknownUnit(" mbit")), ("99999999999tbit", .overflow), ("0.5bit", .fractionalBits),
        ("1.2.3mbit", .unknownUnit(".3mbit")), (".mbit", .notANumber), ("1e9", .unknownUnit("e9")),
        ("18446744073709551616", .overflow),
    ] as [(String, BitRateParseError.Reason)])
    func refusesBadInputNamingIt(text: String, reason: BitRateParseError.Reason) {
        #expect(throws: BitRateParseError(input: text, reason: reason)) { try BitRate(parsing: text) }
        let message = (try? BitRate(parsing: text)).map { _ in "" } ?? "\(BitRateParseError(input: text, reason: reason))"
        if !text.trimmingWhitespace().isEmpty { #expect(message.contains("'\(text)'")) }
    }

    @Test(arguments: [
        (800_000_000, "800mbit"), (1_500_000_000, "1.5gbit"), (500_000, "500kbit"), (100, "100bit"),
        (1_000_000_000, "1gbit"), (1_234, "1.234kbit"), (1_000_001, "1000.001kbit"), (0, "0bit"),
        (2_250_000, "2.25mbit"), (10_000_000_000_000, "10tbit"), (1_000_000_001, "1000000.001kbit"),
    ] as [(UInt64, String)])
    func printsTcNotation(bits: UInt64, text: String) throws {
        let r = BitRate(bitsPerSecond: bits)
        #expect(r.description == text)
        #expect(try BitRate(parsing: r.description) == r, "printed form parses back")
    }

    @Test func arithmeticSaturates() {
        #expect(BitRate.mbit(1) - BitRate.mbit(2) == .zero)
        #expect(BitRate(bitsPerSecond: .max) + .mbit(1) == BitRate(bitsPerSecond: .max))
        #expect(BitRate(clamping: .nan) == .zero)
        #expect(BitRate(clamping: -4) == .zero)
        #expect(BitRate(clamping: 1e30) == BitRate(bitsPerSecond: .max))
        #expect(BitRate.mbit(100).scaled(by: 0.5) == .mbit(50))
        #expect(BitRate.mbit(8).bytesPerSecond == 1_000_000)
    }
}
