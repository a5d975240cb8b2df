/// The messages of the Tandem channel. See docs/PROTOCOL.md for every field, its unit and
/// the version it appeared in. Every message is a plain value; ``MessageCodec`` turns them
/// into frames and back, and ``Validation`` bounds every field of what comes in.

/// A protocol version number. Version 1 is the only one so far.
public struct ProtocolVersion: RawRepresentable, Hashable, Comparable, Codable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let v1 = ProtocolVersion(rawValue: 1)
    /// The versions this build speaks, oldest first.
    public static let supported: [ProtocolVersion] = [.v1]
    public static let current = ProtocolVersion.v1
    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "\(rawValue)" }
    public init(from decoder: any Decoder) throws { rawValue = try decoder.singleValueContainer().decode(UInt16.self) }
    public func encode(to encoder: any Encoder) throws { var c = encoder.singleValueContainer(); try c.encode(rawValue) }

    /// The highest version both sides speak, if any.
    public static func negotiate(_ offered: [ProtocolVersion]) -> ProtocolVersion? {
        Set(offered).intersection(supported).max()
    }
}

/// Chosen by the agent for each connection it makes: 16 lowercase hex digits. Every frame
/// carries it, so that either side can drop frames left over from an earlier connection.
public struct SessionID: RawRepresentable, Hashable, Codable, Sendable, CustomStringConvertible {
    public var rawValue: String
    public init?(rawValue: String) {
        guard rawValue.utf8.count == 16, rawValue.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else { return nil }
        self.rawValue = rawValue
    }
    public init(_ value: UInt64) {
        var s = String(value, radix: 16)
        while s.utf8.count < 16 { s = "0" + s }
        self.rawValue = s
    }
    public static func random() -> SessionID {
        var g = SystemRandomNumberGenerator()
        return SessionID(g.next())
    }
    public var description: String { rawValue }
    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        let s = try c.decode(String.self)
        guard let v = SessionID(rawValue: s) else { throw DecodingError.dataCorruptedError(in: c, debugDescription: "invalid session id") }
        self = v
    }
    public func encode(to encoder: any Encoder) throws { var c = encoder.singleValueContainer(); try c.encode(rawValue) }
}

public enum FlowProtocol: String, Codable, Sendable, CaseIterable {
    case tcp, udp, any
}

/// Which packets a reservation covers. Absent fields match anything; ports with proto `any`
/// match TCP and UDP (and any protocol with ports at the same place) alike.
public struct FlowSelector: Hashable, Codable, Sendable, CustomStringConvertible {
    public var proto: FlowProtocol
    public var source: IPPrefix?
    public var sourcePort: UInt16?
    public var destination: IPPrefix?
    public var destinationPort: UInt16?

    public init(proto: FlowProtocol = .any, source: IPPrefix? = nil, sourcePort: UInt16? = nil, destination: IPPrefix? = nil, destinationPort: UInt16? = nil) {
        self.proto = proto; self.source = source; self.sourcePort = sourcePort
        self.destination = destination; self.destinationPort = destinationPort
    }

    enum CodingKeys: String, CodingKey { case proto, source = "src", sourcePort = "sport", destination = "dst", destinationPort = "dport" }

    public var description: String {
        var parts = [proto.rawValue]
        if let s = source { parts.append("src \(s)\(sourcePort.map { ":\($0)" } ?? "")") } else if let p = sourcePort { parts.append("sport \(p)") }
        if let d = destination { parts.append("dst \(d)\(destinationPort.map { ":\($0)" } ?? "")") } else if let p = destinationPort { parts.append("dport \(p)") }
        return parts.joined(separator: " ")
    }
}

/// One flow as the agent sees it: its 5-tuple.
public struct FlowKey: Hashable, Codable, Sendable {
    public var proto: FlowProtocol
    public var source: IPAddress
    public var sourcePort: UInt16
    public var destination: IPAddress
    public var destinationPort: UInt16
    public init(proto: FlowProtocol, source: IPAddress, sourcePort: UInt16, destination: IPAddress, destinationPort: UInt16) {
        self.proto = proto; self.source = source; self.sourcePort = sourcePort
        self.destination = destination; self.destinationPort = destinationPort
    }
    enum CodingKeys: String, CodingKey { case proto, source = "src", sourcePort = "sport", destination = "dst", destinationPort = "dport" }
}

