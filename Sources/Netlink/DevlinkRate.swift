import CNetlink
import TandemProtocol
#if canImport(Glibc)
import Glibc
#endif

/// A port of a devlink instance, as `devlink -j port show` lists it: what maps a PF's VF
/// number to the port whose rate object is the VF's leaf.
public struct DevlinkPort: Sendable, Equatable {
    /// `pci`, and the device (`0000:03:00.0`, `netdevsim10`).
    public var bus: String
    public var device: String
    public var index: UInt32
    /// DEVLINK_PORT_FLAVOUR_*: 0 physical, 4 a PCI VF.
    public var flavour: UInt16
    public var netdev: String?
    public var pfNumber: UInt16?
    public var vfNumber: UInt16?
    public var controller: UInt32?

    public static let physical: UInt16 = 0
    public static let pciVF: UInt16 = 4

    public init(bus: String, device: String, index: UInt32, flavour: UInt16, netdev: String? = nil,
                pfNumber: UInt16? = nil, vfNumber: UInt16? = nil, controller: UInt32? = nil) {
        self.bus = bus; self.device = device; self.index = index; self.flavour = flavour; self.netdev = netdev
        self.pfNumber = pfNumber; self.vfNumber = vfNumber; self.controller = controller
    }
}

/// One devlink rate object (`devlink port function rate`): a leaf (a port's, such as a VF's)
/// or a node (a group of rate objects, made by name). Rates are in bytes per second, as the
/// kernel keeps them; 0 is none.
public struct DevlinkRate: Sendable, Equatable {
    public enum Object: Sendable, Hashable {
        case leaf(port: UInt32)
        case node(name: String)
    }
    public var bus: String
    public var device: String
    public var object: Object
    public var txShare: UInt64
    public var txMax: UInt64
    /// nil where the kernel does not report it (before 6.6).
    public var txWeight: UInt32?
    public var parent: String?

    public init(bus: String, device: String, object: Object, txShare: UInt64 = 0, txMax: UInt64 = 0, txWeight: UInt32? = nil, parent: String? = nil) {
        self.bus = bus; self.device = device; self.object = object; self.txShare = txShare; self.txMax = txMax
        self.txWeight = txWeight; self.parent = parent
    }

    /// As devlink writes it: `pci/0000:03:00.0/2` (a leaf), `pci/0000:03:00.0/tenant-a` (a node).
    public var handle: String {
        switch object {
        case .leaf(let port): "\(bus)/\(device)/\(port)"
        case .node(let name): "\(bus)/\(device)/\(name)"
        }
    }

    /// What a rate is written as: whole Mbit/s in bytes per second (drivers take multiples of
    /// 1 Mbit/s only: mlx5, netdevsim), rounded as ``VFRate`` rounds; zero stays zero.
    public static func bytesPerSecond(_ r: BitRate) -> UInt64 { UInt64(VFRate.megabits(r)) * 125_000 }
    public static func bitRate(bytesPerSecond b: UInt64) -> BitRate { BitRate(bitsPerSecond: b &* 8) }
}

/// What a rate request changes; nil fields are left as they are.
public struct DevlinkRateChange: Sendable, Equatable {
    public var txShare: UInt64?
    public var txMax: UInt64?
    public var txWeight: UInt32?
    /// A node's name, or "" to take the object out of its node.
    public var parent: String?
    public init(txShare: UInt64? = nil, txMax: UInt64? = nil, txWeight: UInt32? = nil, parent: String? = nil) {
        self.txShare = txShare; self.txMax = txMax; self.txWeight = txWeight; self.parent = parent
    }
}

