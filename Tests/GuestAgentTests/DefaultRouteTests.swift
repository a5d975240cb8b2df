import Testing
@testable import GuestAgent

/// The agent's default interface: the default route's, read from the kernel's tables (here
/// as the kernel writes them, captured from Debian guests).
@Suite struct DefaultRouteTests {
    static let header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"

    @Test func theIPv4DefaultRouteWithTheLowestMetric() {
        let route = Self.header + """
            enp7s0\t00000000\t0100A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
            enp1s0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
            enp1s0\t000200C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
            """
        #expect(DefaultRoute.interface(route: route, ipv6Route: "") == "enp1s0")
    }

    @Test func aRouteThatIsDownOrNotDefaultIsNotTaken() {
        let route = Self.header + """
            ens3\t00000000\t010200C0\t0002\t0\t0\t0\t00000000\t0\t0\t0
            ens4\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
            """
        #expect(DefaultRoute.interface(route: route, ipv6Route: "") == nil)
    }

    @Test func ipv6OnlyGuestsUseTheIPv6DefaultRouteNeverLoopback() {
        let v6 = """
            fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     ens3
            00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
            00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000003 00000000 00000003     ens3
            """
        #expect(DefaultRoute.interface(route: Self.header, ipv6Route: v6) == "ens3")
    }
}
