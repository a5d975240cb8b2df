import Foundation
import Testing
import Netlink
import TandemProtocol
import TandemLabSupport
import TandemTestSupport

/// The kernel's link and tc notifications as ``RouteMonitor`` hands them on, from changes made
/// in a namespace of the test's own by `ip`, `tc` and a ``RouteSocket`` whose port it ignores.
@Suite(.serialized, Privileged.enabled)
struct RouteMonitorTests {
    /// The next event that `match` takes, within `timeout` seconds (the monitor is stopped
    /// then, which ends the stream: a missing event fails the test instead of hanging it).
    static func next<T>(_ it: inout AsyncStream<RouteEvent>.Iterator, _ monitor: RouteMonitor, timeout: Double = 3, _ match: (RouteEvent) -> T?) async throws -> T {
        let timer = Task { try await Task.sleep(for: .seconds(timeout)); monitor.stop() }
        defer { timer.cancel() }
        while let e = await it.next() {
            if let t = match(e) { return t }
        }
        throw Shell.Failure("monitor", "no matching event within \(timeout) s")
    }

    @Test func linksAndTCObjectsOfOthersAreSeenAndOurOwnAreNot() async throws {
        let ns = try Netns(prefix: "tdm-mon")
        defer { ns.delete() }
        let nl = try RouteSocket(namespace: ns.name)
        let monitor = try RouteMonitor(namespace: ns.name, ignoring: [nl.localPort])
        monitor.start()
        defer { monitor.stop() }
        var events = monitor.events.makeAsyncIterator()

        try ns.ip("link add m0 type veth peer name m1")
        let m0 = try await nl.index(of: "m0")
        _ = try await Self.next(&events, monitor) { e -> Bool? in
            if case .link(false, m0, "m0", false, _) = e { return true } else { return nil }
        }
        try ns.ip("link set m0 up")
        _ = try await Self.next(&events, monitor) { e -> Bool? in
            if case .link(false, m0, "m0", true, _) = e { return true } else { return nil }
        }

        // Our own socket's change is left out; tc's is seen, with its handle and parent.
        try await nl.replaceHTBRoot(ifindex: m0, handle: TCHandle("1:")!, defaultClass: 0x10, directQueue: 0)
        try ns.tc("qdisc add dev m0 handle ffff: ingress")
        let seen = try await Self.next(&events, monitor) { e -> RouteEvent? in
            if case .tc(.qdisc, _, m0, _, _, _) = e { return e } else { return nil }
        }
        #expect(seen == .tc(.qdisc, deleted: false, ifindex: m0, handle: .ingress, parent: .ingressParent, sender: seen.sender),
                "the first qdisc event on m0 is tc's ingress, not our own root: \(seen)")
        try ns.tc("class add dev m0 parent 1: classid 1:10 htb rate 1mbit")
        try ns.tc("class del dev m0 classid 1:10")
        _ = try await Self.next(&events, monitor) { e -> Bool? in
            if case .tc(.tclass, true, m0, TCHandle("1:10")!, _, _) = e { return true } else { return nil }
        }
        try ns.ip("link del m0")
        _ = try await Self.next(&events, monitor) { e -> Bool? in
            if case .link(true, m0, "m0", _, _) = e { return true } else { return nil }
        }
    }

    /// A TCP transfer in the test's namespace ends: sock_diag announces its sockets' end, with
    /// the client's 5-tuple as the agent's socket samples name it.
    @Test func tcpSocketsThatEndAreAnnounced() async throws {
        let ns = try Netns(prefix: "tdm-sclose")
        defer { ns.delete() }
        try ns.ip("link set lo up")
        let monitor = try SocketCloseMonitor(namespace: ns.name)
        monitor.start()
        defer { monitor.stop() }
        var events = monitor.events.makeAsyncIterator()
        let server = try Iperf.server(in: ns, port: 5399)
        defer { server.stop() }
        _ = try Iperf.client(in: ns, host: "127.0.0.1", port: 5399, seconds: 1)
        let timer = Task { try await Task.sleep(for: .seconds(5)); monitor.stop() }
        defer { timer.cancel() }
        var closed: [FlowKey] = []
        while let e = await events.next() {
            if case .closed(let f) = e { closed.append(f) }
            // iperf3's control and data connections, each seen from both ends.
            if closed.filter({ $0.destinationPort == 5399 }).count >= 2 { break }
        }
        let toServer = closed.filter { $0.destinationPort == 5399 }
        #expect(toServer.count >= 2, "announced: \(closed)")
        #expect(toServer.allSatisfy { $0.proto == .tcp && $0.source == IPAddress("127.0.0.1")! && $0.destination == IPAddress("127.0.0.1")! && $0.sourcePort != 0 })
    }

    /// A monitor out of the groups hears nothing (the kernel does not queue the ends for it,
    /// nor defer the sockets' frees for it); once in them it hears the next transfer's.
    @Test func aMonitorHearsSocketsEndOnlyWhileListening() async throws {
        let ns = try Netns(prefix: "tdm-slisten")
        defer { ns.delete() }
        try ns.ip("link set lo up")
        final class Heard: @unchecked Sendable { let lock = NSLock(); var ports: [UInt16] = [] }
        func collect(_ m: SocketCloseMonitor) -> (Heard, Task<Void, Never>) {
            let h = Heard()
            return (h, Task { for await e in m.events { if case .closed(let f) = e { h.lock.withLock { h.ports.append(f.destinationPort) } } } })
        }
        let quiet = try SocketCloseMonitor(namespace: ns.name, listening: false), always = try SocketCloseMonitor(namespace: ns.name)
        quiet.start(); always.start()
        defer { quiet.stop(); always.stop() }
        let (q, qt) = collect(quiet), (a, at) = collect(always)
        defer { qt.cancel(); at.cancel() }
        let server = try Iperf.server(in: ns, port: 5398)
        defer { server.stop() }
        func transferHeard(by h: Heard) async throws -> Bool {
            _ = try Iperf.client(in: ns, host: "127.0.0.1", port: 5398, seconds: 1)
            for _ in 0..<50 where !h.lock.withLock({ h.ports.contains(5398) }) { try await Task.sleep(for: .milliseconds(100)) }
            return h.lock.withLock { h.ports.contains(5398) }
        }
        #expect(try await transferHeard(by: a), "the listening monitor hears the ends")
        try await Task.sleep(for: .milliseconds(300))
        #expect(q.lock.withLock { q.ports.isEmpty }, "the other heard nothing: \(q.lock.withLock { q.ports })")
        quiet.listen(true)
        #expect(try await transferHeard(by: q), "in the groups, it hears the next transfer's")
    }

    @Test func whatIsNotASocketsEndIsNotParsed() {
        var m = [UInt8](repeating: 0, count: 88)
        m[0] = 88; m[4] = 20; m[16] = UInt8(AF_INET)
        m[20] = 0x14; m[21] = 0x51; m[22] = 0x15; m[23] = 0x1F; m[24] = 10; m[27] = 2; m[40] = 10; m[43] = 5
        let ok = m.withUnsafeBytes { SocketClosed.parse($0) }
        #expect(ok == .closed(FlowKey(proto: .tcp, source: IPAddress("10.0.0.2")!, sourcePort: 0x1451, destination: IPAddress("10.0.0.5")!, destinationPort: 0x151F)))
        var other = m; other[4] = 16
        #expect(other.withUnsafeBytes { SocketClosed.parse($0) } == nil, "another message type")
        #expect(Array(m.prefix(80)).withUnsafeBytes { SocketClosed.parse($0) } == nil, "too short")
        var unix = m; unix[16] = UInt8(AF_UNIX)
        #expect(unix.withUnsafeBytes { SocketClosed.parse($0) } == nil, "not an inet socket")
    }

    @Test func whatIsNotANotificationIsNotParsed() {
        // RTM_NEWLINK, 32 bytes of header and ifinfomsg for index 9 (IFF_UP), then IFLA_IFNAME "vnet3".
        var m: [UInt8] = []
        func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { m += $0 } }
        le(UInt32(44)); le(UInt16(16)); le(UInt16(0)); le(UInt32(0)); le(UInt32(77))
        m += [0, 0, 0, 0]; le(Int32(9)); le(UInt32(1)); le(UInt32(0))
        le(UInt16(10)); le(UInt16(3)); m += Array("vnet3".utf8) + [0, 0, 0]
        #expect(m.withUnsafeBytes { RouteEvent.parse($0) } == .link(deleted: false, index: 9, name: "vnet3", up: true, sender: 77))
        // The same from a bridge about its port (AF_BRIDGE): not the interface's own.
        var bridge = m; bridge[16] = 7
        #expect(bridge.withUnsafeBytes { RouteEvent.parse($0) } == nil)
        // Too short for its body, another message type, a lying attribute length.
        #expect(Array(m.prefix(30)).withUnsafeBytes { RouteEvent.parse($0) } == nil)
        var other = m; other[4] = 24   // RTM_NEWROUTE
        #expect(other.withUnsafeBytes { RouteEvent.parse($0) } == nil)
        var lying = m; lying[32] = 0xff
        #expect(lying.withUnsafeBytes { RouteEvent.parse($0) } == .link(deleted: false, index: 9, name: "", up: true, sender: 77))
    }
}