/// The generic netlink family "devlink": its messages as plain bytes (a `genlmsghdr`, then
/// attributes), built and read in Swift and tested byte for byte (DevlinkMessageTests).
public enum DevlinkMessages {
    public static let version: UInt8 = 1
    static let CMD_PORT_GET: UInt8 = 5
    static let CMD_RATE_GET: UInt8 = 74
    static let CMD_RATE_SET: UInt8 = 75
    static let CMD_RATE_NEW: UInt8 = 76
    static let CMD_RATE_DEL: UInt8 = 77
    static let ATTR_BUS_NAME: UInt16 = 1
    static let ATTR_DEV_NAME: UInt16 = 2
    static let ATTR_PORT_INDEX: UInt16 = 3
    static let ATTR_PORT_NETDEV_NAME: UInt16 = 7
    static let ATTR_PORT_FLAVOUR: UInt16 = 77
    static let ATTR_PORT_PCI_PF_NUMBER: UInt16 = 127
    static let ATTR_PORT_PCI_VF_NUMBER: UInt16 = 128
    static let ATTR_PORT_CONTROLLER_NUMBER: UInt16 = 150
    static let ATTR_RATE_TYPE: UInt16 = 165
    static let ATTR_RATE_TX_SHARE: UInt16 = 166
    static let ATTR_RATE_TX_MAX: UInt16 = 167
    static let ATTR_RATE_NODE_NAME: UInt16 = 168
    static let ATTR_RATE_PARENT_NODE_NAME: UInt16 = 169
    /// Linux 6.2 and later (after DEVLINK_ATTR_SELFTESTS, 176, and TX_PRIORITY, 177). Only
    /// some drivers take it (ice); see ``RouteSocket/setDevlinkRate(bus:device:_:_:new:)``.
    public static let ATTR_RATE_TX_WEIGHT: UInt16 = 178
    static let RATE_TYPE_LEAF: UInt16 = 0
    static let RATE_TYPE_NODE: UInt16 = 1

    static func header(_ cmd: UInt8) -> [UInt8] { [cmd, version, 0, 0] }

    static func string(_ s: String) -> [UInt8] { Array(s.utf8) + [0] }

    static func putObject(_ a: inout NetlinkAttributeWriter, bus: String, device: String, _ object: DevlinkRate.Object) {
        a.put(ATTR_BUS_NAME, string(bus))
        a.put(ATTR_DEV_NAME, string(device))
        switch object {
        case .leaf(let port): a.putU32(ATTR_PORT_INDEX, port)
        case .node(let name): a.put(ATTR_RATE_NODE_NAME, string(name))
        }
    }

    static func u64(_ v: UInt64) -> [UInt8] { var p: [UInt8] = []; p.appendLE(v); return p }

    /// `devlink port function rate set HANDLE tx_share S tx_max M [tx_weight W] [parent N | noparent]`
    /// (DEVLINK_CMD_RATE_SET), or with `new` a node made (DEVLINK_CMD_RATE_NEW).
    public static func setBody(bus: String, device: String, _ object: DevlinkRate.Object, _ change: DevlinkRateChange, new: Bool = false) -> [UInt8] {
        var a = NetlinkAttributeWriter()
        putObject(&a, bus: bus, device: device, object)
        if let s = change.txShare { a.put(ATTR_RATE_TX_SHARE, u64(s)) }
        if let m = change.txMax { a.put(ATTR_RATE_TX_MAX, u64(m)) }
        if let w = change.txWeight { a.putU32(ATTR_RATE_TX_WEIGHT, w) }
        if let p = change.parent { a.put(ATTR_RATE_PARENT_NODE_NAME, string(p)) }
        return header(new ? CMD_RATE_NEW : CMD_RATE_SET) + a.bytes
    }

    /// `devlink port function rate del HANDLE` (a node).
    public static func deleteBody(bus: String, device: String, node: String) -> [UInt8] {
        var a = NetlinkAttributeWriter()
        putObject(&a, bus: bus, device: device, .node(name: node))
        return header(CMD_RATE_DEL) + a.bytes
    }

    /// The dumps: every port, every rate object (of all devlink instances).
    public static func dumpBody(ports: Bool) -> [UInt8] { header(ports ? CMD_PORT_GET : CMD_RATE_GET) }

    /// The attributes of a reply (a whole netlink message: header, genlmsghdr, attributes).
    static func attributes(_ message: ArraySlice<UInt8>) -> [UInt16: NetlinkAttribute] {
        guard message.count >= 20 else { return [:] }
        var out: [UInt16: NetlinkAttribute] = [:]
        for a in NetlinkAttribute.parse(message.dropFirst(20)) where out[a.type] == nil { out[a.type] = a }
        return out
    }

