import Foundation
import TandemProtocol

/// The agent's unix-socket API (docs/AGENT-API.md): one JSON object per line each way.
public struct AgentRequest: Codable, Sendable, Equatable {
    /// `reserve`, `release`, `list` or `status`.
    public var op: String
    /// reserve: the rate in tc's notation (`30mbit`).
    public var rate: String?
    /// reserve: `tcp`, `udp` or `any` (default any).
    public var proto: String?
    public var src: String?
    public var sport: UInt16?
    public var dst: String?
    public var dport: UInt16?
    /// reserve: keep the reservation this long even after the connection closes (`60s`).
    public var ttl: String?
    /// release: the reservation's id.
    public var id: String?

    public init(op: String, rate: String? = nil, proto: String? = nil, src: String? = nil, sport: UInt16? = nil, dst: String? = nil, dport: UInt16? = nil, ttl: String? = nil, id: String? = nil) {
        self.op = op; self.rate = rate; self.proto = proto; self.src = src; self.sport = sport
        self.dst = dst; self.dport = dport; self.ttl = ttl; self.id = id
    }
}

public struct AgentResponse: Codable, Sendable {
    public var ok: Bool
    public var error: String?
    /// reserve: the new reservation's id.
    public var id: String?
    public var reservations: [ReservationInfo]?
    public var status: AgentStatus?

    public init(ok: Bool, error: String? = nil, id: String? = nil, reservations: [ReservationInfo]? = nil, status: AgentStatus? = nil) {
        self.ok = ok; self.error = error; self.id = id; self.reservations = reservations; self.status = status
    }
    public static func failure(_ message: String) -> AgentResponse { AgentResponse(ok: false, error: message) }
}

public struct ReservationInfo: Codable, Sendable, Equatable {
    public var id: String
    /// As reserved, tc notation.
    public var rate: String
    /// What the shaper gives it now (lower when reservations do not fit the allocation).
    public var shapedRate: String?
    public var selector: String
    public var uid: UInt32
    public var pid: Int32
    /// Seconds left when made with a TTL; nil while held by its connection.
    public var ttlRemaining: Double?
    public init(id: String, rate: String, shapedRate: String?, selector: String, uid: UInt32, pid: Int32, ttlRemaining: Double?) {
        self.id = id; self.rate = rate; self.shapedRate = shapedRate; self.selector = selector; self.uid = uid; self.pid = pid; self.ttlRemaining = ttlRemaining
    }
}

public struct AgentStatus: Codable, Sendable {
    public struct ClassInfo: Codable, Sendable {
        public var name: String
        public var handle: String
        public var rate: String
        public var ceil: String
        public var sentBytes: UInt64
        public var drops: UInt64
        public var backlog: UInt64
        public init(name: String, handle: String, rate: String, ceil: String, sentBytes: UInt64, drops: UInt64, backlog: UInt64) {
            self.name = name; self.handle = handle; self.rate = rate; self.ceil = ceil; self.sentBytes = sentBytes; self.drops = drops; self.backlog = backlog
        }
    }
    public var interface: String
    /// `connected`, `handshaking` or `absent`.
    public var host: String
    public var vm: String?
    public var session: String?
    public var policy: VMPolicy?
    public var epoch: UInt64?
    public var hardLimit: String?
    public var softLimit: String
    public var classes: [ClassInfo]
    public var reservations: [ReservationInfo]
    public var framesSent: UInt64
    public var framesReceived: UInt64
    public var framesRefused: UInt64
    public init(interface: String, host: String, vm: String?, session: String?, policy: VMPolicy?, epoch: UInt64?, hardLimit: String?, softLimit: String, classes: [ClassInfo], reservations: [ReservationInfo], framesSent: UInt64, framesReceived: UInt64, framesRefused: UInt64) {
        self.interface = interface; self.host = host; self.vm = vm; self.session = session; self.policy = policy; self.epoch = epoch; self.hardLimit = hardLimit; self.softLimit = softLimit; self.classes = classes; self.reservations = reservations; self.framesSent = framesSent; self.framesReceived = framesReceived; self.framesRefused = framesRefused
    }
}

extension AgentRequest {
    /// Builds the flow selector of a reserve request, naming the first bad value.
    public func selector() throws(ValidationError) -> FlowSelector {
        let p: FlowProtocol
        switch (proto ?? "any").lowercased() {
        case "tcp": p = .tcp
        case "udp": p = .udp
        case "any", "all": p = .any
        default: throw ValidationError(field: "proto", problem: "'\(proto ?? "")' is not tcp, udp or any")
        }
        func prefix(_ s: String?, _ field: String) throws(ValidationError) -> IPPrefix? {
            guard let s else { return nil }
            guard let v = IPPrefix(s) else { throw ValidationError(field: field, problem: "'\(s.prefix(80))' is not an IPv4 or IPv6 address or prefix") }
            return v
        }
        let sel = FlowSelector(proto: p, source: try prefix(src, "src"), sourcePort: sport, destination: try prefix(dst, "dst"), destinationPort: dport)
        try sel.validate()
        return sel
    }
}
