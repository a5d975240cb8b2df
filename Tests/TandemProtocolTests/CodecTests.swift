import Testing
@testable import TandemProtocol

enum Samples {
    static let session = SessionID(0x0123_4567_89ab_cdef)
    static let flow = FlowKey(proto: .tcp, source: IPAddress("10.0.0.2")!, sourcePort: 40000, destination: IPAddress("10.0.0.5")!, destinationPort: 5201)
    static let flow6 = FlowKey(proto: .udp, source: IPAddress("fd00::2")!, sourcePort: 53, destination: IPAddress("fd00::5")!, destinationPort: 9000)
    static let selector = FlowSelector(proto: .tcp, destination: IPPrefix("10.0.0.5"), destinationPort: 5201)

    static let guest: [GuestMessage] = [
        .hello(Hello(agentVersion: "0.1.0", interface: "eth0", mac: "52:54:00:12:34:56", capabilities: ["reservations", "flows"])),
        .demand(DemandReport(sequence: 7, intervalMilliseconds: 100, epoch: 3, rate: .mbit(95), wantsMore: true, unmetReservations: .mbit(5),
                             classes: [ClassDemand(name: "tcp", bytes: 123_456, rate: .mbit(40), drops: 2, backlog: 3000, wantsMore: [.drops, .backlog])],
                             flows: [FlowDemand(flow: flow, bytes: 99, rate: .mbit(40), wantsMore: [.notAppLimited]), FlowDemand(flow: flow6, bytes: 0, rate: .kbit(3))])),
        .reserve(ReserveRequest(id: "r-1", rate: .mbit(30), selector: selector)),
        .reserve(ReserveRequest(id: "r_2", rate: .mbit(1), selector: FlowSelector(proto: .udp, source: IPPrefix("fd00::/64"), destination: IPPrefix("fd00::9"), destinationPort: 53))),
        .release(ReleaseRequest(id: "r-1")),
        .applied(Applied(epoch: 3)),
        .applied(Applied(epoch: 4, error: "RTM_NEWTCLASS: Invalid argument")),
        .ping(Ping(nonce: 1)), .pong(Ping(nonce: .max)),
    ]

    static let host: [HostMessage] = [
        .welcome(Welcome(version: .v1, vm: "vm1", policy: VMPolicy(weight: 2.5, guarantee: .mbit(100), cap: .gbit(1)), reportIntervalMilliseconds: 100)),
        .welcome(Welcome(version: .v1, vm: "vm2", policy: VMPolicy(), reportIntervalMilliseconds: 1000)),
        .allocation(Allocation(epoch: 9, hardLimit: .mbit(400), softLimit: .mbit(390), reservations: [GrantedReservation(id: "r-1", rate: .mbit(30), selector: selector)])),
        .reservation(ReservationReply(id: "r-1", granted: true)),
        .reservation(ReservationReply(id: "r-2", granted: false, reason: "250mbit already reserved of the VM's 300mbit guarantee")),
        .ping(Ping(nonce: 5)), .pong(Ping(nonce: 6)),
        .error(ErrorMessage(code: .unsupportedVersion, message: "no common version")),
    ]
}

@Suite struct MessageRoundTrip {
    @Test(arguments: Samples.guest)
    func guestMessage(_ m: GuestMessage) throws {
        let frame = MessageCodec.encode(m, session: Samples.session)
        #expect(frame.last == UInt8(ascii: "\n"))
        #expect(frame.dropLast().contains(UInt8(ascii: "\n")) == false)
        guard case .message(let back, let session, let unknown) = MessageCodec.decodeGuest(Array(frame.dropLast())) else {
            Issue.record("did not decode: \(String(decoding: frame, as: UTF8.self))"); return
        }
        #expect(back == m)
        #expect(session == Samples.session)
        #expect(unknown.isEmpty)
    }

    @Test(arguments: Samples.host)
    func hostMessage(_ m: HostMessage) throws {
        for session in [Samples.session, nil] as [SessionID?] {
            let frame = MessageCodec.encode(m, session: session)
            guard case .message(let back, let s, let unknown) = MessageCodec.decodeHost(Array(frame.dropLast())) else {
                Issue.record("did not decode: \(String(decoding: frame, as: UTF8.self))"); return
            }
            #expect(back == m)
            #expect(s == session)
            #expect(unknown.isEmpty)
        }
    }

