import Foundation
import HostController
import TandemProtocol
import HostCore

/// In-process benchmarks: the allocator and the protocol codec.
enum Micro {
    static func time(_ n: Int, _ body: () -> Void) -> Double {
        let t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<n { body() }
        return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9 / Double(n)
    }

    /// One allocation round (fair shares, then the allocation) for N VMs with mixed demands.
    static func allocator() -> [Result] {
        [8, 64, 256].map { n in
            var rng = SystemRandomNumberGenerator()
            var vms: [Allocator.Input] = []
            for i in 0..<n {
                let guarantee: BitRate = i % 5 == 0 ? .mbit(10) : .zero
                let cap: BitRate? = i % 7 == 0 ? .mbit(500) : nil
                let demand = BitRate.mbit(UInt64.random(in: 0...400, using: &rng))
                vms.append(Allocator.Input(name: "vm\(i)", weight: Double(1 + i % 4), guarantee: guarantee, cap: cap, demand: demand))
            }
            let capacity = BitRate.gbit(25)
            var sink = 0
            let per = time(2000) {
                sink &+= Allocator.fairShares(capacity: capacity, vms).count
                sink &+= Allocator.allocate(capacity: capacity, vms).count
            }
            precondition(sink > 0)
            return Result(name: "allocator round, \(n) VMs", value: per * 1e6, unit: "us", target: n == 256 ? 100 : nil, lowerIsBetter: true)
        } + [groupedAllocator()]
    }

    /// The same round for 256 VMs in 16 groups (tenants with weights, mins and some caps;
    /// a VM's min within its group's).
    static func groupedAllocator() -> Result {
        var rng = SystemRandomNumberGenerator()
        var groups: [Allocator.Group] = []
        for g in 0..<16 {
            let cap: BitRate? = g % 4 == 0 ? .gbit(5) : nil
            groups.append(Allocator.Group(name: "tenant\(g)", weight: Double(1 + g % 3), guarantee: .mbit(200), cap: cap))
        }
        var vms: [Allocator.Input] = []
        for i in 0..<256 {
            let guarantee: BitRate = i % 5 == 0 ? .mbit(10) : .zero
            let cap: BitRate? = i % 7 == 0 ? .mbit(500) : nil
            let demand = BitRate.mbit(UInt64.random(in: 0...400, using: &rng))
            vms.append(Allocator.Input(name: "vm\(i)", weight: Double(1 + i % 4), guarantee: guarantee, cap: cap, demand: demand, group: "tenant\(i % 16)"))
        }
        let capacity = BitRate.gbit(25)
        var sink = 0
        let per = time(2000) {
            sink &+= Allocator.fairShares(capacity: capacity, vms, groups: groups).count
            sink &+= Allocator.allocate(capacity: capacity, vms, groups: groups).count
        }
        precondition(sink > 0)
        return Result(name: "allocator round, 256 VMs in 16 groups", value: per * 1e6, unit: "us", target: 100, lowerIsBetter: true)
    }