/// Why a class or flow is said to want more than it gets. Open-ended: a reason from a
/// newer agent decodes as itself (and is treated like any other "wants more").
public struct WantReason: RawRepresentable, Hashable, Codable, Sendable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    /// Packets were dropped at the shaper in the interval.
    public static let drops = WantReason(rawValue: "drops")
    /// Packets wait in the shaper's queue.
    public static let backlog = WantReason(rawValue: "backlog")
    /// A TCP flow that the kernel does not mark application-limited.
    public static let notAppLimited = WantReason(rawValue: "not-app-limited")
    /// A reservation that the current allocation cannot honour.
    public static let unmetReservation = WantReason(rawValue: "unmet-reservation")
    public var description: String { rawValue }
    public init(from decoder: any Decoder) throws { rawValue = try decoder.singleValueContainer().decode(String.self) }
    public func encode(to encoder: any Encoder) throws { var c = encoder.singleValueContainer(); try c.encode(rawValue) }
}

// MARK: guest -> host

/// First message of every connection, and repeated until a matching ``Welcome`` arrives.
public struct Hello: Codable, Hashable, Sendable {
    public var agentVersion: String
    public var protocolVersions: [ProtocolVersion]
    public var interface: String
    /// The interface's MAC address, `aa:bb:cc:dd:ee:ff`.
    public var mac: String
    public var capabilities: [String]
    public init(agentVersion: String, protocolVersions: [ProtocolVersion] = ProtocolVersion.supported, interface: String, mac: String, capabilities: [String] = []) {
        self.agentVersion = agentVersion; self.protocolVersions = protocolVersions
        self.interface = interface; self.mac = mac; self.capabilities = capabilities
    }
}

/// Counters of one shaper class over the report's interval.
public struct ClassDemand: Codable, Hashable, Sendable {
    /// The class's name in the agent's tree, e.g. `tcp`, `udp`, `rsv-1a2b`.
    public var name: String
    /// Bytes sent by the class since the agent started it (monotonic).
    public var bytes: UInt64
    /// Rate sent over the interval.
    public var rate: BitRate
    /// Packets dropped over the interval.
    public var drops: UInt64
    /// Bytes queued at the end of the interval.
    public var backlog: UInt64
    public var wantsMore: [WantReason]
    public init(name: String, bytes: UInt64, rate: BitRate, drops: UInt64, backlog: UInt64, wantsMore: [WantReason] = []) {
        self.name = name; self.bytes = bytes; self.rate = rate; self.drops = drops; self.backlog = backlog; self.wantsMore = wantsMore
    }
}

public struct FlowDemand: Codable, Hashable, Sendable {
    public var flow: FlowKey
    /// Bytes the flow has sent (TCP: bytes_sent from tcp_info; UDP: not known, 0).
    public var bytes: UInt64
    public var rate: BitRate
    public var wantsMore: [WantReason]
    public init(flow: FlowKey, bytes: UInt64, rate: BitRate, wantsMore: [WantReason] = []) {
        self.flow = flow; self.bytes = bytes; self.rate = rate; self.wantsMore = wantsMore
    }
}

/// The guest's view of its own demand, sent every interval.
public struct DemandReport: Codable, Hashable, Sendable {
    /// Increases by one per report within a session.
    public var sequence: UInt64
    /// Length of the interval the rates cover, in milliseconds.
    public var intervalMilliseconds: UInt32
    /// The allocation epoch the guest was enforcing.
    public var epoch: UInt64
    /// Everything sent over the interval.
    public var rate: BitRate
    /// Whether any class wants more than it gets.
    public var wantsMore: Bool
    /// Sum of granted reservations that the current soft limit cannot carry.
    public var unmetReservations: BitRate
    public var classes: [ClassDemand]
    /// The heaviest flows, at most ``Limits/maxFlowsPerReport``.
    public var flows: [FlowDemand]
    public init(sequence: UInt64, intervalMilliseconds: UInt32, epoch: UInt64, rate: BitRate, wantsMore: Bool, unmetReservations: BitRate = .zero, classes: [ClassDemand] = [], flows: [FlowDemand] = []) {
        self.sequence = sequence; self.intervalMilliseconds = intervalMilliseconds; self.epoch = epoch; self.rate = rate
        self.wantsMore = wantsMore; self.unmetReservations = unmetReservations; self.classes = classes; self.flows = flows
    }
}

/// An application in the guest asks for bandwidth for some of its flows.
public struct ReserveRequest: Codable, Hashable, Sendable {
    /// Chosen by the agent, unique within the VM: letters, digits, `-`, `_`, at most 64.
    public var id: String
    public var rate: BitRate
    public var selector: FlowSelector
    public init(id: String, rate: BitRate, selector: FlowSelector) { self.id = id; self.rate = rate; self.selector = selector }
}

