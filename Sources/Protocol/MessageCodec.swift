#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Turns messages into frames and frames into validated messages.
///
/// A frame is one line of JSON: `{"kind":"demand","session":"…","body":{…}}` and a newline.
/// Decoding never traps: whatever the bytes, the result is a message, an unknown kind
/// (ignored by the caller, forward compatible) or a ``ProtocolViolation``.
public enum MessageCodec {
    /// What came out of one frame.
    public enum Outcome<Message: Sendable>: Sendable {
        case message(Message, session: SessionID?, unknownFields: [String])
        /// A kind this build does not know: a newer peer. Tolerated and reported.
        case unknownKind(String, session: SessionID?)
        case invalid(ProtocolViolation)
    }

    /// `fastPath: false` skips the hand-written encoding of the frequent frames (for
    /// comparing the two; the bytes are the same either way).
    public static func encode(_ message: GuestMessage, session: SessionID, fastPath: Bool = true) -> [UInt8] {
        if fastPath, let fast = fastFrame(message, session) { return fast }
        switch message {
        case .hello(let b): return frame("hello", session, b)
        case .demand(let b): return frame("demand", session, b)
        case .reserve(let b): return frame("reserve", session, b)
        case .release(let b): return frame("release", session, b)
        case .applied(let b): return frame("applied", session, b)
        case .ping(let b): return frame("ping", session, b)
        case .pong(let b): return frame("pong", session, b)
        }
    }

    /// `session` is nil only before the host has seen a hello (its first ping).
    /// `fastPath: false` skips the hand-written encoding of the frequent frames (for
    /// comparing the two; the bytes are the same either way).
    public static func encode(_ message: HostMessage, session: SessionID?, fastPath: Bool = true) -> [UInt8] {
        if fastPath, let fast = fastFrame(message, session) { return fast }
        switch message {
        case .welcome(let b): return frame("welcome", session, b)
        case .allocation(let b): return frame("allocation", session, b)
        case .reservation(let b): return frame("reservation", session, b)
        case .ping(let b): return frame("ping", session, b)
        case .pong(let b): return frame("pong", session, b)
        case .error(let b): return frame("error", session, b)
        }
    }

    /// Whether an encoded frame can be sent: peers skip longer ones as oversize.
    public static func fits(_ frame: [UInt8]) -> Bool { frame.count <= Limits.maxFrameBytes }

    /// `fastPath: false` skips ``FastGuestDecoder`` (for comparing the two; the outcome is
    /// the same either way).
    ///
    /// `detail: false`, the host's: a demand report's classes and flows are read and checked as
    /// always (a report that breaks a rule in one is refused with the same error), then left
    /// out of the report returned, empty: the host uses only its rate, wanting more, unmet
    /// reservations and epoch, and the fast path then builds no list of them.
    public static func decodeGuest(_ frame: [UInt8], fastPath: Bool = true, detail: Bool = true) -> Outcome<GuestMessage> {
        if fastPath, let fast = FastGuestDecoder.decode(frame, detail: detail) { return fast }
        let outcome = decode(frame, GuestKinds.self)
        if !detail, case .message(.demand(var r), let session, let unknown) = outcome {
            r.classes = []
            r.flows = []
            return .message(.demand(r), session: session, unknownFields: unknown)
        }
        return outcome
    }

    /// Whether a frame ends as an agent's demand report ends (`,"kind":"demand","session":…}`),
    /// without reading the rest: enough to know that a newer report replaces an older one
    /// unread. (A frame that says so falsely is decoded, and judged, when it is the newest.)
    public static func endsAsDemandReport(_ frame: [UInt8]) -> Bool {
        frame.withUnsafeBufferPointer { FastGuestDecoder.kindFromTail($0) == "demand" }
    }

    /// Whether ``FastGuestDecoder`` takes this frame (rather than leaving it to the general
    /// decoder).
    static func fastPathTakes(_ frame: [UInt8]) -> Bool { FastGuestDecoder.decode(frame) != nil }

    public static func decodeHost(_ frame: [UInt8]) -> Outcome<HostMessage> { decode(frame, HostKinds.self) }

    /// The kinds one side receives, and the body type of each.
    protocol Kinds {
        associatedtype Message: Sendable
        static func body(_ kind: String, _ d: BodyDecoder) throws(ProtocolViolation) -> Message?
    }

