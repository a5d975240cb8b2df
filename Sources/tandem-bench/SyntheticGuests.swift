import Foundation
import TandemProtocol
import TandemTransport
#if canImport(Glibc)
import Glibc
#endif

/// FAKE GUESTS for the overhead benchmark: busy agents as the host sees them, without the
/// traffic that would make them busy (64 VMs sending at once would load this 2-core machine
/// and measure the load, not the controller). Each serves a VM's channel socket as QEMU does,
/// says hello, answers pings, follows the allocation epoch, and sends a demand report every
/// 100 ms whose rate changes by more than the agent's 10% each time (so the agent's pacing
/// would send every one: the worst case), naming 32 flows once a second, as the agent does
/// when it samples its sockets. One thread serves them all.
final class SyntheticGuests: @unchecked Sendable {
    private let listeners: [Int32]
    private let lock = NSLock()
    private var stopped = false
    private(set) var reportsSent = 0

    init(paths: [String]) throws { listeners = try paths.map { try UnixSocket.listen($0, mode: 0o600) } }

    func start() {
        let t = Thread { [self] in run() }
        t.name = "synthetic-guests"
        t.start()
    }

    func stop() { lock.lock(); stopped = true; lock.unlock() }

    private struct Guest {
        var fd: Int32 = -1
        var decoder = FrameDecoder()
        var epoch: UInt64 = 0
        var sequence: UInt64 = 0
        let session = SessionID.random()
    }

    private func run() {
        var guests = Array(repeating: Guest(), count: listeners.count)
        defer { for g in guests where g.fd >= 0 { close(g.fd) }; for l in listeners { close(l) } }
        let flow = FlowKey(proto: .tcp, source: IPAddress("10.0.0.2")!, sourcePort: 40000, destination: IPAddress("10.0.0.5")!, destinationPort: 5201)
        var next = POSIX.now()
        var rng = SystemRandomNumberGenerator()
        func send(_ g: inout Guest, _ m: GuestMessage) {
            if (try? POSIX.writeSome(g.fd, MessageCodec.encode(m, session: g.session)[...])) == nil { close(g.fd); g.fd = -1 }
        }
        while !lock.withLock({ stopped }) {
            var fds: [(Int32, Int16)] = listeners.map { ($0, Int16(POLLIN)) }
            fds += guests.map { ($0.fd, Int16(POLLIN)) }
            let ready = POSIX.poll(fds, timeoutMilliseconds: Int32(max(1, (next - POSIX.now()) * 1000)))
            for i in guests.indices {
                if ready[i] != 0, guests[i].fd < 0, let fd = UnixSocket.accept(listeners[i]) {
                    guests[i] = Guest()
                    guests[i].fd = fd
                    send(&guests[i], .hello(Hello(agentVersion: "synthetic", interface: "eth0", mac: "52:54:00:00:00:01")))
                }
                guard guests[i].fd >= 0, ready[listeners.count + i] != 0 else { continue }
                guard case .data(let d)? = try? POSIX.read(guests[i].fd) else { close(guests[i].fd); guests[i].fd = -1; continue }
                guests[i].decoder.feed(d)
                while let e = guests[i].decoder.next() {
                    guard case .frame(let f) = e, case .message(let m, _, _) = MessageCodec.decodeHost(f) else { continue }
                    switch m {
                    case .allocation(let a): guests[i].epoch = a.epoch
                    case .ping(let p): send(&guests[i], .pong(p))
                    default: break
                    }
                }
            }
            guard POSIX.now() >= next else { continue }
            next += 0.1
            for i in guests.indices where guests[i].fd >= 0 {
                guests[i].sequence += 1
                let rate = BitRate.mbit(UInt64.random(in: 50...150, using: &rng))
                let classes = ["tcp", "udp", "other"].map { ClassDemand(name: $0, bytes: guests[i].sequence * 1_000_000, rate: rate, drops: 0, backlog: 1500, wantsMore: [.backlog]) }
                let flows = guests[i].sequence % 10 != 1 ? [] : (0..<32).map { k in FlowDemand(flow: FlowKey(proto: .tcp, source: flow.source, sourcePort: flow.sourcePort + UInt16(k), destination: flow.destination, destinationPort: 5201),
                                                          bytes: guests[i].sequence * 100_000, rate: rate, wantsMore: [.notAppLimited]) }
                send(&guests[i], .demand(DemandReport(sequence: guests[i].sequence, intervalMilliseconds: 100, epoch: guests[i].epoch, rate: rate,
                                                      wantsMore: true, classes: classes, flows: flows)))
                lock.withLock { reportsSent += 1 }
            }
        }
    }
}

fileprivate extension NSLock {
    func withLock<T>(_ body: () throws -> T) rethrows -> T { lock(); defer { unlock() }; return try body() }
}
