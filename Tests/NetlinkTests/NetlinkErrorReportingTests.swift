import Testing
import Glibc
import Netlink
import TandemProtocol
import TandemTestSupport
import TandemLabSupport

@Suite(.serialized, Privileged.enabled, .exclusive)
struct NetlinkErrorReportingTests {
    @Test func kernelExtendedAckMessageIsCarried() async throws {
        let ns = try Netns(prefix: "tdm-ack")
        defer { ns.delete() }
        try ns.ip("link add va type veth peer name vb")
        let nl = try RouteSocket(namespace: ns.name)
        let va = try await nl.index(of: "va")
        // No qdisc 7: here; the kernel says so in its extended ack.
        let f = U32Filter(parent: TCHandle("7:")!, priority: 1, family: .ipv4, target: .classify(TCHandle("7:1")!))
        let e = await #expect(throws: NetlinkError.self) { try await nl.addU32Filter(ifindex: va, f) }
        #expect(e?.operation == "RTM_NEWTFILTER")
        #expect(e?.kernelMessage?.isEmpty == false, "the kernel's message: \(e?.description ?? "")")
        let tcSays = try Shell.run(["tc", "-n", ns.name, "filter", "add", "dev", "va", "parent", "7:", "prio", "1", "protocol", "ip", "u32", "match", "u32", "0", "0", "flowid", "7:1"]).stderr
        #expect(tcSays.contains(e?.kernelMessage ?? "<none>"), "tc prints the same message: \(tcSays)")
    }

    @Test func udpSocketsAreListed() async throws {
        let ns = try Netns(prefix: "tdm-udp")
        defer { ns.delete() }
        let diag = try SocketDiagnostics(namespace: ns.name)
        let udp = try BackgroundProcess(["ip", "netns", "exec", ns.name, "python3", "-c", "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('127.0.0.1', 5998)); time.sleep(5)"])
        defer { udp.stop() }
        var sawUDP = false
        for _ in 0..<60 where !sawUDP {
            sawUDP = try await diag.sockets(.udp).sockets.contains { $0.flow.sourcePort == 5998 && $0.flow.proto == .udp && $0.tcp == nil }
            if !sawUDP { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect(sawUDP)
    }
}