public struct ReleaseRequest: Codable, Hashable, Sendable {
    public var id: String
    public init(id: String) { self.id = id }
}

/// The guest reports what it now enforces.
public struct Applied: Codable, Hashable, Sendable {
    public var epoch: UInt64
    /// Set when the allocation could not be applied; the guest keeps its previous shaping.
    public var error: String?
    public init(epoch: UInt64, error: String? = nil) { self.epoch = epoch; self.error = error }
}

// MARK: host -> guest

/// The policy an admin set for the VM.
public struct VMPolicy: Codable, Hashable, Sendable {
    public var weight: Double
    public var guarantee: BitRate
    /// Absent: no cap beyond the link.
    public var cap: BitRate?
    public init(weight: Double = 1, guarantee: BitRate = .zero, cap: BitRate? = nil) { self.weight = weight; self.guarantee = guarantee; self.cap = cap }
}

/// The host's answer to a ``Hello``. Its session echoes the hello's.
public struct Welcome: Codable, Hashable, Sendable {
    public var version: ProtocolVersion
    public var vm: String
    public var policy: VMPolicy
    /// How often the host wants demand reports, in milliseconds.
    public var reportIntervalMilliseconds: UInt32
    public init(version: ProtocolVersion, vm: String, policy: VMPolicy, reportIntervalMilliseconds: UInt32) {
        self.version = version; self.vm = vm; self.policy = policy; self.reportIntervalMilliseconds = reportIntervalMilliseconds
    }
}

public struct GrantedReservation: Codable, Hashable, Sendable {
    public var id: String
    public var rate: BitRate
    public var selector: FlowSelector
    public init(id: String, rate: BitRate, selector: FlowSelector) { self.id = id; self.rate = rate; self.selector = selector }
}

/// What the VM may send now.
public struct Allocation: Codable, Hashable, Sendable {
    /// Increases with every change the host makes.
    public var epoch: UInt64
    /// The limit the host enforces (VF TX limit or host-side shaper).
    public var hardLimit: BitRate
    /// The limit the guest should shape to, at or below the hard limit, so that the guest's
    /// own shaper (which sees flows) decides what is dropped, not the NIC.
    public var softLimit: BitRate
    public var reservations: [GrantedReservation]
    public init(epoch: UInt64, hardLimit: BitRate, softLimit: BitRate, reservations: [GrantedReservation] = []) {
        self.epoch = epoch; self.hardLimit = hardLimit; self.softLimit = softLimit; self.reservations = reservations
    }
}

public struct ReservationReply: Codable, Hashable, Sendable {
    public var id: String
    public var granted: Bool
    /// Why it was refused, e.g. "250mbit already reserved of the VM's 300mbit guarantee".
    public var reason: String?
    public init(id: String, granted: Bool, reason: String? = nil) { self.id = id; self.granted = granted; self.reason = reason }
}

/// Either side may ping; the other answers with a pong carrying the same nonce.
public struct Ping: Codable, Hashable, Sendable {
    public var nonce: UInt64
    public init(nonce: UInt64) { self.nonce = nonce }
}

public struct ErrorMessage: Codable, Hashable, Sendable {
    /// Open-ended like ``WantReason``: codes from a newer host decode as themselves.
    public struct Code: RawRepresentable, Hashable, Codable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public static let unsupportedVersion = Code(rawValue: "unsupported-version")
        public static let invalidMessage = Code(rawValue: "invalid-message")
        public static let notWelcomed = Code(rawValue: "not-welcomed")
        public static let rateLimited = Code(rawValue: "rate-limited")
        public static let refused = Code(rawValue: "refused")
        public var description: String { rawValue }
        public init(from decoder: any Decoder) throws { rawValue = try decoder.singleValueContainer().decode(String.self) }
        public func encode(to encoder: any Encoder) throws { var c = encoder.singleValueContainer(); try c.encode(rawValue) }
    }
    public var code: Code
    public var message: String
    public init(code: Code, message: String) { self.code = code; self.message = message }
}

/// Everything a guest may send.
public enum GuestMessage: Hashable, Sendable {
    case hello(Hello)
    case demand(DemandReport)
    case reserve(ReserveRequest)
    case release(ReleaseRequest)
    case applied(Applied)
    case ping(Ping)
    case pong(Ping)
}

/// Everything a host may send.
public enum HostMessage: Hashable, Sendable {
    case welcome(Welcome)
    case allocation(Allocation)
    case reservation(ReservationReply)
    case ping(Ping)
    case pong(Ping)
    case error(ErrorMessage)
}
