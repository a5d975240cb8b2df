import Foundation

/// The interface a VM's traffic leaves by: that of its default route, as the kernel lists it
/// in /proc/net/route (IPv4) and, failing that, /proc/net/ipv6_route. The agent shapes it
/// when no `--interface` is given (a fixed default such as eth0 is wrong on guests with
/// predictable names: ens3, enp1s0).
public enum DefaultRoute {
    public struct NotFound: Error, CustomStringConvertible {
        public var description: String {
            "no default route in /proc/net/route or /proc/net/ipv6_route: name the interface to shape with --interface (e.g. --interface enp1s0)"
        }
    }

    /// The default route's interface, from the kernel's tables as they are now.
    public static func interface() throws -> String {
        let v4 = (try? String(contentsOfFile: "/proc/net/route", encoding: .utf8)) ?? ""
        let v6 = (try? String(contentsOfFile: "/proc/net/ipv6_route", encoding: .utf8)) ?? ""
        guard let name = interface(route: v4, ipv6Route: v6) else { throw NotFound() }
        return name
    }

    /// From the two tables' text: the IPv4 default route with the lowest metric, else the
    /// IPv6 one's; routes that are down, and loopback, are not taken.
    public static func interface(route: String, ipv6Route: String) -> String? {
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ... (hex; the header first)
        var best: (metric: UInt64, name: String)?
        for line in route.split(separator: "\n").dropFirst() {
            let f = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            guard f.count >= 8, f[1] == "00000000", f[7] == "00000000",
                  let flags = UInt32(f[3], radix: 16), flags & 1 != 0, let metric = UInt64(f[6]) else { continue }
            if best.map({ metric < $0.metric }) ?? true { best = (metric, String(f[0])) }
        }
        if let best { return best.name }
        // dest plen src plen next-hop metric refcnt use flags iface (hex, no header)
        var best6: (metric: UInt64, name: String)?
        for line in ipv6Route.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 10, f[0] == Substring(String(repeating: "0", count: 32)), f[1] == "00", f[9] != "lo",
                  let flags = UInt32(f[8], radix: 16), flags & 1 != 0, let metric = UInt64(f[5], radix: 16) else { continue }
            if best6.map({ metric < $0.metric }) ?? true { best6 = (metric, String(f[9])) }
        }
        return best6?.name
    }
}
