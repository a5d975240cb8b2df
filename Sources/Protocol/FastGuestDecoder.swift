/// A decoder for the frames a host receives most (demand reports, pings and pongs), written
/// as they are written: one pass over the bytes, no `JSONDecoder`.
///
/// Every running agent sends a demand report each interval while it is busy, and at least
/// once a second while idle; on a host with many VMs decoding them is most of what the
/// channels cost (`JSONDecoder` takes tens of microseconds for a report, this a few).
///
/// It is a fast path, never a second opinion: it accepts only the plain form a peer's
/// encoder writes (no whitespace, no escapes, no nulls, integers only, ASCII strings,
/// known keys each at most once, in any order) and gives up (`nil`) at anything else, for
/// ``MessageCodec``'s general decoder to decide. What it does accept decodes to exactly what
/// the general decoder gives, validation included: the frames fuzz target checks the two
/// against each other on every input.
enum FastGuestDecoder {
    struct GiveUp: Error {}

    /// What a decode without detail (``MessageCodec/decodeGuest(_:fastPath:detail:)``) left
    /// out of a report: how many classes and flows it named, and the first rule one of them
    /// broke (the classes' before the flows', as ``DemandReport/validate()`` checks them).
    struct Omitted {
        var classes = 0, flows = 0
        var classError: ValidationError?, flowError: ValidationError?

        mutating func note(_ c: ClassDemand) {
            classes += 1
            if classError == nil { do throws(ValidationError) { try c.validate() } catch { classError = error } }
        }

        mutating func note(_ f: FlowDemand) {
            flows += 1
            if flowError == nil { do throws(ValidationError) { try f.validate() } catch { flowError = error } }
        }
    }

    static func decode(_ frame: [UInt8], detail: Bool = true) -> MessageCodec.Outcome<GuestMessage>? {
        guard frame.count < Limits.maxFrameBytes else { return nil }
        return frame.withUnsafeBufferPointer { buf -> MessageCodec.Outcome<GuestMessage>? in
            var s = Scanner(buf)
            do {
                // The body comes first in sorted keys, before the kind that says how to read
                // it. Agents end every frame with `"kind":"…","session":"…"}`: the kind read
                // from there lets the body be decoded where it stands (the kind is still read
                // in its place, and must be the same). Otherwise the body is skipped, and read
                // once the kind is known.
                let guess = kindFromTail(buf)
                var kind: String?, session: SessionID?, sawSession = false
                var body: Range<Int>?
                var parsed: GuestMessage?
                var omitted: Omitted? = detail ? nil : Omitted()
                var first = true
                try s.take(UInt8(ascii: "{"))
                while let key = try s.key(&first) {
                    switch key {
                    case "kind" where kind == nil: kind = try s.string()
                    case "session" where !sawSession:
                        sawSession = true
                        guard let id = SessionID(rawValue: try s.string()) else { throw GiveUp() }
                        session = id
                    case "body" where body == nil && parsed == nil:
                        if let guess {
                            parsed = try Self.body(guess, &s, &omitted)
                        } else {
                            let start = s.i
                            try s.skipObject()
                            body = start..<s.i
                        }
                    default: throw GiveUp()
                    }
                }
                guard s.atEnd, let kind else { return nil }
                if parsed != nil {
                    guard kind == guess else { return nil }
                } else {
                    guard let body else { return nil }
                    var b = Scanner(UnsafeBufferPointer(rebasing: buf[body]))
                    parsed = try Self.body(kind, &b, &omitted)
                    guard b.atEnd else { return nil }
                }
                guard let message = parsed else { return nil }
                do throws(ValidationError) {
                    if let o = omitted, case .demand(let r) = message {
                        try r.validateHead(classCount: o.classes, flowCount: o.flows)
                        if let e = o.classError ?? o.flowError { throw e }
                    } else {
                        try validate(message)
                    }
                } catch { return .invalid(.invalidValue(error)) }
                return .message(message, session: session, unknownFields: [])
            } catch {
                return nil
            }
        }
    }

    /// The body of a kind this decoder reads, from the scanner's position.
    static func body(_ kind: String, _ s: inout Scanner, _ omitted: inout Omitted?) throws(GiveUp) -> GuestMessage {
        switch kind {
        case "demand": return .demand(try demand(&s, &omitted))
        case "ping": return .ping(try ping(&s))
        case "pong": return .pong(try ping(&s))
        default: throw GiveUp()
        }
    }