    static func codec() -> [Result] {
        let session = SessionID(42)
        let flow = FlowKey(proto: .tcp, source: IPAddress("10.0.0.2")!, sourcePort: 40000, destination: IPAddress("10.0.0.5")!, destinationPort: 5201)
        let report = DemandReport(sequence: 1, intervalMilliseconds: 100, epoch: 3, rate: .mbit(95), wantsMore: true,
                                  classes: ["total", "tcp", "udp", "other"].map { ClassDemand(name: $0, bytes: 123_456_789, rate: .mbit(40), drops: 2, backlog: 3000, wantsMore: [.drops]) },
                                  flows: Array(repeating: FlowDemand(flow: flow, bytes: 99_999, rate: .mbit(40), wantsMore: [.notAppLimited]), count: 32))
        let frame = MessageCodec.encode(.demand(report), session: session)
        let ping = MessageCodec.encode(.ping(Ping(nonce: 7)), session: session)
        var ok = 0
        let enc = time(2000) { ok &+= MessageCodec.encode(.demand(report), session: session).count }
        // Side by side: the JSON encoder the hand-written frames stand in for.
        let encGeneral = time(2000) { ok &+= MessageCodec.encode(.demand(report), session: session, fastPath: false).count }
        let dec = time(2000) { if case .message = MessageCodec.decodeGuest(Array(frame.dropLast())) { ok &+= 1 } }
        let pingDec = time(20000) { if case .message = MessageCodec.decodeGuest(Array(ping.dropLast())) { ok &+= 1 } }
        // The host's decode: classes and flows checked, not kept; and the report busy agents
        // send nine times in ten (four classes, no flows: sockets are sampled once a second).
        let decLean = time(2000) { if case .message = MessageCodec.decodeGuest(Array(frame.dropLast()), detail: false) { ok &+= 1 } }
        var plain = report
        plain.flows = []
        let plainFrame = MessageCodec.encode(.demand(plain), session: session)
        let decPlain = time(20000) { if case .message = MessageCodec.decodeGuest(Array(plainFrame.dropLast())) { ok &+= 1 } }
        let encPlain = time(20000) { ok &+= MessageCodec.encode(.demand(plain), session: session).count }
        let encPlainGeneral = time(2000) { ok &+= MessageCodec.encode(.demand(plain), session: session, fastPath: false).count }
        let decPlainLean = time(20000) { if case .message = MessageCodec.decodeGuest(Array(plainFrame.dropLast()), detail: false) { ok &+= 1 } }
        // Side by side: the general decoder (JSONDecoder), which the fast path stands in for.
        let decGeneral = time(2000) { if case .message = MessageCodec.decodeGuest(Array(frame.dropLast()), fastPath: false) { ok &+= 1 } }
        let pingGeneral = time(20000) { if case .message = MessageCodec.decodeGuest(Array(ping.dropLast()), fastPath: false) { ok &+= 1 } }
        var d = FrameDecoder()
        let stream = Array(repeating: frame, count: 100).flatMap { $0 }
        let framing = time(50) { d.feed(stream); while let _ = d.next() { ok &+= 1 } }
        precondition(ok > 0)
        return [
            Result(name: "encode demand report (32 flows, \(frame.count) B)", value: 1 / enc, unit: "msg/s", target: nil, lowerIsBetter: false),
            Result(name: "encode demand report (32 flows), JSON encoder", value: 1 / encGeneral, unit: "msg/s", target: nil, lowerIsBetter: false),
            Result(name: "encode demand report (4 classes, no flows)", value: 1 / encPlain, unit: "msg/s", target: nil, lowerIsBetter: false),
            Result(name: "encode demand report (4 classes, no flows), JSON encoder", value: 1 / encPlainGeneral, unit: "msg/s", target: nil, lowerIsBetter: false),
            Result(name: "demand report encode, hand-written over JSON encoder (32 flows)", value: encGeneral / enc, unit: "x", target: nil, lowerIsBetter: false),
            Result(name: "decode+validate demand report (32 flows)", value: 1 / dec, unit: "msg/s", target: nil, lowerIsBetter: false),
            Result(name: "decode+validate demand report (32 flows), without detail (host)", value: 1 / decLean, unit: "msg/s", target: nil, lowerIsBetter: false),
            Result(name: "decode+validate demand report (4 classes, no flows)", value: 1 / decPlain, unit: "msg/s", target: nil, lowerIsBetter: false),
            Result(name: "decode+validate demand report (4 classes, no flows), without detail (host)", value: 1 / decPlainLean, unit: "msg/s", target: nil, lowerIsBetter: false),
            Result(name: "decode+validate ping", value: 1 / pingDec, unit: "msg/s", target: nil, lowerIsBetter: false),
            Result(name: "decode+validate demand report (32 flows), general decoder", value: 1 / decGeneral, unit: "msg/s", target: nil, lowerIsBetter: false),
            Result(name: "decode+validate ping, general decoder", value: 1 / pingGeneral, unit: "msg/s", target: nil, lowerIsBetter: false),
            Result(name: "demand report decode, fast path over general", value: decGeneral / dec, unit: "x", target: nil, lowerIsBetter: false),
            Result(name: "frame splitting", value: Double(stream.count) / framing / 1e6, unit: "MB/s", target: nil, lowerIsBetter: false),
        ]
    }
}

/// One figure: its value, unit, the target if the issue names one, and which way is better.
struct Result: Codable {
    var name: String
    var value: Double
    var unit: String
    var target: Double?
    var lowerIsBetter: Bool
}