    enum GuestKinds: Kinds {
        static func body(_ kind: String, _ d: BodyDecoder) throws(ProtocolViolation) -> GuestMessage? {
            switch kind {
            case "hello": return .hello(try d.body(Hello.self))
            case "demand": return .demand(try d.body(DemandReport.self))
            case "reserve": return .reserve(try d.body(ReserveRequest.self))
            case "release": return .release(try d.body(ReleaseRequest.self))
            case "applied": return .applied(try d.body(Applied.self))
            case "ping": return .ping(try d.body(Ping.self))
            case "pong": return .pong(try d.body(Ping.self))
            default: return nil
            }
        }
    }

    enum HostKinds: Kinds {
        static func body(_ kind: String, _ d: BodyDecoder) throws(ProtocolViolation) -> HostMessage? {
            switch kind {
            case "welcome": return .welcome(try d.body(Welcome.self))
            case "allocation": return .allocation(try d.body(Allocation.self))
            case "reservation": return .reservation(try d.body(ReservationReply.self))
            case "ping": return .ping(try d.body(Ping.self))
            case "pong": return .pong(try d.body(Ping.self))
            case "error": return .error(try d.body(ErrorMessage.self))
            default: return nil
            }
        }
    }

    // MARK: implementation

    /// What the host sends most (pings every second or so to every guest, allocations that
    /// carry no reservation) written directly, as the JSON encoder would write it (keys
    /// sorted, no spaces): a JSONEncoder per frame cost the host more than the guest's
    /// report it answers. Nil for anything else.
    static func fastFrame(_ message: HostMessage, _ session: SessionID?) -> [UInt8]? {
        switch message {
        case .ping(let p): return pingFrame(p, pong: false, session)
        case .pong(let p): return pingFrame(p, pong: true, session)
        case .allocation(let a) where a.reservations.isEmpty:
            var w = FrameWriter()
            w.put("\"epoch\":"); w.put(a.epoch)
            w.put(",\"hardLimit\":"); w.put(a.hardLimit.bitsPerSecond)
            w.put(",\"reservations\":[],\"softLimit\":"); w.put(a.softLimit.bitsPerSecond)
            return w.finish("allocation", session)
        default:
            return nil
        }
    }

    /// What the agent sends most (its demand report, every interval that changes it; pings
    /// and pongs) written directly, as the JSON encoder would write it: the encoder was a
    /// tenth of the agent's time with 1,000 flows. Nil for anything else, or a report with a
    /// string the writer would have to escape (names are plain ASCII in practice).
    static func fastFrame(_ message: GuestMessage, _ session: SessionID) -> [UInt8]? {
        switch message {
        case .ping(let p): return pingFrame(p, pong: false, session)
        case .pong(let p): return pingFrame(p, pong: true, session)
        case .demand(let r):
            var w = FrameWriter()
            w.put("\"classes\":[")
            for (i, c) in r.classes.enumerated() {
                w.put(i == 0 ? "{\"backlog\":" : ",{\"backlog\":"); w.put(c.backlog)
                w.put(",\"bytes\":"); w.put(c.bytes)
                w.put(",\"drops\":"); w.put(c.drops)
                w.put(",\"name\":"); guard w.put(string: c.name) else { return nil }
                w.put(",\"rate\":"); w.put(c.rate.bitsPerSecond)
                w.put(",\"wantsMore\":"); guard w.put(reasons: c.wantsMore) else { return nil }
                w.put("}")
            }
            w.put("],\"epoch\":"); w.put(r.epoch)
            w.put(",\"flows\":[")
            for (i, f) in r.flows.enumerated() {
                w.put(i == 0 ? "{\"bytes\":" : ",{\"bytes\":"); w.put(f.bytes)
                w.put(",\"flow\":{\"dport\":"); w.put(UInt64(f.flow.destinationPort))
                w.put(",\"dst\":"); guard w.put(string: f.flow.destination.description) else { return nil }
                w.put(",\"proto\":"); guard w.put(string: f.flow.proto.rawValue) else { return nil }
                w.put(",\"sport\":"); w.put(UInt64(f.flow.sourcePort))
                w.put(",\"src\":"); guard w.put(string: f.flow.source.description) else { return nil }
                w.put("},\"rate\":"); w.put(f.rate.bitsPerSecond)
                w.put(",\"wantsMore\":"); guard w.put(reasons: f.wantsMore) else { return nil }
                w.put("}")
            }
            w.put("],\"intervalMilliseconds\":"); w.put(UInt64(r.intervalMilliseconds))
            w.put(",\"rate\":"); w.put(r.rate.bitsPerSecond)
            w.put(",\"sequence\":"); w.put(r.sequence)
            w.put(",\"unmetReservations\":"); w.put(r.unmetReservations.bitsPerSecond)
            w.put(r.wantsMore ? ",\"wantsMore\":true" : ",\"wantsMore\":false")
            return w.finish("demand", session)
        default:
            return nil
        }
    }