    /// The checks the general decoder makes of the kinds read here (without boxing the body
    /// as `any Validatable`: a copy and an allocation per report).
    static func validate(_ m: GuestMessage) throws(ValidationError) {
        switch m {
        case .demand(let r): try r.validate()
        case .ping(let p), .pong(let p): try p.validate()
        default: break
        }
    }

    /// The kind, when the frame ends as an agent ends it: `,"kind":"K","session":"<16>"}`.
    static func kindFromTail(_ b: UnsafeBufferPointer<UInt8>) -> String? {
        let end = b.count - 18                       // 16 digits, a quote and the brace
        guard end - tail.count > 0, b[b.count - 1] == UInt8(ascii: "}"), b[b.count - 2] == UInt8(ascii: "\""),
              b[(end - tail.count)..<end].elementsEqual(tail) else { return nil }
        for (kind, head) in heads {
            let start = end - tail.count - head.count
            if start > 0, b[start..<(end - tail.count)].elementsEqual(head) { return kind }
        }
        return nil
    }
    /// What stands between the kind's value and the session's, and before the kind's value.
    static let tail = Array(#"","session":""#.utf8)
    static let heads = ["demand", "pong", "ping"].map { ($0, Array(#","kind":""#.utf8) + Array($0.utf8)) }

    static func ping(_ s: inout Scanner) throws(GiveUp) -> Ping {
        var nonce: UInt64?
        var first = true
        try s.take(UInt8(ascii: "{"))
        while let key = try s.key(&first) {
            guard key == "nonce", nonce == nil else { throw GiveUp() }
            nonce = try s.uint(UInt64.max)
        }
        guard let nonce else { throw GiveUp() }
        return Ping(nonce: nonce)
    }

    /// A report; without detail (`omitted` given) its classes and flows are checked one by one
    /// as they are read, counted, and not kept.
    static func demand(_ s: inout Scanner, _ omitted: inout Omitted?) throws(GiveUp) -> DemandReport {
        var sequence: UInt64?, interval: UInt64?, epoch: UInt64?, rate: UInt64?, wants: Bool?, unmet: UInt64?
        var classes: [ClassDemand]?, flows: [FlowDemand]?
        var first = true
        try s.take(UInt8(ascii: "{"))
        while let key = try s.key(&first) {
            switch key {
            case "sequence" where sequence == nil: sequence = try s.uint(UInt64.max)
            case "intervalMilliseconds" where interval == nil: interval = try s.uint(UInt64(UInt32.max))
            case "epoch" where epoch == nil: epoch = try s.uint(UInt64.max)
            case "rate" where rate == nil: rate = try s.uint(UInt64.max)
            case "wantsMore" where wants == nil: wants = try s.bool()
            case "unmetReservations" where unmet == nil: unmet = try s.uint(UInt64.max)
            case "classes" where classes == nil: classes = try list(&s, classDemand, &omitted) { $0.note($1) }
            case "flows" where flows == nil: flows = try list(&s, flowDemand, &omitted) { $0.note($1) }
            default: throw GiveUp()
            }
        }
        guard let sequence, let interval, let epoch, let rate, let wants, let unmet, let classes, let flows else { throw GiveUp() }
        return DemandReport(sequence: sequence, intervalMilliseconds: UInt32(interval), epoch: epoch, rate: BitRate(bitsPerSecond: rate),
                            wantsMore: wants, unmetReservations: BitRate(bitsPerSecond: unmet), classes: classes, flows: flows)
    }

    /// A report's list of classes or flows, each element read with `element`: kept, or
    /// (without detail) noted in `omitted` and not kept.
    static func list<T>(_ s: inout Scanner, _ element: (inout Scanner) throws(GiveUp) -> T, _ omitted: inout Omitted?,
                        _ note: (inout Omitted, T) -> Void) throws(GiveUp) -> [T] {
        var out: [T] = [], next = true
        try s.take(UInt8(ascii: "["))
        while try s.element(&next) {
            let e = try element(&s)
            if omitted != nil { note(&omitted!, e) } else { out.append(e) }
        }
        return out
    }

    static func reasons(_ s: inout Scanner) throws(GiveUp) -> [WantReason] {
        var out: [WantReason] = [], first = true
        try s.take(UInt8(ascii: "["))
        while try s.element(&first) { out.append(WantReason(rawValue: try s.string())) }
        return out
    }

    static func classDemand(_ s: inout Scanner) throws(GiveUp) -> ClassDemand {
        var name: String?, bytes: UInt64?, rate: UInt64?, drops: UInt64?, backlog: UInt64?, wants: [WantReason]?
        var first = true
        try s.take(UInt8(ascii: "{"))
        while let key = try s.key(&first) {
            switch key {
            case "name" where name == nil: name = try s.string()
            case "bytes" where bytes == nil: bytes = try s.uint(UInt64.max)
            case "rate" where rate == nil: rate = try s.uint(UInt64.max)
            case "drops" where drops == nil: drops = try s.uint(UInt64.max)
            case "backlog" where backlog == nil: backlog = try s.uint(UInt64.max)
            case "wantsMore" where wants == nil: wants = try reasons(&s)
            default: throw GiveUp()
            }
        }
        guard let name, let bytes, let rate, let drops, let backlog, let wants else { throw GiveUp() }
        return ClassDemand(name: name, bytes: bytes, rate: BitRate(bitsPerSecond: rate), drops: drops, backlog: backlog, wantsMore: wants)
    }

    static func flowDemand(_ s: inout Scanner) throws(GiveUp) -> FlowDemand {
        var flow: FlowKey?, bytes: UInt64?, rate: UInt64?, wants: [WantReason]?
        var first = true
        try s.take(UInt8(ascii: "{"))
        while let key = try s.key(&first) {
            switch key {
            case "flow" where flow == nil: flow = try flowKey(&s)
            case "bytes" where bytes == nil: bytes = try s.uint(UInt64.max)
            case "rate" where rate == nil: rate = try s.uint(UInt64.max)
            case "wantsMore" where wants == nil: wants = try reasons(&s)
            default: throw GiveUp()
            }
        }
        guard let flow, let bytes, let rate, let wants else { throw GiveUp() }
        return FlowDemand(flow: flow, bytes: bytes, rate: BitRate(bitsPerSecond: rate), wantsMore: wants)
    }

    static func flowKey(_ s: inout Scanner) throws(GiveUp) -> FlowKey {
        var proto: FlowProtocol?, src: IPAddress?, sport: UInt64?, dst: IPAddress?, dport: UInt64?
        func address(_ s: inout Scanner) throws(GiveUp) -> IPAddress {
            let bytes = try s.stringBytes()
            // Dotted quads straight from the bytes; anything else as IPAddress(String) reads it.
            if let v4 = IPAddress.parseV4(bytes) { return .v4(v4) }
            let text = String(decoding: bytes, as: UTF8.self)
            guard text.utf8.count <= 64, let a = IPAddress(text) else { throw GiveUp() }
            return a
        }
        var first = true
        try s.take(UInt8(ascii: "{"))
        while let key = try s.key(&first) {
            switch key {
            case "proto" where proto == nil:
                guard let p = FlowProtocol(rawValue: try s.string()) else { throw GiveUp() }
                proto = p
            case "src" where src == nil: src = try address(&s)
            case "sport" where sport == nil: sport = try s.uint(UInt64(UInt16.max))
            case "dst" where dst == nil: dst = try address(&s)
            case "dport" where dport == nil: dport = try s.uint(UInt64(UInt16.max))
            default: throw GiveUp()
            }
        }
        guard let proto, let src, let sport, let dst, let dport else { throw GiveUp() }
        return FlowKey(proto: proto, source: src, sourcePort: UInt16(sport), destination: dst, destinationPort: UInt16(dport))
    }

    /// A cursor over the plain JSON subset. Every method throws ``GiveUp`` at anything else.
    struct Scanner {
        let b: UnsafeBufferPointer<UInt8>
        var i = 0
        init(_ b: UnsafeBufferPointer<UInt8>) { self.b = b }

        var atEnd: Bool { i == b.count }

        mutating func take(_ c: UInt8) throws(GiveUp) {
            guard i < b.count, b[i] == c else { throw GiveUp() }
            i += 1
        }

        mutating func peek(_ c: UInt8) -> Bool { i < b.count && b[i] == c }

        /// A key, as its bytes: matched against literals (`case "rate":`) without making a
        /// String of it.
        struct Key {
            let bytes: UnsafeBufferPointer<UInt8>
            static func ~= (pattern: StaticString, key: Key) -> Bool { key == pattern }
            static func == (key: Key, literal: StaticString) -> Bool {
                let n = literal.utf8CodeUnitCount
                guard n == key.bytes.count else { return false }
                for k in 0..<n where key.bytes[k] != literal.utf8Start[k] { return false }
                return true
            }
        }

        /// The next key of an object whose `{` was taken, with its `:`; nil at its `}`.
        /// `first` starts true for each object.
        mutating func key(_ first: inout Bool) throws(GiveUp) -> Key? {
            if first {
                first = false
                if peek(UInt8(ascii: "}")) { i += 1; return nil }
            } else if peek(UInt8(ascii: ",")) {
                i += 1
            } else {
                try take(UInt8(ascii: "}"))
                return nil
            }
            let k = try stringBytes()
            try take(UInt8(ascii: ":"))
            return Key(bytes: k)
        }

        /// Whether another element of an array whose `[` was taken follows; false at its `]`.
        mutating func element(_ first: inout Bool) throws(GiveUp) -> Bool {
            if first {
                first = false
                if peek(UInt8(ascii: "]")) { i += 1; return false }
                return true
            }
            if peek(UInt8(ascii: ",")) { i += 1; return true }
            try take(UInt8(ascii: "]"))
            return false
        }

        /// A string of printable ASCII without escapes.
        mutating func string() throws(GiveUp) -> String {
            String(decoding: try stringBytes(), as: UTF8.self)
        }

        /// A string of printable ASCII without escapes, as its bytes (without the quotes).
        mutating func stringBytes() throws(GiveUp) -> UnsafeBufferPointer<UInt8> {
            try take(UInt8(ascii: "\""))
            let start = i
            while i < b.count {
                let c = b[i]
                if c == UInt8(ascii: "\"") {
                    i += 1
                    return UnsafeBufferPointer(rebasing: b[start..<(i - 1)])
                }
                guard c >= 0x20, c < 0x7f, c != UInt8(ascii: "\\") else { throw GiveUp() }
                i += 1
            }
            throw GiveUp()
        }

        /// A non-negative integer in JSON's form (no leading zeros), at most `max`.
        mutating func uint(_ max: UInt64) throws(GiveUp) -> UInt64 {
            let start = i
            var v: UInt64 = 0
            while i < b.count, b[i] >= 48, b[i] <= 57 {
                let (m, o1) = v.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(UInt64(b[i] - 48))
                guard !o1, !o2 else { throw GiveUp() }
                v = a
                i += 1
            }
            // Nothing, a leading zero, or a fraction or exponent follows: not ours.
            guard i > start, !(b[start] == 48 && i - start > 1), v <= max else { throw GiveUp() }
            if i < b.count, b[i] == UInt8(ascii: ".") || b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") { throw GiveUp() }
            return v
        }

        mutating func bool() throws(GiveUp) -> Bool {
            if literal("true") { return true }
            if literal("false") { return false }
            throw GiveUp()
        }

        mutating func literal(_ word: StaticString) -> Bool {
            let n = word.utf8CodeUnitCount
            guard i + n <= b.count else { return false }
            for k in 0..<n where b[i + k] != word.utf8Start[k] { return false }
            i += n
            return true
        }

        /// Skips an object of the plain subset (strings without escapes), checking only
        /// that its brackets and quotes balance; it is read properly later.
        mutating func skipObject() throws(GiveUp) {
            guard peek(UInt8(ascii: "{")) else { throw GiveUp() }
            var depth = 0
            var inString = false
            while i < b.count {
                let c = b[i]
                i += 1
                if inString {
                    if c == UInt8(ascii: "\"") { inString = false } else if c == UInt8(ascii: "\\") { throw GiveUp() }
                    continue
                }
                switch c {
                case UInt8(ascii: "\""): inString = true
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 { return }
                default: break
                }
            }
            throw GiveUp()
        }
    }
}
