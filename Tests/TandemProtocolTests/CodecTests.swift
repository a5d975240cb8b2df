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
