import Testing
import Glibc
import Netlink
import TandemProtocol
import TandemTestSupport
import TandemLabSupport

/// Real traffic through real kernel shaping: iperf3 across a veth pair between two
/// namespaces. One traffic test at a time (TrafficGate), with relative checks and margins.
@Suite(.serialized, Privileged.traffic, .exclusive)
struct ShapingTrafficTests {
    @Test func htbClassShapesTCPToItsRate() async throws {
        try await TrafficGate.shared.run {
            let pair = try VethPair()
            defer { pair.close() }
            let server = try Iperf.server(in: pair.b, port: 5201)
            defer { server.stop() }
            let unshaped = try Iperf.client(in: pair.a, host: "10.99.0.2", port: 5201, seconds: 2)

            let nl = try RouteSocket(namespace: pair.a.name)
            let t0 = try await nl.index(of: "t0")
            try await nl.replaceHTBRoot(ifindex: t0, handle: TCHandle("1:")!, defaultClass: 0x10)
            try await nl.setHTBClass(ifindex: t0, HTBClass(handle: TCHandle("1:10")!, parent: TCHandle("1:")!, rate: .mbit(50)))
            let shaped = try Iperf.client(in: pair.a, host: "10.99.0.2", port: 5201, seconds: 4)

            // Receiver goodput is about 95% of the class rate (headers); within 10% of that.
            let expected = 50e6 * 0.95
            print("shaping: unshaped \(Int(unshaped.receivedBitsPerSecond / 1e6)) Mbit/s, 50mbit class \(String(format: "%.1f", shaped.receivedBitsPerSecond / 1e6)) Mbit/s (expected ~\(expected / 1e6))")
            #expect(abs(shaped.receivedBitsPerSecond - expected) <= expected * 0.10)
            #expect(unshaped.receivedBitsPerSecond > 3 * shaped.receivedBitsPerSecond, "unshaped is clearly faster")

            // The class saw the bytes, and nothing went around it.
            let cls = try #require(try await nl.classes(ifindex: t0).first { $0.spec.handle == TCHandle("1:10")! })
            #expect(cls.stats.bytes > UInt64(shaped.receivedBitsPerSecond / 8 * 3))
            // The counters read in place (what the agent reads) are libnl's, class by class.
            let decoded = try await nl.classes(ifindex: t0).map { ClassCounters(handle: $0.spec.handle, bytes: $0.stats.bytes, drops: $0.stats.drops, backlog: $0.stats.backlog) }
            let raw = try await nl.classCounters(ifindex: t0)
            #expect(raw == decoded && !raw.isEmpty && raw.contains { $0.bytes > 0 })
        }
    }

    @Test func socketDiagnosticsSeeTheTCPFlow() async throws {
        try await TrafficGate.shared.run {
            let pair = try VethPair()
            defer { pair.close() }
            let server = try Iperf.server(in: pair.b, port: 5202)
            defer { server.stop() }
            // A flow that lives long enough to be seen: iperf3 for 3 s in the background.
            let client = try BackgroundProcess(["ip", "netns", "exec", pair.a.name, "iperf3", "-c", "10.99.0.2", "-p", "5202", "-t", "3"])
            defer { client.stop() }
            let diag = try SocketDiagnostics(namespace: pair.a.name)
            var data: SocketInfo? = nil
            for _ in 0..<40 {
                try await Task.sleep(for: .milliseconds(100))
                let (socks, total) = try await diag.sockets(.tcp)
                #expect(total >= socks.count)
                // iperf3 opens a control connection and a data connection; the data one has sent the most.
                data = socks.filter { $0.flow.destinationPort == 5202 }.max { ($0.tcp?.bytesSent ?? 0) < ($1.tcp?.bytesSent ?? 0) }
                if let d = data, (d.tcp?.bytesAcked ?? 0) > 1_000_000 { break }
            }
            let d = try #require(data)
            #expect(d.flow.proto == .tcp)
            #expect(d.flow.source == IPAddress("10.99.0.1"))
            #expect(d.flow.destination == IPAddress("10.99.0.2"))
            #expect(d.state == 1)
            let tcp = try #require(d.tcp)
            #expect(tcp.bytesAcked > 1_000_000)
            // bytes_acked counts the FIN's sequence number too (one more than the bytes sent once
            // the FIN is acked before the sample: seen 314048549 sent, 314048550 acked).
            #expect(tcp.bytesSent + 1 >= tcp.bytesAcked)
            #expect(tcp.deliveryRate > .mbit(1))
            #expect(tcp.rttMicroseconds > 0)
            // The same socket as ss sees it.
            let ss = try pair.a.exec(["ss", "-tnH", "dst", "10.99.0.2:5202"])
            #expect(ss.contains("10.99.0.1:\(d.flow.sourcePort)"))
        }
    }
}
