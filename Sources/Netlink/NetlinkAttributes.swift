/// Reading and writing netlink attributes (`struct nlattr`: u16 length, u16 type, payload,
/// padding to 4 bytes) in plain Swift, so that messages libnl has no object for can be
/// built and parsed, and tested byte for byte without a kernel.
public struct NetlinkAttribute: Sendable {
    /// The type with NLA_F_NESTED and NLA_F_NET_BYTEORDER masked off.
    public var type: UInt16
    public var payload: ArraySlice<UInt8>

    public func u32(at offset: Int = 0) -> UInt32? { payload.readLE(UInt32.self, at: offset) }
    public func u64(at offset: Int = 0) -> UInt64? { payload.readLE(UInt64.self, at: offset) }
    public var nested: [NetlinkAttribute] { NetlinkAttribute.parse(payload) }

    /// Parses a run of attributes; stops at the first malformed one (a short or overlong
    /// length), so a corrupt reply yields what came before it and never reads out of bounds.
    public static func parse(_ bytes: ArraySlice<UInt8>) -> [NetlinkAttribute] {
        parseCounting(bytes).attributes
    }

    /// Parses like ``parse(_:)`` and also says where parsing stopped; `end == bytes.endIndex`
    /// means the run was well formed to its last byte.
    static func parseCounting(_ bytes: ArraySlice<UInt8>) -> (attributes: [NetlinkAttribute], end: Int) {
        var out: [NetlinkAttribute] = []
        var i = bytes.startIndex
        while i + 4 <= bytes.endIndex {
            guard let len16 = bytes.readLE(UInt16.self, at: i - bytes.startIndex),
                  let type = bytes.readLE(UInt16.self, at: i - bytes.startIndex + 2) else { break }
            let len = Int(len16)
            guard len >= 4, i + len <= bytes.endIndex else { break }
            out.append(NetlinkAttribute(type: type & 0x3fff, payload: bytes[(i + 4)..<(i + len)]))
            i = Swift.min(i + ((len + 3) & ~3), bytes.endIndex)
        }
        return (out, i)
    }
}

/// Builds attributes into a byte buffer.
public struct NetlinkAttributeWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    public init() {}

    /// Appends one attribute. Like the kernel's nla_nest_end, a length past 65,535 wraps
    /// (the field is 16 bits): see ``VFMessages/parseLinkReply(_:)`` for reading such nests.
    public mutating func put(_ type: UInt16, _ payload: [UInt8]) {
        appendLE(UInt16(truncatingIfNeeded: 4 + payload.count))
        appendLE(type)
        bytes += payload
        while bytes.count % 4 != 0 { bytes.append(0) }
    }

    public mutating func putU32(_ type: UInt16, _ value: UInt32) {
        var p: [UInt8] = []
        p.appendLE(value)
        put(type, p)
    }

    /// A nested attribute; iproute2 and the kernel's replies do not set NLA_F_NESTED on the
    /// VF nests, and neither does this.
    public mutating func nest(_ type: UInt16, _ body: (inout NetlinkAttributeWriter) -> Void) {
        var inner = NetlinkAttributeWriter()
        body(&inner)
        put(type, inner.bytes)
    }

    mutating func appendLE<T: FixedWidthInteger>(_ v: T) { bytes.appendLE(v) }
}

extension Array where Element == UInt8 {
    mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) }
    }
}

extension ArraySlice where Element == UInt8 {
    /// Reads a little-endian integer at `offset` from the slice's start, or nil past the end.
    func readLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T? {
        let size = MemoryLayout<T>.size
        guard offset >= 0, startIndex + offset + size <= endIndex else { return nil }
        var v: T = 0
        for k in 0..<size { v |= T(self[startIndex + offset + k]) << (8 * k) }
        return v
    }
}

extension Array where Element == UInt8 {
    func readLE<T: FixedWidthInteger>(_ t: T.Type, at offset: Int) -> T? { self[...].readLE(t, at: offset) }
}
