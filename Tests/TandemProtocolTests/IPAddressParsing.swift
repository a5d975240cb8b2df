import Testing
@testable import TandemProtocol

@Suite struct IPAddressParsing {
    @Test(arguments: [
        ("10.0.0.5", "10.0.0.5"), ("::1", "::1"), ("fd00::1:2", "fd00::1:2"), ("2001:db8:0:0:0:0:0:1", "2001:db8::1"),
        ("::", "::"), ("::ffff:10.1.2.3", "::ffff:a01:203"), ("1:0:0:2:0:0:0:3", "1:0:0:2::3"), ("FE80::A", "fe80::a"),
        ("010.001.0.255", "10.1.0.255"), ("0.0.0.0", "0.0.0.0"),
    ])
    func parsesAndPrints(text: String, printed: String) throws {
        let a = try #require(IPAddress(text))
        #expect(a.description == printed)
        #expect(IPAddress(a.description) == a)
    }

    @Test(arguments: ["", "1.2.3", "1.2.3.4.5", "256.0.0.1", "01234.1.1.1", "1::2::3", "1:2:3:4:5:6:7:8:9", "12345::", ":::", "g::1", "1.2.3.-4", "::1.2.3",
                        "1..2.3", "1.2.3.", ".1.2.3", "1.2.3.4 ", "\u{FF11}.2.3.4", "1.2.3.4\u{301}", "1.2.3.0256", "255.255.255.256"])
    func refuses(text: String) {
        #expect(IPAddress(text) == nil)
    }

    @Test func prefixes() throws {
        #expect(IPPrefix("10.0.0.0/24")?.length == 24)
        #expect(IPPrefix("fd00::/64")?.description == "fd00::/64")
        #expect(IPPrefix("10.0.0.1")?.length == 32)
        #expect(IPPrefix("10.0.0.0/33") == nil)
        #expect(IPPrefix("10.0.0.0/-1") == nil)
        #expect(IPPrefix("10.0.0.0/+8") == nil)
    }
}