    /// A ping or a pong, from either side (the same body).
    static func pingFrame(_ p: Ping, pong: Bool, _ session: SessionID?) -> [UInt8] {
        var w = FrameWriter()
        w.put("\"nonce\":"); w.put(p.nonce)
        return w.finish(pong ? "pong" : "ping", session)
    }

    /// A frame written by hand: the envelope's keys in the encoder's (sorted) order around
    /// a body the caller writes, numbers as the encoder writes them, and strings only when
    /// they need no escaping.
    struct FrameWriter {
        var out: [UInt8] = []
        init() {
            out.reserveCapacity(256)
            put("{\"body\":{")
        }
        mutating func put(_ s: StaticString) { s.withUTF8Buffer { out.append(contentsOf: $0) } }
        mutating func put(_ n: UInt64) {
            // Digits backwards into a fixed buffer: no String per number.
            var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)   // 24 bytes: UInt64.max has 20 digits
            withUnsafeMutableBytes(of: &digits) { b in
                var v = n, i = b.count
                repeat { i -= 1; b[i] = UInt8(ascii: "0") + UInt8(v % 10); v /= 10 } while v > 0
                out.append(contentsOf: b[i...])
            }
        }
        /// A string in quotes; false (nothing written) if it has a byte the encoder would
        /// escape, or one that is not ASCII.
        mutating func put(string s: String) -> Bool {
            var s = s
            return s.withUTF8 { u in
                guard u.allSatisfy({ $0 >= 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) else { return false }
                out.append(UInt8(ascii: "\""))
                out.append(contentsOf: u)
                out.append(UInt8(ascii: "\""))
                return true
            }
        }
        mutating func put(reasons: [WantReason]) -> Bool {
            out.append(UInt8(ascii: "["))
            for (i, r) in reasons.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                guard put(string: r.rawValue) else { return false }
            }
            out.append(UInt8(ascii: "]"))
            return true
        }
        /// Closes the body and writes the kind and the session.
        consuming func finish(_ kind: StaticString, _ session: SessionID?) -> [UInt8] {
            put("},\"kind\":\""); put(kind); put("\"")
            // (A session is 16 hex digits: nothing in it to escape.)
            if let session { put(",\"session\":\""); out.append(contentsOf: session.rawValue.utf8); put("\"") }
            put("}\n")
            return out
        }
    }

    struct Envelope<Body: Encodable>: Encodable {
        var kind: String
        var session: SessionID?
        var body: Body
    }

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { return nil }
    }

    static func frame<B: Encodable>(_ kind: String, _ session: SessionID?, _ body: B) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // A weight that is not finite (which validation refuses before it gets here) is
        // written as a string, which the peer then refuses: encoding never fails.
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        guard var data = try? encoder.encode(Envelope(kind: kind, session: session, body: body)) else {
            preconditionFailure("encoding a \(kind) message failed")
        }
        data.append(UInt8(ascii: "\n"))
        return Array(data)
    }

    /// Decodes the body of one frame whose kind is already known, from the frame's
    /// top-level object (the same pass that read the kind).
    struct BodyDecoder {
        let top: KeyedDecodingContainer<AnyKey>
        func body<B: Decodable & Validatable & Encodable>(_ type: B.Type) throws(ProtocolViolation) -> (B) {
            let value: B
            do {
                value = try top.decode(B.self, forKey: AnyKey(stringValue: "body"))
            } catch {
                throw ProtocolViolation.invalidBody(String(describing: B.self), Self.describe(error))
            }
            do { try value.validate() } catch { throw ProtocolViolation.invalidValue(error) }
            return value
        }

        static func describe(_ error: any Error) -> String {
            guard let e = error as? DecodingError else { return "malformed" }
            func path(_ p: [any CodingKey]) -> String {
                p.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
            }
            switch e {
            case .keyNotFound(let k, let ctx): return "missing field '\(path(ctx.codingPath + [k]))'"
            case .typeMismatch(_, let ctx): return "wrong type at '\(path(ctx.codingPath))'"
            case .valueNotFound(_, let ctx): return "null at '\(path(ctx.codingPath))'"
            case .dataCorrupted(let ctx): return "bad value at '\(path(ctx.codingPath))': \(ctx.debugDescription.prefix(120))"
            @unknown default: return "malformed"
            }
        }
    }

    /// One pass over the frame: what the envelope says (the kind, the session, and the
    /// names of the top-level and body keys, for reporting unknown ones) and the body, decoded
    /// as the kind's type. Throws only when the frame is not an envelope at all.
    struct OnePass<K: Kinds>: Decodable {
        var kind: String
        var session: SessionID?
        var topKeys: [String]
        var bodyKeys: [String]
        var nullBodyKeys: Set<String>
        var message: Result<K.Message?, ProtocolViolation>

        init(from decoder: any Decoder) throws {
            let top = try decoder.container(keyedBy: AnyKey.self)
            topKeys = top.allKeys.map(\.stringValue)
            kind = try top.decode(String.self, forKey: AnyKey(stringValue: "kind"))
            session = try top.decodeIfPresent(SessionID.self, forKey: AnyKey(stringValue: "session"))
            bodyKeys = []
            nullBodyKeys = []
            let bodyKey = AnyKey(stringValue: "body")
            if top.contains(bodyKey), (try? top.decodeNil(forKey: bodyKey)) == false,
               let body = try? top.nestedContainer(keyedBy: AnyKey.self, forKey: bodyKey) {
                for k in body.allKeys {
                    bodyKeys.append(k.stringValue)
                    if (try? body.decodeNil(forKey: k)) == true { nullBodyKeys.insert(k.stringValue) }
                }
            }
            if kind.utf8.count > 32 { message = .failure(.notAFrame); return }
            do { message = .success(try K.body(kind, BodyDecoder(top: top))) } catch { message = .failure(error) }
        }
    }

    /// The body keys each kind knows, as its Codable conformance writes them.
    static let knownBodyKeys: [String: Set<String>] = [
        "hello": ["agentVersion", "protocolVersions", "interface", "mac", "capabilities"],
        "demand": ["sequence", "intervalMilliseconds", "epoch", "rate", "wantsMore", "unmetReservations", "classes", "flows"],
        "reserve": ["id", "rate", "selector"],
        "release": ["id"],
        "applied": ["epoch", "error"],
        "ping": ["nonce"], "pong": ["nonce"],
        "welcome": ["version", "vm", "policy", "reportIntervalMilliseconds"],
        "allocation": ["epoch", "hardLimit", "softLimit", "reservations"],
        "reservation": ["id", "granted", "reason"],
        "error": ["code", "message"],
    ]

    static func decode<K: Kinds>(_ frame: [UInt8], _ kinds: K.Type) -> Outcome<K.Message> {
        // A frame is at most maxFrameBytes with its newline, as FrameDecoder enforces.
        guard frame.count < Limits.maxFrameBytes else { return .invalid(.oversize(frame.count + 1)) }
        let probe: OnePass<K>
        do {
            probe = try JSONDecoder().decode(OnePass<K>.self, from: Data(frame))
        } catch {
            return .invalid(.notAFrame)
        }
        let message: K.Message?
        switch probe.message {
        case .success(let m): message = m
        case .failure(let e): return .invalid(e)
        }
        guard let message else { return .unknownKind(probe.kind, session: probe.session) }
        var unknown = probe.topKeys.filter { $0 != "kind" && $0 != "session" && $0 != "body" }.sorted()
        if let known = knownBodyKeys[probe.kind] {
            unknown += probe.bodyKeys.filter { !known.contains($0) && !probe.nullBodyKeys.contains($0) }.sorted().map { "body.\($0)" }
        }
        return .message(message, session: probe.session, unknownFields: unknown)
    }
}

extension MessageCodec.Outcome: Equatable where Message: Equatable {}

/// Why a frame was refused. Counted per channel; repeated violations disconnect a guest.
public enum ProtocolViolation: Error, Equatable, Sendable, CustomStringConvertible {
    /// Not a JSON object with a string `kind` (of at most 32 bytes) and a well-formed or
    /// absent `session`: garbage, a cut frame, or a corrupt header.
    case notAFrame
    case oversize(Int)
    /// The body does not decode as the kind's type.
    case invalidBody(String, String)
    /// The body decodes but breaks a rule.
    case invalidValue(ValidationError)

    public var description: String {
        switch self {
        case .notAFrame: return "not a frame (garbage or a cut frame)"
        case .oversize(let n): return "frame of \(n) bytes exceeds the \(Limits.maxFrameBytes)-byte limit"
        case .invalidBody(let type, let why): return "invalid \(type): \(why)"
        case .invalidValue(let e): return "invalid value: \(e)"
        }
    }
}
