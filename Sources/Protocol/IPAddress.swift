/// An IPv4 or IPv6 address, parsed and printed without any system call.
public enum IPAddress: Hashable, Sendable {
    case v4(UInt32)
    /// Sixteen bytes in network order.
    case v6([UInt8])

    public var isIPv4: Bool { if case .v4 = self { return true } else { return false } }

    /// The address in network byte order.
    public var bytes: [UInt8] {
        switch self {
        case .v4(let a): return [UInt8(a >> 24), UInt8((a >> 16) & 0xff), UInt8((a >> 8) & 0xff), UInt8(a & 0xff)]
        case .v6(let b): return b
        }
    }

    public init?(_ text: String) {
        if let v4 = IPAddress.parseV4(Substring(text)) { self = .v4(v4) }
        else if let v6 = IPAddress.parseV6(text) { self = .v6(v6) }
        else { return nil }
    }

    /// Four dot-separated parts of one to three ASCII digits, each at most 255.
    static func parseV4(_ s: Substring) -> UInt32? { parseV4(s.utf8) }

    static func parseV4<Bytes: Collection<UInt8>>(_ utf8: Bytes) -> UInt32? {
        var value: UInt32 = 0, part: UInt32 = 0, digits = 0, dots = 0
        for b in utf8 {
            if b == UInt8(ascii: ".") {
                guard digits > 0, part <= 255, dots < 3 else { return nil }
                value = value << 8 | part
                part = 0; digits = 0; dots += 1
            } else if b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") {
                digits += 1
                guard digits <= 3 else { return nil }
                part = part * 10 + UInt32(b - UInt8(ascii: "0"))
            } else {
                return nil
            }
        }
        guard dots == 3, digits > 0, part <= 255 else { return nil }
        return value << 8 | part
    }

    static func parseV6(_ text: String) -> [UInt8]? {
        guard text.contains(":"), text.count <= 45 else { return nil }
        let halves = text.split(separator: "::", omittingEmptySubsequences: false).map(String.init)
        guard halves.count <= 2 else { return nil }
        func groups(_ s: String, allowV4Tail: Bool) -> [UInt16]? {
            if s.isEmpty { return [] }
            let parts = s.split(separator: ":", omittingEmptySubsequences: false)
            var out: [UInt16] = []
            for (i, p) in parts.enumerated() {
                if allowV4Tail && i == parts.count - 1 && p.contains(".") {
                    guard let v4 = parseV4(p) else { return nil }
                    out.append(UInt16(v4 >> 16)); out.append(UInt16(v4 & 0xffff))
                } else {
                    guard !p.isEmpty, p.count <= 4, let g = UInt16(p, radix: 16) else { return nil }
                    out.append(g)
                }
            }
            return out
        }
        let all: [UInt16]
        if halves.count == 2 {
            guard let head = groups(halves[0], allowV4Tail: false), let tail = groups(halves[1], allowV4Tail: true),
                  head.count + tail.count <= 7 else { return nil }
            all = head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        } else {
            guard let g = groups(text, allowV4Tail: true), g.count == 8 else { return nil }
            all = g
        }
        return all.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
    }
}

extension IPAddress: CustomStringConvertible {
    public var description: String {
        switch self {
        case .v4:
            return bytes.map(String.init).joined(separator: ".")
        case .v6(let b):
            let g = (0..<8).map { UInt16(b[2 * $0]) << 8 | UInt16(b[2 * $0 + 1]) }
            // RFC 5952: compress the longest run (of two or more) of zero groups.
            var bestStart = -1, bestLen = 1, i = 0
            while i < 8 {
                if g[i] == 0 {
                    var j = i
                    while j < 8 && g[j] == 0 { j += 1 }
                    if j - i > bestLen { bestStart = i; bestLen = j - i }
                    i = j
                } else { i += 1 }
            }
            let hex = g.map { String($0, radix: 16) }
            if bestStart < 0 { return hex.joined(separator: ":") }
            let head = hex[0..<bestStart].joined(separator: ":")
            let tail = hex[(bestStart + bestLen)...].joined(separator: ":")
            return head + "::" + tail
        }
    }
}

extension IPAddress: Codable {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard s.utf8.count <= 64, let a = IPAddress(s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "invalid IP address '\(s.prefix(64))'")
        }
        self = a
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}

/// An address with a prefix length: `10.0.0.0/24`, `fd00::/64`, or a bare address (full length).
public struct IPPrefix: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var length: Int

    public init(address: IPAddress, length: Int? = nil) {
        self.address = address
        self.length = length ?? (address.isIPv4 ? 32 : 128)
    }

    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let a = IPAddress(String(parts[0])) else { return nil }
        let max = a.isIPv4 ? 32 : 128
        if parts.count == 2 {
            guard let l = Int(parts[1]), (0...max).contains(l), parts[1].allSatisfy({ $0.isNumber }) else { return nil }
            self.init(address: a, length: l)
        } else {
            self.init(address: a)
        }
    }

    public var isFullLength: Bool { length == (address.isIPv4 ? 32 : 128) }
    public var description: String { isFullLength ? address.description : "\(address)/\(length)" }
}

extension IPPrefix: Codable {
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard s.utf8.count <= 64, let p = IPPrefix(s) else {
            throw DecodingError.dataCorruptedError(in: c, debugDescription: "invalid address or prefix '\(s.prefix(64))'")
        }
        self = p
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }
}
