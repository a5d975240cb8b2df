import Foundation
import Testing
import TandemProtocol
import TandemTestSupport
@testable import HostController
@testable import HostCore
import TandemLabSupport
import TandemTransport
#if canImport(Glibc)
import Glibc
#endif

/// A guest that attacks its channel: random bytes, cut and oversize frames, absurd values,
/// messages out of order, thousands of reservations, as fast as it can. The real controller
/// must stay up and responsive with bounded memory, and the other VM keep what policy gives it.
@Suite(.serialized, Privileged.enabled, .exclusive)
struct HostileGuestTests {
    /// Serves the hostile VM's channel socket (the controller connects to it, as to QEMU's)
    /// and attacks every connection it gets until `deadline`.
    final class Attacker: @unchecked Sendable {
        let listener: Int32
        let lock = NSLock()
        var connections = 0
        var framesSent = 0

        init(path: String) throws { listener = try UnixSocket.listen(path, mode: 0o600) }

        func run(until deadline: Double) {
            var rng = SystemRandomNumberGenerator()
            let session = SessionID(0xbad)
            func frame(_ m: GuestMessage) -> [UInt8] { MessageCodec.encode(m, session: session) }
            let absurd: [[UInt8]] = [
                frame(.demand(DemandReport(sequence: 1, intervalMilliseconds: 100, epoch: 0, rate: .protocolMaximum, wantsMore: true, unmetReservations: .protocolMaximum))),
                Array(#"{"kind":"demand","session":"0000000000000bad","body":{"sequence":-1,"rate":"NaN"}}"#.utf8) + [10],
                Array(#"{"kind":"reserve","session":"0000000000000bad","body":{"id":"x","rate":99999999999999999999,"selector":{"proto":"tcp"}}}"#.utf8) + [10],
                frame(.reserve(ReserveRequest(id: "huge", rate: .protocolMaximum, selector: FlowSelector(proto: .udp)))),
                frame(.demand(DemandReport(sequence: 2, intervalMilliseconds: 100, epoch: 0, rate: .protocolMaximum, wantsMore: true,
                                           flows: Array(repeating: FlowDemand(flow: FlowKey(proto: .tcp, source: IPAddress("10.0.0.1")!, sourcePort: 1, destination: IPAddress("10.0.0.2")!, destinationPort: 2), bytes: .max, rate: .protocolMaximum, wantsMore: [.notAppLimited]), count: 300)))),
            ]
            while POSIX.now() < deadline {
                let r = POSIX.poll([(listener, Int16(POLLIN))], timeoutMilliseconds: 100)
                guard r[0] != 0, let fd = UnixSocket.accept(listener) else { continue }
                lock.withLock { connections += 1 }
                var i = 0
                attack: while POSIX.now() < deadline {
                    var out: [UInt8]
                    switch i % 7 {
                    case 0: out = (0..<Int.random(in: 1...2000, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                    case 1: out = Array(frame(.ping(Ping(nonce: UInt64(i)))).prefix(Int.random(in: 1...20, using: &rng)))   // cut
                    case 2: out = Array(repeating: UInt8(ascii: "{"), count: 70_000) + [10]                                 // oversize
                    case 3: out = absurd[i / 7 % absurd.count]
                    case 4: out = frame(.reserve(ReserveRequest(id: "r-\(i)", rate: .kbit(1), selector: FlowSelector(proto: .tcp, destinationPort: UInt16(1 + i % 60000)))))
                    case 5: out = frame(.hello(Hello(agentVersion: String(repeating: "v", count: 200), interface: "eth0", mac: "52:54:00:00:00:0b")))
                    default: out = frame(.applied(Applied(epoch: UInt64(i), error: String(repeating: "e", count: 250))))
                    }
                    i += 1
                    var sent = 0
                    while sent < out.count {
                        guard let n = try? POSIX.writeSome(fd, out[sent...]) else { break attack }
                        if n == 0 {
                            if POSIX.now() > deadline { break attack }
                            _ = POSIX.poll([(fd, Int16(POLLOUT))], timeoutMilliseconds: 50)
                            // Closed by the controller (cut off)?
                            let hup = POSIX.poll([(fd, Int16(POLLIN))], timeoutMilliseconds: 0)
                            if hup[0] & (Int16(POLLHUP) | Int16(POLLERR)) != 0 { break attack }
                            if case .end? = try? POSIX.read(fd) { break attack }
                            continue
                        }
                        sent += n
                    }
                    lock.withLock { framesSent += 1 }
                    if case .end? = try? POSIX.read(fd) { break }
                }
                close(fd)
            }
            close(listener)
        }
    }

    /// The victim's agent, honest and minimal: it says hello when the host connects and then
    /// reports every 100 ms that it wants its fair share and more. Without
    /// it the victim would be idle, and an idle VM's limit rightly shrinks when a neighbour
    /// claims its share (the unused capacity is spread as headroom).
    final class HonestGuest: @unchecked Sendable {
        let listener: Int32
        let lock = NSLock()
        var stopped = false
        init(path: String) throws { listener = try UnixSocket.listen(path, mode: 0o600) }
        func stop() { lock.withLock { stopped = true } }

        func run(until deadline: Double) {
            defer { close(listener) }
            let session = SessionID(0x600d)
            var fd: Int32 = -1
            var sequence: UInt64 = 0
            var epoch: UInt64 = 0
            var decoder = FrameDecoder()
            while POSIX.now() < deadline && !lock.withLock({ stopped }) {
                if fd < 0 {
                    _ = POSIX.poll([(listener, Int16(POLLIN))], timeoutMilliseconds: 100)
                    guard let c = UnixSocket.accept(listener) else { continue }
                    fd = c
                    decoder.reset()
                    _ = try? POSIX.writeSome(fd, MessageCodec.encode(.hello(Hello(agentVersion: "honest", interface: "eth0", mac: "52:54:00:00:00:0a")), session: session)[...])
                }
                _ = POSIX.poll([(fd, Int16(POLLIN))], timeoutMilliseconds: 100)
                if case .data(let d)? = try? POSIX.read(fd) { decoder.feed(d) }
                while let e = decoder.next() {
                    guard case .frame(let f) = e, case .message(let m, _, _) = MessageCodec.decodeHost(f) else { continue }
                    if case .allocation(let a) = m { epoch = a.epoch }
                    if case .ping(let p) = m { _ = try? POSIX.writeSome(fd, MessageCodec.encode(.pong(p), session: session)[...]) }
                }
                sequence += 1
                let report = MessageCodec.encode(.demand(DemandReport(sequence: sequence, intervalMilliseconds: 100, epoch: epoch, rate: .mbit(100), wantsMore: true)), session: session)
                if (try? POSIX.writeSome(fd, report[...])) == nil { close(fd); fd = -1 }
            }
            if fd >= 0 { close(fd) }
        }
    }

    static func rssKB(_ pid: Int32) -> Int {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return -1 }
        for line in s.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ").dropFirst().first ?? "") ?? -1
        }
        return -1
    }

    @Test func hostileChannelCannotHurtTheControllerOrTheOtherVM() async throws {
        let ns = try Netns(prefix: "tdm-hostile")
        defer { ns.delete() }
        for (a, b) in [("v1", "v1p"), ("v2", "v2p")] { try ns.ip("link add \(a) type veth peer name \(b)"); try ns.ip("link set \(a) up"); try ns.ip("link set \(b) up") }
        let dir = NSTemporaryDirectory() + "tandem-hostile-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = Int.random(in: 30000..<40000)
        try """
        [controller]
        interval = "100ms"
        admin_socket = "\(dir)/host.sock"
        state_dir = "\(dir)/state"
        metrics = "127.0.0.1:\(port)"
        [[link]]
        name = "wire"
        capacity = "200mbit"
        [[vm]]
        name = "hostile"
        interface = "v1"
        channel = "\(dir)/hostile.sock"
        min = "20mbit"
        [[vm]]
        name = "victim"
        interface = "v2"
        channel = "\(dir)/victim.sock"
        """.write(toFile: dir + "/host.toml", atomically: true, encoding: .utf8)
        let attacker = try Attacker(path: dir + "/hostile.sock")
        let honest = try HonestGuest(path: dir + "/victim.sock")
        let honestUntil = POSIX.now() + 60
        let victimThread = Thread { honest.run(until: honestUntil) }
        victimThread.start()
        defer { honest.stop() }
        let host = try BackgroundProcess(["ip", "netns", "exec", ns.name, Binaries.path("tandem-host"), "run", "--config", dir + "/host.toml"], log: URL(fileURLWithPath: dir + "/host.log"))
        defer { host.stop() }
        for _ in 0..<100 where !FileManager.default.fileExists(atPath: dir + "/host.sock") { usleep(50_000) }
        try await Task.sleep(for: .seconds(1))
        func admin(_ op: String) throws -> (AdminResponse, Double) {
            let t0 = POSIX.now()
            let r = try LineClient(path: dir + "/host.sock", what: "tandem-host").call(AdminRequest(op: op), as: AdminResponse.self, timeout: 5)
            return (r, POSIX.now() - t0)
        }
        // Each VM's fair share: guarantees first, the rest by weight (hostile 20 + 90, victim 90).
        let fair = Allocator.fairShares(capacity: .mbit(200), [Allocator.Input(name: "hostile", weight: 1, guarantee: .mbit(20), demand: .zero),
                                                               Allocator.Input(name: "victim", weight: 1, demand: .zero)])
        let victimFair = fair["victim"]!.bitsPerSecond, hostileFair = fair["hostile"]!.bitsPerSecond
        // The victim's agent is heard and its claim in force before the attack starts.
        for _ in 0..<50 where try admin("fairness").0.fairness![0].vms[1].demand < victimFair { try await Task.sleep(for: .milliseconds(100)) }
        let rssBefore = Self.rssKB(host.pid)
        let victimBefore = try admin("fairness").0.fairness![0].vms[1].allocation

        let seconds = 12.0
        let deadline = POSIX.now() + seconds
        let attack = Thread { attacker.run(until: deadline) }
        attack.start()
        var worst = 0.0, victimMin = UInt64.max, hostileMax: UInt64 = 0
        while POSIX.now() < deadline {
            let (r, dt) = try admin("fairness")
            worst = max(worst, dt)
            victimMin = min(victimMin, r.fairness![0].vms[1].allocation)
            hostileMax = max(hostileMax, r.fairness![0].vms[0].allocation)
            try await Task.sleep(for: .milliseconds(200))
        }
        try await Task.sleep(for: .milliseconds(500))
        let rssAfter = Self.rssKB(host.pid)
        let status = try admin("status").0.status!.vms[0]
        let metrics = try ns.exec(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/\(port); printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"])
        print("hostile guest: \(attacker.framesSent) frames over \(attacker.connections) connections in \(Int(seconds))s; fairness answered in at most \(String(format: "%.0f", worst * 1000)) ms; controller RSS \(rssBefore) -> \(rssAfter) KB; victim allocation \(victimBefore) -> min \(victimMin); hostile max \(hostileMax); violations \(status.violations); disconnects \(status.disconnects); reservations held \(status.reservations)")
        #expect(host.isRunning, "the controller stayed up")
        #expect(worst < 1.0, "fairness answered within 1 s throughout")
        #expect(rssAfter - rssBefore < 30_000, "memory stayed bounded")
        #expect(victimMin >= victimFair * 99 / 100, "the other VM, wanting its fair share (\(victimFair)), kept it")
        #expect(hostileMax <= hostileFair * 101 / 100, "the hostile VM got nothing beyond its fair share (\(hostileFair))")
        #expect(status.disconnects >= 1, "the hostile channel was cut off")
        #expect((status.violations["garbage"] ?? 0) + (status.violations["invalid"] ?? 0) + (status.violations["oversize"] ?? 0) > 0)
        #expect(status.reservations <= Controller.maxReservationsPerVM)
        #expect(metrics.contains("tandem_channel_errors_total"), "errors show in metrics")
    }

    /// A guest that stops reading its port (issue #18): it keeps reporting and churning
    /// reservations within its budget, so the host keeps having frames for it (answers, pings),
    /// which wait in the socket and then the channel's queue (at most 1 MiB, oldest dropped:
    /// ChannelHubTests). The other VM keeps its share, the admin socket answers, and when
    /// the guest reads again it finds every answer, in order, in the same session.
    @Test func aGuestThatStopsReadingHurtsNobodyAndResumes() async throws {
        let ns = try Netns(prefix: "tdm-deaf")
        defer { ns.delete() }
        for (a, b) in [("v1", "v1p"), ("v2", "v2p")] { try ns.ip("link add \(a) type veth peer name \(b)"); try ns.ip("link set \(a) up"); try ns.ip("link set \(b) up") }
        let dir = NSTemporaryDirectory() + "tandem-deaf-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try """
        [controller]
        interval = "100ms"
        admin_socket = "\(dir)/host.sock"
        state_dir = "\(dir)/state"
        metrics = "off"
        [[link]]
        name = "wire"
        capacity = "200mbit"
        [[vm]]
        name = "deaf"
        interface = "v1"
        channel = "\(dir)/deaf.sock"
        min = "20mbit"
        [[vm]]
        name = "victim"
        interface = "v2"
        channel = "\(dir)/victim.sock"
        """.write(toFile: dir + "/host.toml", atomically: true, encoding: .utf8)
        let deafListener = try UnixSocket.listen(dir + "/deaf.sock", mode: 0o600)
        defer { close(deafListener) }
        let honest = try HonestGuest(path: dir + "/victim.sock")
        let victimThread = Thread { honest.run(until: POSIX.now() + 60) }
        victimThread.start()
        defer { honest.stop() }
        let host = try BackgroundProcess(["ip", "netns", "exec", ns.name, Binaries.path("tandem-host"), "run", "--config", dir + "/host.toml"], log: URL(fileURLWithPath: dir + "/host.log"))
        defer { host.stop() }
        func admin(_ op: String) throws -> (AdminResponse, Double) {
            let t0 = POSIX.now()
            let r = try LineClient(path: dir + "/host.sock", what: "tandem-host").call(AdminRequest(op: op), as: AdminResponse.self, timeout: 5)
            return (r, POSIX.now() - t0)
        }
        // The deaf guest: hello, and a first allocation read, as an agent would.
        _ = POSIX.poll([(deafListener, Int16(POLLIN))], timeoutMilliseconds: 10_000)
        let fd = try #require(UnixSocket.accept(deafListener), "the controller did not connect: \((try? String(contentsOfFile: dir + "/host.log", encoding: .utf8)) ?? "")")
        defer { close(fd) }
        let session = SessionID(0xdeaf)
        func send(_ m: GuestMessage) { _ = try? POSIX.writeSome(fd, MessageCodec.encode(m, session: session)[...]) }
        send(.hello(Hello(agentVersion: "deaf", interface: "eth0", mac: "52:54:00:00:00:0d")))
        var decoder = FrameDecoder()
        func read(for seconds: Double) -> [HostMessage] {
            var out: [HostMessage] = []
            let until = POSIX.now() + seconds
            while POSIX.now() < until {
                _ = POSIX.poll([(fd, Int16(POLLIN))], timeoutMilliseconds: 50)
                if case .data(let d)? = try? POSIX.read(fd) { decoder.feed(d) }
                while let e = decoder.next() {
                    if case .frame(let f) = e, case .message(let m, _, _) = MessageCodec.decodeHost(f) { out.append(m) }
                }
            }
            return out
        }
        let first = read(for: 2)
        #expect(first.contains { if case .welcome = $0 { true } else { false } }, "welcomed: \(first.count) messages")
        let fairness = try admin("fairness").0.fairness![0]
        let victimFair = Allocator.fairShares(capacity: .mbit(200), [Allocator.Input(name: "deaf", weight: 1, guarantee: .mbit(20), demand: .zero),
                                                                     Allocator.Input(name: "victim", weight: 1, demand: .zero)])["victim"]!.bitsPerSecond
        #expect(fairness.vms.count == 2)
        let sessionBefore = try admin("status").0.status!.vms[0].session
        let rssBefore = Self.rssKB(host.pid)

        // 10 s without reading: reports every 100 ms, a reserve and a release every 200 ms.
        var worst = 0.0, victimMin = UInt64.max, reserves = 0
        let t0 = POSIX.now()
        var k = 0
        while POSIX.now() - t0 < 10 {
            send(.demand(DemandReport(sequence: UInt64(k + 1), intervalMilliseconds: 100, epoch: 0, rate: .mbit(150), wantsMore: true)))
            if k % 2 == 0 {
                send(.reserve(ReserveRequest(id: "r-\(reserves)", rate: .mbit(1), selector: FlowSelector(proto: .tcp, destinationPort: 5201))))
                send(.release(ReleaseRequest(id: "r-\(reserves)")))
                reserves += 1
            }
            k += 1
            if k % 5 == 0 {
                let (r, dt) = try admin("fairness")
                worst = max(worst, dt)
                victimMin = min(victimMin, r.fairness![0].vms[1].allocation)
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let rssAfter = Self.rssKB(host.pid)
        let status = try admin("status").0.status!.vms[0]
        // Reading again: every answer there, in the order asked, in the same session.
        let later = read(for: 2)
        let answered = later.compactMap { m -> String? in
            if case .reservation(let r) = m { return r.id }
            return nil
        }
        print("deaf guest: \(reserves) reserve/release pairs and \(k) reports in 10 s unread; \(later.count) host messages waiting when it read again (\(answered.count) reservation answers); fairness answered in at most \(String(format: "%.0f", worst * 1000)) ms; victim allocation min \(victimMin) (fair \(victimFair)); controller RSS \(rssBefore) -> \(rssAfter) KB; agent \(status.agent), violations \(status.violations)")
        #expect(host.isRunning)
        #expect(worst < 1.0)
        #expect(victimMin >= victimFair * 99 / 100, "the other VM kept its fair share")
        #expect(rssAfter - rssBefore < 10_000, "memory stayed bounded")
        #expect(status.agent == "connected" && status.session == sessionBefore, "the same session throughout: \(status.agent)")
        #expect(status.disconnects == 0 && status.violations.isEmpty, "nothing held against a guest that only did not read")
        #expect(answered == (0..<reserves).map { "r-\($0)" }, "every answer, in order")
    }
}
