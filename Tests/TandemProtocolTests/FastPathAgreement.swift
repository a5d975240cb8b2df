import Testing
import TandemTestSupport
@testable import TandemProtocol

/// The host's fast path for demand reports and pings (``FastGuestDecoder``): it takes what
/// agents write, and wherever it takes a frame it decides exactly as the general decoder.
@Suite struct FastPathAgreement {
    /// The fast path decides as the general decoder, with a report's detail and without it
    /// (the host's decode: the classes and flows checked, then left out).
    static func agree(_ frame: [UInt8]) -> Bool {
        MessageCodec.decodeGuest(frame) == MessageCodec.decodeGuest(frame, fastPath: false)
            && MessageCodec.decodeGuest(frame, detail: false) == MessageCodec.decodeGuest(frame, fastPath: false, detail: false)
    }

    /// Without detail a report comes back as it was sent, less its classes and flows; one that
    /// breaks a rule in a class or a flow is refused with the error the full decode gives: the
    /// report's own fields first, then the classes' (wherever the flows stand in the frame),
    /// then the flows'.
    @Test func withoutDetailTheListsAreCheckedAndLeftOut() {
        let flows = (0..<32).map { FlowDemand(flow: Samples.flow, bytes: UInt64($0), rate: .mbit(1), wantsMore: [.notAppLimited]) }
        let classes = ["total", "tcp", "udp", "other"].map { ClassDemand(name: $0, bytes: 1, rate: .mbit(40), drops: 2, backlog: 3, wantsMore: [.drops]) }
        let r = DemandReport(sequence: 9, intervalMilliseconds: 100, epoch: 4, rate: .mbit(95), wantsMore: true, unmetReservations: .mbit(2), classes: classes, flows: flows)
        let frame = Array(MessageCodec.encode(.demand(r), session: Samples.session).dropLast())
        var bare = r
        bare.classes = []; bare.flows = []
        #expect(MessageCodec.decodeGuest(frame, detail: false) == .message(.demand(bare), session: Samples.session, unknownFields: []))
        #expect(Self.agree(frame))

        func refusal(_ text: String) -> ValidationError? {
            let f = Array(text.utf8)
            #expect(MessageCodec.fastPathTakes(f), "\(text)")
            #expect(Self.agree(f), "\(text)")
            guard case .invalid(.invalidValue(let full)) = MessageCodec.decodeGuest(f, fastPath: false),
                  case .invalid(.invalidValue(let lean)) = MessageCodec.decodeGuest(f, detail: false) else { Issue.record("not refused: \(text)"); return nil }
            #expect(full == lean)
            return lean
        }
        let badClass = #"{"name":"","bytes":1,"rate":1,"drops":0,"backlog":0,"wantsMore":[]}"#
        let badFlow = #"{"flow":{"proto":"tcp","src":"10.0.0.1","sport":1,"dst":"::1","dport":2},"bytes":1,"rate":1,"wantsMore":[]}"#
        let head = { (interval: Int, classes: String, flows: String) in
            #"{"body":{"flows":["# + flows + #"],"sequence":1,"intervalMilliseconds":"# + "\(interval)" + #","epoch":0,"rate":5,"wantsMore":false,"unmetReservations":0,"classes":["# + classes + #"]},"kind":"demand","session":"0123456789abcdef"}"#
        }
        #expect(refusal(head(100, badClass, badFlow))?.field == "demand.classes.name", "a class's rule before a flow's, though the flows come first")
        #expect(refusal(head(100, "", badFlow))?.field == "flow")
        #expect(refusal(head(0, badClass, badFlow))?.field == "demand.intervalMilliseconds", "the report's own fields first")
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

/// The host's hand-written frames (pings, pongs, allocations without reservations): byte
/// for byte what the JSON encoder writes, for edge values and random ones; anything else is
/// left to the encoder.
@Suite struct FastHostEncoding {
    static func same(_ m: HostMessage, _ session: SessionID?) -> Bool {
        MessageCodec.encode(m, session: session, fastPath: true) == MessageCodec.encode(m, session: session, fastPath: false)
    }

    @Test func frequentFramesAreWrittenAsTheEncoderWritesThem() {
        var rng = SystemRandomNumberGenerator()
        let edges: [UInt64] = [0, 1, 9, 10, 999_999, .max - 1, .max]
        var values = edges
        for _ in 0..<200 { values.append(UInt64.random(in: 0 ... .max, using: &rng) >> UInt64.random(in: 0...63, using: &rng)) }
        for (i, v) in values.enumerated() {
            let w = values[(i * 7 + 3) % values.count], x = values[(i * 13 + 5) % values.count]
            for session in [nil, Samples.session, SessionID(0), SessionID(.max)] {
                for m: HostMessage in [.ping(Ping(nonce: v)), .pong(Ping(nonce: v)),
                                       .allocation(Allocation(epoch: v, hardLimit: BitRate(bitsPerSecond: w), softLimit: BitRate(bitsPerSecond: x)))] {
                    #expect(MessageCodec.fastFrame(m, session) != nil)
                    #expect(Self.same(m, session), "\(m) \(String(describing: session))")
                }
            }
        }
    }

    @Test func otherFramesAreLeftToTheEncoder() {
        let granted = GrantedReservation(id: "r1", rate: .mbit(5), selector: Samples.selector)
        #expect(MessageCodec.fastFrame(.allocation(Allocation(epoch: 1, hardLimit: .mbit(10), softLimit: .mbit(9), reservations: [granted])), Samples.session) == nil)
        for m in Samples.host {
            switch m {
            case .ping, .pong: #expect(MessageCodec.fastFrame(m, Samples.session) != nil)
            default: #expect(MessageCodec.fastFrame(m, Samples.session) == nil, "\(m)")
            }
            #expect(Self.same(m, Samples.session))
        }
    }
}

/// The agent's hand-written frames (demand reports, pings, pongs): byte for byte what the
/// JSON encoder writes, for edge and random reports; a report with a name the writer would
/// have to escape is left to the encoder.
@Suite struct FastGuestEncoding {
    static func same(_ m: GuestMessage, _ session: SessionID) -> Bool {
        MessageCodec.encode(m, session: session, fastPath: true) == MessageCodec.encode(m, session: session, fastPath: false)
    }

    static func report(_ rng: inout some RandomNumberGenerator, names: [String] = ["tcp", "udp", "other", "rsv-r_1", "a/b"]) -> DemandReport {
        func n() -> UInt64 { UInt64.random(in: 0 ... .max, using: &rng) >> UInt64.random(in: 0...63, using: &rng) }
        let reasons: [WantReason] = [.drops, .backlog, .notAppLimited, .unmetReservation, WantReason(rawValue: "newer-reason")]
        func want() -> [WantReason] { (0..<Int.random(in: 0...3, using: &rng)).map { _ in reasons.randomElement(using: &rng)! } }
        let addresses = ["10.0.0.2", "192.168.255.254", "0.0.0.0", "fd00::2", "2001:db8::1:0:0:1", "::1", "::ffff:10.1.2.3"].compactMap(IPAddress.init)
        let classes = (0..<Int.random(in: 0...6, using: &rng)).map { _ in
            ClassDemand(name: names.randomElement(using: &rng)!, bytes: n(), rate: BitRate(bitsPerSecond: n()), drops: n(), backlog: n(), wantsMore: want())
        }
        let flows = (0..<Int.random(in: 0...4, using: &rng)).map { _ in
            FlowDemand(flow: FlowKey(proto: FlowProtocol.allCases.randomElement(using: &rng)!, source: addresses.randomElement(using: &rng)!, sourcePort: .random(in: 0 ... .max, using: &rng),
                                     destination: addresses.randomElement(using: &rng)!, destinationPort: .random(in: 0 ... .max, using: &rng)),
                       bytes: n(), rate: BitRate(bitsPerSecond: n()), wantsMore: want())
        }
        return DemandReport(sequence: n(), intervalMilliseconds: .random(in: 0 ... .max, using: &rng), epoch: n(), rate: BitRate(bitsPerSecond: n()),
                            wantsMore: .random(using: &rng), unmetReservations: BitRate(bitsPerSecond: n()), classes: classes, flows: flows)
    }

    @Test func reportsAreWrittenAsTheEncoderWritesThem() {
        var rng = SystemRandomNumberGenerator()
        let edges: [UInt64] = [0, 1, 9, 10, 999_999, .max - 1, .max]
        for v in edges {
            let r = DemandReport(sequence: v, intervalMilliseconds: UInt32(truncatingIfNeeded: v), epoch: v, rate: BitRate(bitsPerSecond: v), wantsMore: v % 2 == 0,
                                 unmetReservations: BitRate(bitsPerSecond: v),
                                 classes: [ClassDemand(name: "tcp", bytes: v, rate: BitRate(bitsPerSecond: v), drops: v, backlog: v, wantsMore: [])],
                                 flows: [FlowDemand(flow: Samples.flow6, bytes: v, rate: BitRate(bitsPerSecond: v))])
            for m: GuestMessage in [.demand(r), .ping(Ping(nonce: v)), .pong(Ping(nonce: v))] {
                #expect(MessageCodec.fastFrame(m, Samples.session) != nil)
                #expect(Self.same(m, Samples.session), "\(m)")
            }
        }
        for i in 0..<300 {
            let m = GuestMessage.demand(Self.report(&rng))
            let session = i % 2 == 0 ? Samples.session : SessionID.random()
            #expect(MessageCodec.fastFrame(m, session) != nil)
            #expect(Self.same(m, session), "\(m)")
        }
    }

    @Test func namesThatNeedEscapingAreLeftToTheEncoder() {
        var rng = SystemRandomNumberGenerator()
        for name in ["quo\"te", "back\\slash", "new\nline", "tab\t", "nul\u{0}", "del\u{7f}", "é", "名前"] {
            var r = Self.report(&rng, names: [name])
            r.classes.append(ClassDemand(name: name, bytes: 1, rate: .mbit(1), drops: 0, backlog: 0))
            #expect(MessageCodec.fastFrame(.demand(r), Samples.session) == nil, "\(name)")
            #expect(Self.same(.demand(r), Samples.session))
        }
        let odd = WantReason(rawValue: "x\"y")
        let r = DemandReport(sequence: 1, intervalMilliseconds: 100, epoch: 0, rate: .mbit(1), wantsMore: true,
                             classes: [ClassDemand(name: "tcp", bytes: 1, rate: .mbit(1), drops: 0, backlog: 0, wantsMore: [odd])])
        #expect(MessageCodec.fastFrame(.demand(r), Samples.session) == nil)
        #expect(Self.same(.demand(r), Samples.session))
    }

    @Test func otherFramesAreLeftToTheEncoder() {
        for m in Samples.guest {
            switch m {
            case .demand, .ping, .pong: #expect(MessageCodec.fastFrame(m, Samples.session) != nil)
            default: #expect(MessageCodec.fastFrame(m, Samples.session) == nil, "\(m)")
            }
            #expect(Self.same(m, Samples.session))
        }
    }
}