    @Test func wireFormatIsStable() {
        let frame = MessageCodec.encode(.ping(Ping(nonce: 42)), session: Samples.session)
        #expect(String(decoding: frame, as: UTF8.self) == #"{"body":{"nonce":42},"kind":"ping","session":"0123456789abcdef"}"# + "\n")
        let rsv = MessageCodec.encode(.reserve(ReserveRequest(id: "a", rate: .mbit(30), selector: Samples.selector)), session: Samples.session)
        #expect(String(decoding: rsv, as: UTF8.self).contains(#""selector":{"dport":5201,"dst":"10.0.0.5","proto":"tcp"}"#))
        #expect(String(decoding: rsv, as: UTF8.self).contains(#""rate":30000000"#))
    }
}

@Suite struct ForwardCompatibility {
    @Test func unknownKindIsReportedNotFatal() {
        let line = Array(#"{"kind":"telemetry","session":"0123456789abcdef","body":{"x":1}}"#.utf8)
        guard case .unknownKind(let k, let s) = MessageCodec.decodeGuest(line) else { Issue.record("expected unknownKind"); return }
        #expect(k == "telemetry")
        #expect(s == Samples.session)
    }

    @Test func unknownFieldsAreToleratedAndNamed() {
        let line = Array(#"{"kind":"ping","session":"0123456789abcdef","trace":"x","body":{"nonce":3,"priority":"high","hint":null}}"#.utf8)
        guard case .message(let m, _, let unknown) = MessageCodec.decodeGuest(line) else { Issue.record("expected a message"); return }
        #expect(m == .ping(Ping(nonce: 3)))
        #expect(unknown == ["trace", "body.priority"])
    }

    @Test func knownOptionalSentAsNullIsNotUnknown() {
        let line = Array(#"{"kind":"applied","session":"0123456789abcdef","body":{"epoch":3,"error":null}}"#.utf8)
        guard case .message(let m, _, let unknown) = MessageCodec.decodeGuest(line) else { Issue.record("expected a message"); return }
        #expect(m == .applied(Applied(epoch: 3)))
        #expect(unknown.isEmpty)
    }
}

@Suite struct DecodeRefusals {
    static func violation(_ text: String) -> ProtocolViolation? {
        if case .invalid(let v) = MessageCodec.decodeGuest(Array(text.utf8)) { return v }
        return nil
    }

    @Test(arguments: [
        "garbage", "{", "[]", "null", #"{"kind":5}"#, #"{"session":"0123456789abcdef"}"#, "\u{0}\u{ff}\u{fe}",
        #"{"kind":"ping","session":"XYZ","body":{"nonce":1}}"#,
    ])
    func garbageIsNotAFrame(text: String) {
        #expect(Self.violation(text) == .notAFrame)
    }

    @Test(arguments: [
        // Absurd or broken values, each refused with a named field.
        (#"{"kind":"demand","session":"0123456789abcdef","body":{"sequence":1,"intervalMilliseconds":100,"epoch":0,"rate":10000000000001,"wantsMore":true,"unmetReservations":0,"classes":[],"flows":[]}}"#, "demand.rate"),
        (#"{"kind":"demand","session":"0123456789abcdef","body":{"sequence":1,"intervalMilliseconds":0,"epoch":0,"rate":1,"wantsMore":true,"unmetReservations":0,"classes":[],"flows":[]}}"#, "demand.intervalMilliseconds"),
        (#"{"kind":"reserve","session":"0123456789abcdef","body":{"id":"a b","rate":1000,"selector":{"proto":"tcp"}}}"#, "reserve.id"),
        (#"{"kind":"reserve","session":"0123456789abcdef","body":{"id":"ab","rate":0,"selector":{"proto":"tcp"}}}"#, "reserve.rate"),
        (#"{"kind":"reserve","session":"0123456789abcdef","body":{"id":"ab","rate":10,"selector":{"proto":"tcp","dport":0}}}"#, "selector.dport"),
        (#"{"kind":"reserve","session":"0123456789abcdef","body":{"id":"ab","rate":10,"selector":{"proto":"tcp","src":"10.0.0.1","dst":"::1"}}}"#, "selector"),
        (#"{"kind":"hello","session":"0123456789abcdef","body":{"agentVersion":"1","protocolVersions":[],"interface":"eth0","mac":"52:54:00:12:34:56","capabilities":[]}}"#, "hello.protocolVersions"),
        (#"{"kind":"hello","session":"0123456789abcdef","body":{"agentVersion":"1","protocolVersions":[1],"interface":"eth0","mac":"nope","capabilities":[]}}"#, "hello.mac"),
        (#"{"kind":"hello","session":"0123456789abcdef","body":{"agentVersion":"1","protocolVersions":[1],"interface":"","mac":"52:54:00:12:34:56","capabilities":[]}}"#, "hello.interface"),
    ])
    func absurdValuesAreRefused(text: String, field: String) {
        guard case .invalidValue(let e) = Self.violation(text) else { Issue.record("expected invalidValue for \(field), got \(String(describing: Self.violation(text)))"); return }
        #expect(e.field == field)
    }

    @Test(arguments: [
        #"{"kind":"demand","session":"0123456789abcdef","body":{"sequence":-1}}"#,
        #"{"kind":"demand","session":"0123456789abcdef","body":{"sequence":1e400}}"#,
        #"{"kind":"ping","session":"0123456789abcdef","body":{"nonce":18446744073709551616}}"#,
        #"{"kind":"ping","session":"0123456789abcdef","body":{"nonce":"NaN"}}"#,
        #"{"kind":"ping","session":"0123456789abcdef"}"#,
        #"{"kind":"reserve","session":"0123456789abcdef","body":{"id":"a","rate":5,"selector":{"proto":"sctp"}}}"#,
        #"{"kind":"reserve","session":"0123456789abcdef","body":{"id":"a","rate":5,"selector":{"proto":"tcp","dst":"300.1.1.1"}}}"#,
        #"{"kind":"reserve","session":"0123456789abcdef","body":{"id":"a","rate":5,"selector":{"proto":"tcp","dport":70000}}}"#,
    ])
    func malformedBodiesAreRefused(text: String) {
        guard case .invalidBody = Self.violation(text) else { Issue.record("expected invalidBody, got \(String(describing: Self.violation(text)))"); return }
    }

    @Test func tooManyFlowsIsRefused() {
        let flows = Array(repeating: FlowDemand(flow: Samples.flow, bytes: 1, rate: .kbit(1)), count: Limits.maxFlowsPerReport + 1)
        let frame = MessageCodec.encode(.demand(DemandReport(sequence: 1, intervalMilliseconds: 100, epoch: 1, rate: .mbit(1), wantsMore: false, flows: flows)), session: Samples.session)
        // 1025 flows do not fit a frame anyway; the decoder refuses either way, never traps.
        let outcome = MessageCodec.decodeGuest(Array(frame.dropLast()))
        guard case .invalid = outcome else { Issue.record("expected refusal"); return }
    }

    @Test func maximumFlowsFitOneFrame() {
        // A full report of IPv6 flows with large numbers must still fit in a frame.
        let big = FlowDemand(flow: FlowKey(proto: .udp, source: IPAddress("fd00:1234:5678:9abc:def0:1234:5678:9abc")!, sourcePort: 65535, destination: IPAddress("fd00:1234:5678:9abc:def0:1234:5678:9abd")!, destinationPort: 65535), bytes: .max, rate: .protocolMaximum, wantsMore: [.notAppLimited])
        let report = DemandReport(sequence: 1, intervalMilliseconds: 100, epoch: 1, rate: .mbit(1), wantsMore: false, flows: Array(repeating: big, count: 64))
        let frame = MessageCodec.encode(.demand(report), session: Samples.session)
        #expect(frame.count < Limits.maxFrameBytes)
    }

    @Test func welcomeWithUnknownVersionIsRefused() {
        let frame = MessageCodec.encode(.welcome(Welcome(version: ProtocolVersion(rawValue: 99), vm: "x", policy: VMPolicy(), reportIntervalMilliseconds: 100)), session: nil)
        guard case .invalid(.invalidValue(let e)) = MessageCodec.decodeHost(Array(frame.dropLast())) else { Issue.record("expected refusal"); return }
        #expect(e.field == "welcome.version")
    }

    @Test func allocationWithSoftAboveHardIsRefused() {
        let frame = MessageCodec.encode(.allocation(Allocation(epoch: 1, hardLimit: .mbit(10), softLimit: .mbit(11))), session: nil)
        guard case .invalid(.invalidValue(let e)) = MessageCodec.decodeHost(Array(frame.dropLast())) else { Issue.record("expected refusal"); return }
        #expect(e.field == "allocation.softLimit")
    }

    @Test func negotiation() {
        #expect(ProtocolVersion.negotiate([.v1, ProtocolVersion(rawValue: 7)]) == .v1)
        #expect(ProtocolVersion.negotiate([ProtocolVersion(rawValue: 7)]) == nil)
    }
}

@Suite struct ReviewRegressions {
    @Test func unknownWantReasonFromNewerAgentIsTolerated() {
        let line = Array(#"{"kind":"demand","session":"0123456789abcdef","body":{"sequence":1,"intervalMilliseconds":100,"epoch":0,"rate":1,"wantsMore":true,"unmetReservations":0,"classes":[{"name":"tcp","bytes":1,"rate":1,"drops":0,"backlog":0,"wantsMore":["ecn-marks"]}],"flows":[]}}"#.utf8)
        guard case .message(.demand(let d), _, _) = MessageCodec.decodeGuest(line) else { Issue.record("expected a demand"); return }
        #expect(d.classes.first?.wantsMore == [WantReason(rawValue: "ecn-marks")])
    }

    @Test func nonFiniteWeightNeverCrashesTheSenderAndIsRefused() {
        let frame = MessageCodec.encode(.welcome(Welcome(version: .v1, vm: "vm", policy: VMPolicy(weight: .nan), reportIntervalMilliseconds: 100)), session: nil)
        guard case .invalid = MessageCodec.decodeHost(Array(frame.dropLast())) else { Issue.record("expected refusal"); return }
    }

    @Test(arguments: ["+a:+b:+c:+d:+e:+f", "-0:00:00:00:00:00", "52:54:00:12:34", "52:54:00:12:34:5g"])
    func looseMACsAreRefused(mac: String) {
        #expect(throws: ValidationError.self) { try Hello(agentVersion: "1", interface: "eth0", mac: mac).validate() }
    }

    @Test func controlCharactersIncludingC1AreRefused() {
        #expect(throws: ValidationError.self) { try Hello(agentVersion: "1\u{85}", interface: "eth0", mac: "52:54:00:12:34:56").validate() }
    }

    @Test func frameOfExactlyTheLimitDecodesAndOneMoreIsOversize() {
        var pad = MessageCodec.encode(.pong(Ping(nonce: 1)), session: Samples.session).dropLast()
        // Pad an unknown top-level field so the frame (with its newline) is exactly the limit.
        let head = Array(#"{"x":""#.utf8), tail = Array(#"","#.utf8)
        let fill = Limits.maxFrameBytes - 1 - pad.count - head.count - tail.count + 1
        let exact = head + Array(repeating: UInt8(ascii: "a"), count: fill) + tail + pad.dropFirst()
        #expect(exact.count + 1 == Limits.maxFrameBytes)
        guard case .message = MessageCodec.decodeGuest(exact) else { Issue.record("expected the full-size frame to decode"); return }
        pad = []
        guard case .invalid(.oversize) = MessageCodec.decodeGuest(exact + [UInt8(ascii: " ")]) else { Issue.record("expected oversize"); return }
    }
}

/// The host's fast path for demand reports and pings (``FastGuestDecoder``): it takes what
/// agents write, and wherever it takes a frame it decides exactly as the general decoder.
@Suite struct FastPathAgreement {
    static func agree(_ frame: [UInt8]) -> Bool {
        MessageCodec.decodeGuest(frame) == MessageCodec.decodeGuest(frame, fastPath: false)
    }

    static let s = "0123456789abcdef"
    static let body = #""sequence":1,"intervalMilliseconds":100,"epoch":0,"rate":5,"wantsMore":false,"unmetReservations":0,"classes":[],"flows":[]"#

    @Test(arguments: Samples.guest)
    func agentFramesTakeTheFastPathWhereThereIsOne(_ m: GuestMessage) {
        let frame = Array(MessageCodec.encode(m, session: Samples.session).dropLast())
        let fast: Bool
        switch m { case .demand, .ping, .pong: fast = true; default: fast = false }
        #expect(MessageCodec.fastPathTakes(frame) == fast)
        #expect(Self.agree(frame))
        guard case .message(let back, let session, let unknown) = MessageCodec.decodeGuest(frame) else { Issue.record("did not decode"); return }
        #expect(back == m && session == Samples.session && unknown.isEmpty)
    }

    /// Reports as busy agents send them: many classes and flows, IPv4 and IPv6, every reason.
    @Test func fullReportsTakeTheFastPath() {
        let reasons: [WantReason] = [.notAppLimited, WantReason(rawValue: "newer-reason")]
        let flows = (0..<64).map { (i: Int) -> FlowDemand in
            let key: FlowKey = i % 2 == 0 ? Samples.flow : Samples.flow6
            return FlowDemand(flow: key, bytes: UInt64(i) * 1_000_003, rate: .kbit(UInt64(i) + 1), wantsMore: i % 3 == 0 ? reasons : [])
        }
        let classes = (0..<8).map { ClassDemand(name: "rsv-\($0)", bytes: .max, rate: .protocolMaximum, drops: UInt64($0), backlog: 0, wantsMore: [.drops, .backlog, .unmetReservation]) }
        let m = GuestMessage.demand(DemandReport(sequence: .max, intervalMilliseconds: 60_000, epoch: .max, rate: .protocolMaximum, wantsMore: true, unmetReservations: .gbit(1), classes: classes, flows: flows))
        let frame = Array(MessageCodec.encode(m, session: Samples.session).dropLast())
        #expect(MessageCodec.fits(frame))
        #expect(MessageCodec.fastPathTakes(frame))
        #expect(Self.agree(frame))
        if case .message(let back, _, _) = MessageCodec.decodeGuest(frame) { #expect(back == m) } else { Issue.record("did not decode") }
    }

    /// The fast path reads the kind from where agents write it (last but the session) to read
    /// the body in place; in any other order it skips the body and comes back to it.
    @Test(arguments: [
        #"{"kind":"ping","session":"0123456789abcdef","body":{"nonce":1}}"#,
        #"{"session":"0123456789abcdef","body":{"nonce":7},"kind":"pong"}"#,
        #"{"body":{"nonce":1},"kind":"ping"}"#,
        #"{"kind":"demand","body":{"sequence":1,"intervalMilliseconds":100,"epoch":0,"rate":5,"wantsMore":false,"unmetReservations":0,"classes":[{"name":"tcp","bytes":1,"rate":1,"drops":0,"backlog":0,"wantsMore":["drops"]}],"flows":[]},"session":"0123456789abcdef"}"#,
    ])
    func otherKeyOrdersTakeTheFastPathToo(text: String) {
        let frame = Array(text.utf8)
        #expect(MessageCodec.fastPathTakes(frame))
        #expect(Self.agree(frame))
    }

    /// Anything outside the plain form goes to the general decoder, which decides as before.
    @Test(arguments: [
        #"{"kind":"ping","session":"0123456789abcdef","body":{"nonce":1}} "#,                  // whitespace
        #"{ "kind":"ping","session":"0123456789abcdef","body":{"nonce":1}}"#,
        #"{"kind":"ping","session":"0123456789abcdef","body":{"nonce":1,"extra":2}}"#,           // unknown field
        #"{"kind":"ping","session":"0123456789abcdef","extra":1,"body":{"nonce":1}}"#,
        #"{"kind":"ping","session":"0123456789abcdef","body":{"nonce":1,"nonce":2}}"#,           // duplicate
        #"{"kind":"ping","kind":"pong","session":"0123456789abcdef","body":{"nonce":1}}"#,
        #"{"kind":"ping","session":null,"body":{"nonce":1}}"#,                                   // null
        #"{"kind":"ping","session":"0123456789abcdef","body":{"nonce":1.0}}"#,                   // not an integer
        #"{"kind":"ping","session":"0123456789abcdef","body":{"nonce":1e2}}"#,
        #"{"kind":"ping","session":"0123456789abcdef","body":{"nonce":01}}"#,                    // leading zero
        #"{"kind":"ping","session":"0123456789abcdef","body":{"nonce":-1}}"#,
        #"{"kind":"ping","session":"0123456789abcdef","body":{"nonce":18446744073709551616}}"#,  // too large
        #"{"kind":"p\u0069ng","session":"0123456789abcdef","body":{"nonce":1}}"#,                // escape
        #"{"kind":"ping","session":"0123456789ABCDEF","body":{"nonce":1}}"#,                     // bad session
        #"{"kind":"ping","session":"0123456789abcdef"}"#,                                        // no body
        #"{"kind":"ping","session":"0123456789abcdef","body":{"nonce":1}}}"#,                    // trailing
        #"{"kind":"ping","session":"0123456789abcdef","body":{"nonce":1}"#,                      // cut
        #"{"kind":"hello","session":"0123456789abcdef","body":{"nonce":1}}"#,                    // other kinds
        #"{"kind":"demand","session":"0123456789abcdef","body":{"sequence":1}}"#,                // missing fields
        #"{"kind":"demand","session":"0123456789abcdef","body":{"sequence":1,"intervalMilliseconds":4294967296,"epoch":0,"rate":5,"wantsMore":false,"unmetReservations":0,"classes":[],"flows":[]}}"#,
        #"{"kind":"demand","session":"0123456789abcdef","body":{"sequence":1,"intervalMilliseconds":100,"epoch":0,"rate":5,"wantsMore":0,"unmetReservations":0,"classes":[],"flows":[]}}"#,
        #"{"kind":"demand","session":"0123456789abcdef","body":{"sequence":1,"intervalMilliseconds":100,"epoch":0,"rate":5,"wantsMore":false,"unmetReservations":0,"classes":[],"flows":[{"flow":{"proto":"sctp","src":"10.0.0.1","sport":1,"dst":"10.0.0.2","dport":2},"bytes":1,"rate":1,"wantsMore":[]}]}}"#,
        #"{"kind":"demand","session":"0123456789abcdef","body":{"sequence":1,"intervalMilliseconds":100,"epoch":0,"rate":5,"wantsMore":false,"unmetReservations":0,"classes":[],"flows":[{"flow":{"proto":"tcp","src":"10.0.0.300","sport":1,"dst":"10.0.0.2","dport":2},"bytes":1,"rate":1,"wantsMore":[]}]}}"#,
        #"{"kind":"demand","session":"0123456789abcdef","body":{"sequence":1,"intervalMilliseconds":100,"epoch":0,"rate":5,"wantsMore":false,"unmetReservations":0,"classes":[],"flows":[{"flow":{"proto":"tcp","src":"10.0.0.1","sport":70000,"dst":"10.0.0.2","dport":2},"bytes":1,"rate":1,"wantsMore":[]}]}}"#,
        "{\"kind\":\"demand\",\"session\":\"0123456789abcdef\",\"body\":{\"sequence\":1,\"intervalMilliseconds\":100,\"epoch\":0,\"rate\":5,\"wantsMore\":false,\"unmetReservations\":0,\"classes\":[{\"name\":\"t\u{e9}\",\"bytes\":1,\"rate\":1,\"drops\":0,\"backlog\":0,\"wantsMore\":[]}],\"flows\":[]}}",
    ])
    func theRestIsLeftToTheGeneralDecoder(text: String) {
        let frame = Array(text.utf8)
        #expect(!MessageCodec.fastPathTakes(frame))
        #expect(Self.agree(frame))
    }

    /// Values that decode but break a rule are refused the same way on both paths.
    @Test(arguments: [
        (#""intervalMilliseconds":0"#, "demand.intervalMilliseconds"),
        (#""rate":10000000000001"#, "demand.rate"),
        (#""classes":[{"name":"","bytes":1,"rate":1,"drops":0,"backlog":0,"wantsMore":[]}]"#, "demand.classes.name"),
        (#""classes":[{"name":"a","bytes":1,"rate":1,"drops":0,"backlog":0,"wantsMore":[""]}]"#, "demand.classes.wantsMore"),
        (#""flows":[{"flow":{"proto":"tcp","src":"10.0.0.1","sport":1,"dst":"fd00::1","dport":2},"bytes":1,"rate":1,"wantsMore":[]}]"#, "flow"),
    ])
    func brokenRulesAreRefusedAlike(replacement: String, field: String) {
        // The sample body with one field replaced (the key before the colon).
        let key = String(replacement.prefix { $0 != ":" })
        var fields = Self.body.components(separatedBy: ",\"").map { $0.hasPrefix("\"") ? $0 : "\"" + $0 }
        // (Arrays in the sample are empty, so splitting at `,"` splits fields.)
        fields = fields.map { $0.hasPrefix(key + ":") ? replacement : $0 }
        let text = #"{"body":{"# + fields.joined(separator: ",") + #"},"kind":"demand","session":"\#(Self.s)"}"#
        let frame = Array(text.utf8)
        #expect(MessageCodec.fastPathTakes(frame))
        #expect(Self.agree(frame))
        guard case .invalid(.invalidValue(let e)) = MessageCodec.decodeGuest(frame) else { Issue.record("expected a broken rule: \(text)"); return }
        #expect(e.field.hasPrefix(field))
    }
}

extension FastPathAgreement {
    /// A small generator with a fixed seed, so that a failure repeats.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9e37_79b9_7f4a_7c15
            var z = state
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce5_e4b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return z ^ (z >> 31)
        }
    }

    /// Agent frames with a few bytes changed, dropped or added (from JSON's own alphabet, so
    /// that many stay close to valid): both paths decide alike on every one.
    @Test func mutatedFramesAreDecidedAlike() {
        var rng = SplitMix(state: 0x7a4d_e5)
        let alphabet = Array(#"{}[],:"0123456789-.eE+ truefalsnl\abcdefkindsessionbodynoncerateflows"#.utf8)
        let seeds = Samples.guest.compactMap { m -> [UInt8]? in
            switch m { case .demand, .ping, .pong: return Array(MessageCodec.encode(m, session: Samples.session).dropLast()); default: return nil }
        }
        var taken = 0
        for _ in 0..<20_000 {
            var f = seeds.randomElement(using: &rng)!
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let at = Int.random(in: 0..<f.count, using: &rng)
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: f[at] = alphabet.randomElement(using: &rng)!
                case 1: f.remove(at: at)
                default: f.insert(alphabet.randomElement(using: &rng)!, at: at)
                }
                if f.isEmpty { f = [UInt8(ascii: "{")] }
            }
            if MessageCodec.fastPathTakes(f) { taken += 1 }
            let fast = MessageCodec.decodeGuest(f), general = MessageCodec.decodeGuest(f, fastPath: false)
            if fast != general {
                Issue.record("paths disagree on \(String(decoding: f, as: UTF8.self)): fast \(fast), general \(general)")
                return
            }
        }
        // Enough of the mutants still go the fast way for the comparison to mean something.
        #expect(taken > 500)
    }
}

extension FastPathAgreement {
    @Test func kindIsReadFromTheTailOfAgentFrames() {
        for m in Samples.guest {
            let frame = Array(MessageCodec.encode(m, session: Samples.session).dropLast())
            let kind = frame.withUnsafeBufferPointer { FastGuestDecoder.kindFromTail($0) }
            switch m {
            case .demand: #expect(kind == "demand")
            case .ping: #expect(kind == "ping")
            case .pong: #expect(kind == "pong")
            default: #expect(kind == nil)
            }
        }
    }
}
