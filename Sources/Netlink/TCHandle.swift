import CNetlink

/// A traffic-control handle `major:minor`, as tc writes it (`1:10`, `ffff:`), both in hex.
public struct TCHandle: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(major: UInt16, minor: UInt16) { rawValue = UInt32(major) << 16 | UInt32(minor) }

    public var major: UInt16 { UInt16(rawValue >> 16) }
    public var minor: UInt16 { UInt16(rawValue & 0xffff) }

    /// `root` as a parent (TC_H_ROOT).
    public static let root = TCHandle(rawValue: 0xFFFF_FFFF)
    /// The ingress qdisc's parent (TC_H_INGRESS).
    public static let ingressParent = TCHandle(rawValue: 0xFFFF_FFF1)
    /// The ingress qdisc's own handle, `ffff:`.
    public static let ingress = TCHandle(major: 0xffff, minor: 0)
    public static let unspecified = TCHandle(rawValue: 0)

    public static func < (a: TCHandle, b: TCHandle) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        if self == .root { return "root" }
        if self == .ingressParent { return "ingress" }
        if self == .unspecified { return "none" }
        return String(major, radix: 16) + ":" + (minor == 0 ? "" : String(minor, radix: 16))
    }

    /// Parses `1:10`, `1:`, `ffff:`, `root`.
    public init?(_ text: String) {
        if text == "root" { self = .root; return }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let maj = UInt16(parts[0], radix: 16) else { return nil }
        let min = parts[1].isEmpty ? 0 : UInt16(parts[1], radix: 16)
        guard let min else { return nil }
        self.init(major: maj, minor: min)
    }
}

/// Counters the kernel keeps for a qdisc or class (TCA_STATS2).
public struct TCStats: Hashable, Sendable {
    public var bytes: UInt64 = 0
    public var packets: UInt64 = 0
    public var drops: UInt64 = 0
    public var overlimits: UInt64 = 0
    /// Bytes queued.
    public var backlog: UInt64 = 0
    /// Packets queued.
    public var qlen: UInt64 = 0
    public init() {}
    public init(bytes: UInt64, packets: UInt64, drops: UInt64, overlimits: UInt64, backlog: UInt64, qlen: UInt64) {
        self.bytes = bytes; self.packets = packets; self.drops = drops
        self.overlimits = overlimits; self.backlog = backlog; self.qlen = qlen
    }
}