    static func text(_ a: NetlinkAttribute?) -> String? {
        guard let a else { return nil }
        return String(decoding: a.payload.prefix(while: { $0 != 0 }), as: UTF8.self)
    }

    static func u16(_ a: NetlinkAttribute?) -> UInt16? { a?.payload.readLE(UInt16.self, at: 0) }

    /// One DEVLINK_CMD_PORT_GET reply; nil if it lacks the handle or the index.
    public static func parsePort(_ message: ArraySlice<UInt8>) -> DevlinkPort? {
        let a = attributes(message)
        guard let bus = text(a[ATTR_BUS_NAME]), let dev = text(a[ATTR_DEV_NAME]), let index = a[ATTR_PORT_INDEX]?.u32() else { return nil }
        return DevlinkPort(bus: bus, device: dev, index: index, flavour: u16(a[ATTR_PORT_FLAVOUR]) ?? 0xffff, netdev: text(a[ATTR_PORT_NETDEV_NAME]),
                           pfNumber: u16(a[ATTR_PORT_PCI_PF_NUMBER]), vfNumber: u16(a[ATTR_PORT_PCI_VF_NUMBER]),
                           controller: a[ATTR_PORT_CONTROLLER_NUMBER]?.u32())
    }

    /// One DEVLINK_CMD_RATE_GET reply; nil if it is neither a leaf with a port nor a named node.
    public static func parseRate(_ message: ArraySlice<UInt8>) -> DevlinkRate? {
        let a = attributes(message)
        guard let bus = text(a[ATTR_BUS_NAME]), let dev = text(a[ATTR_DEV_NAME]) else { return nil }
        let object: DevlinkRate.Object
        switch u16(a[ATTR_RATE_TYPE]) {
        case RATE_TYPE_LEAF?:
            guard let port = a[ATTR_PORT_INDEX]?.u32() else { return nil }
            object = .leaf(port: port)
        case RATE_TYPE_NODE?:
            guard let name = text(a[ATTR_RATE_NODE_NAME]) else { return nil }
            object = .node(name: name)
        default:
            return nil
        }
        let parent = text(a[ATTR_RATE_PARENT_NODE_NAME])
        return DevlinkRate(bus: bus, device: dev, object: object, txShare: a[ATTR_RATE_TX_SHARE]?.u64() ?? 0, txMax: a[ATTR_RATE_TX_MAX]?.u64() ?? 0,
                           txWeight: a[ATTR_RATE_TX_WEIGHT]?.u32(), parent: parent?.isEmpty == true ? nil : parent)
    }
}

/// A generic netlink family as the kernel's controller describes it.
struct GenericFamily: Sendable {
    var id: UInt16
    var maxAttribute: UInt32
}

extension RouteSocket {
    /// The "devlink" family (libnl-genl's controller cache), resolved once per socket.
    func devlinkFamily() throws(NetlinkError) -> GenericFamily {
        if let f = families["devlink"] { return f }
        guard proto == .generic else { throw NetlinkError.invalid("devlink", "family", "a NETLINK_ROUTE socket cannot reach generic netlink") }
        var cache: OpaquePointer?
        prepare()
        try check(genl_ctrl_alloc_cache(sock, &cache), "CTRL_CMD_GETFAMILY", "the generic netlink families")
        guard let cache else { throw NetlinkError(operation: "CTRL_CMD_GETFAMILY", object: "devlink", errno: ENOMEM) }
        defer { nl_cache_free(cache) }
        guard let family = genl_ctrl_search_by_name(cache, "devlink") else {
            throw NetlinkError(operation: "CTRL_CMD_GETFAMILY", object: "devlink", errno: ENOENT,
                               detail: "the kernel has no devlink (generic netlink family \"devlink\" not registered)")
        }
        defer { genl_family_put(family) }
        let f = GenericFamily(id: UInt16(genl_family_get_id(family)), maxAttribute: UInt32(clamping: genl_family_get_maxattr(family)))
        families["devlink"] = f
        return f
    }

