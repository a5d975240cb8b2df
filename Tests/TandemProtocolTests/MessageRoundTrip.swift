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
