import Testing
@testable import TandemProtocol

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
