import Testing
@testable import TandemProtocol

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