    /// Whether a device takes tx_weight: true once a weight was written to it, false once the
    /// kernel (before 6.2: the family has fewer attributes) or the driver (all but ice, as of
    /// 6.12) refused one, nil before either.
    public func devlinkTakesWeight(bus: String, device: String) -> Bool? {
        if let f = families["devlink"], f.maxAttribute != 0, f.maxAttribute < UInt32(DevlinkMessages.ATTR_RATE_TX_WEIGHT) { return false }
        return weights["\(bus)/\(device)"]
    }

    /// `devlink -j port show`: every port of every devlink instance.
    public func devlinkPorts() throws(NetlinkError) -> [DevlinkPort] {
        try devlinkDump(ports: true, "all ports", DevlinkMessages.parsePort)
    }

    /// `devlink -j port function rate show`: every rate object, leaves and nodes.
    public func devlinkRates() throws(NetlinkError) -> [DevlinkRate] {
        try devlinkDump(ports: false, "all rate objects", DevlinkMessages.parseRate)
    }

    func devlinkDump<T>(ports: Bool, _ what: String, _ parse: (ArraySlice<UInt8>) -> T?) throws(NetlinkError) -> [T] {
        let family = try devlinkFamily().id
        var out: [T] = []
        try rawDump(type: family, body: DevlinkMessages.dumpBody(ports: ports), operation: ports ? "DEVLINK_CMD_PORT_GET" : "DEVLINK_CMD_RATE_GET",
                    object: what, restart: { out = [] }) { m in
            if let x = parse(ArraySlice(m)) { out.append(x) }
        }
        return out
    }

    /// `devlink port function rate set` (or, with `new`, `add` of a node). tx_weight goes only
    /// to a device that may take it (``devlinkTakesWeight(bus:device:)``); one the kernel or
    /// driver refuses (EOPNOTSUPP, or EINVAL for an attribute it does not know) is sent again
    /// without it, and the device is not asked again. (A family whose attribute count says 0,
    /// as devlink's does since its operations were split, 6.7, cannot tell: it is tried.)
    public func setDevlinkRate(bus: String, device: String, _ object: DevlinkRate.Object, _ change: DevlinkRateChange, new: Bool = false) throws(NetlinkError) {
        _ = try devlinkFamily()
        let key = "\(bus)/\(device)"
        guard change.txWeight != nil, devlinkTakesWeight(bus: bus, device: device) != false else {
            var plain = change
            plain.txWeight = nil
            return try sendDevlinkRate(bus: bus, device: device, object, plain, new: new)
        }
        do {
            try sendDevlinkRate(bus: bus, device: device, object, change, new: new)
            weights[key] = true
        } catch where error.errno == EOPNOTSUPP || error.errno == EINVAL {
            var plain = change
            plain.txWeight = nil
            try sendDevlinkRate(bus: bus, device: device, object, plain, new: new)
            weights[key] = false
        }
    }

    func sendDevlinkRate(bus: String, device: String, _ object: DevlinkRate.Object, _ change: DevlinkRateChange, new: Bool) throws(NetlinkError) {
        let handle = DevlinkRate(bus: bus, device: device, object: object).handle
        let family = try devlinkFamily().id
        let what = [change.txShare.map { "tx_share \($0 * 8)bit" }, change.txMax.map { "tx_max \($0 * 8)bit" },
                    change.txWeight.map { "tx_weight \($0)" }, change.parent.map { $0.isEmpty ? "noparent" : "parent \($0)" }].compactMap { $0 }
        _ = try request(type: family, body: DevlinkMessages.setBody(bus: bus, device: device, object, change, new: new),
                        operation: new ? "DEVLINK_CMD_RATE_NEW" : "DEVLINK_CMD_RATE_SET", object: "\(handle) \(what.joined(separator: " "))", expectAck: true)
    }

    /// `devlink port function rate del` of a node.
    public func deleteDevlinkNode(bus: String, device: String, name: String) throws(NetlinkError) {
        let family = try devlinkFamily().id
        _ = try request(type: family, body: DevlinkMessages.deleteBody(bus: bus, device: device, node: name),
                        operation: "DEVLINK_CMD_RATE_DEL", object: "\(bus)/\(device)/\(name)", expectAck: true)
    }
}
