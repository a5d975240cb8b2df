import Testing
@testable import TandemProtocol

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
