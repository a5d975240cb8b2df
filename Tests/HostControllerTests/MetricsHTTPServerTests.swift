import Foundation
import Prometheus
import Testing
import TandemTestSupport
@testable import HostController
import HostCore
#if canImport(Glibc)
import Glibc
#endif

/// The metrics listener over real TCP on loopback.
@Suite(.serialized, .exclusive) struct MetricsHTTPServerTests {
    /// A TCP client on loopback (blocking, with a receive timeout).
    final class Client: @unchecked Sendable {
        let fd: Int32
        init(host: String = "127.0.0.1", port: UInt16) throws {
            let v6 = host.contains(":")
            fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var tv = timeval(tv_sec: 8, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
            let rc: Int32
            if v6 {
                var a = sockaddr_in6()
                a.sin6_family = sa_family_t(AF_INET6)
                a.sin6_port = port.bigEndian
                inet_pton(AF_INET6, host, &a.sin6_addr)
                rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
            } else {
                var a = sockaddr_in()
                a.sin_family = sa_family_t(AF_INET)
                a.sin_port = port.bigEndian
                a.sin_addr.s_addr = inet_addr(host)
                rc = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            }
            guard rc == 0 else { close(fd); throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        }
        deinit { close(fd) }
        func send(_ s: String) { _ = s.withCString { Glibc.send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) } }
        /// Everything until the server closes (or the timeout).
        func readAll() -> String {
            var out: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = recv(fd, &buf, buf.count, 0)
                if n <= 0 { break }
                out += buf[..<n]
            }
            return String(decoding: out, as: UTF8.self)
        }
    }

    func server(host: String = "127.0.0.1", history: FairnessHistory? = nil) throws -> (MetricsHTTPServer, UInt16) {
        let registry = PrometheusCollectorRegistry()
        registry.makeGauge(name: "tandem_test_gauge", labels: []).set(Double(42))
        for _ in 0..<20 {
            let port = UInt16.random(in: 30000..<40000)
            if let s = try? MetricsHTTPServer(host: host, port: port, registry: registry, history: history) { return (s, port) }
        }
        throw POSIXError(.EADDRINUSE)
    }

    /// The controller's series are brought up to date when read: the server asks for that
    /// before it answers a scrape (and only then).
    @Test func aScrapeRefreshesTheControllersSeriesFirst() async throws {
        let registry = PrometheusCollectorRegistry()
        let m = ControllerMetrics(registry: registry)
        m.publish(ControllerMetricsTests.table(["a"]), vms: ["a": try ControllerMetricsTests.vm("a", transmitted: 77)], limitWrites: [:], backendErrors: [:])
        var found: (MetricsHTTPServer, UInt16)?
        for _ in 0..<20 {
            let port = UInt16.random(in: 30000..<40000)
            if let s = try? MetricsHTTPServer(host: "127.0.0.1", port: port, registry: registry, beforeScrape: { m.refresh() }) { found = (s, port); break }
        }
        let (server, port) = try #require(found)
        defer { server.stop() }
        let page = try await offPool { () -> String in
            let c = try Client(port: port)
            c.send("GET /api/v1/fairness HTTP/1.0\r\n\r\n")
            return c.readAll()
        }
        #expect(!page.isEmpty)
        #expect(!registry.emitToString().contains("vm=\"a\""), "not refreshed by another page")
        let text = try await offPool { () -> String in
            let c = try Client(port: port)
            c.send("GET /metrics HTTP/1.0\r\n\r\n")
            return c.readAll()
        }
        #expect(ControllerMetricsTests.value(text, "tandem_vm_transmitted_bytes_total{link=\"up\",vm=\"a\"}") == 77, "\(text.prefix(400))")
    }

    @Test func aClientTricklingItsRequestHoldsNobodyUpAndIsClosed() async throws {
        let (server, port) = try server()
        defer { server.stop() }
        let slow = try Client(port: port)
        slow.send("GET /me")   // and nothing more
        let t0 = Date()
        let fast = try await offPool { () -> String in
            let c = try Client(port: port)
            c.send("GET /metrics HTTP/1.0\r\n\r\n")
            return c.readAll()
        }
        #expect(fast.hasPrefix("HTTP/1.0 200 OK"), "\(fast.prefix(200))")
        #expect(fast.contains("tandem_test_gauge 42"))
        #expect(Date().timeIntervalSince(t0) < 1, "answered while the slow client waits")
        // The slow one is closed within its 5 s, without an answer.
        let rest = try await offPool { slow.readAll() }
        let took = Date().timeIntervalSince(t0)
        #expect(rest.isEmpty && took > 4 && took < 7.5, "closed after \(took) s: \(rest.prefix(100))")
    }

    @Test func keepAliveServesSeveralScrapesAndOtherPathsAre404() async throws {
        let (server, port) = try server()
        defer { server.stop() }
        let text = try await offPool { () -> String in
            let c = try Client(port: port)
            c.send("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return c.readAll()
        }
        #expect(text.components(separatedBy: "HTTP/1.1 200 OK").count == 2, "\(text.prefix(300))")
        #expect(text.contains("HTTP/1.1 404 Not Found"))
    }

    @Test func listensOnIPv6Loopback() async throws {
        let (server, port) = try server(host: "::1")
        defer { server.stop() }
        let text = try await offPool { () -> String in
            let c = try Client(host: "::1", port: port)
            c.send("GET /metrics HTTP/1.0\r\n\r\n")
            return c.readAll()
        }
        #expect(text.contains("tandem_test_gauge 42"))
    }

    /// `localhost` is both loopbacks (where the host has IPv6).
    @Test func localhostListensOnBothLoopbacks() async throws {
        let (server, port) = try server(host: "localhost")
        defer { server.stop() }
        #expect(server.addresses == ["127.0.0.1:\(port)", "[::1]:\(port)"])
        for host in ["127.0.0.1", "::1"] {
            let text = try await offPool { () -> String in
                let c = try Client(host: host, port: port)
                c.send("GET /metrics HTTP/1.0\r\n\r\n")
                return c.readAll()
            }
            #expect(text.contains("tandem_test_gauge 42"), "\(host)")
        }
    }

    /// The fairness page and its JSON: read-only, the page under a policy that forbids
    /// loading from elsewhere, the JSON the history's.
    @Test func thePageAndItsDataAreServedReadOnly() async throws {
        let history = FairnessHistory()
        history.record(time: 1_000, links: [LinkFairness(link: "up", capacity: 1_000_000, utilisation: 0.5, jain: nil,
                                                          vms: [.init(vm: "a", weight: 1, min: 0, max: nil, demand: 7, allocation: 600_000, measured: 500_000, share: 0.5, agent: "none", reserved: 0)])],
                       reservations: [])
        let (server, port) = try server(history: history)
        defer { server.stop() }
        func get(_ request: String) async throws -> String {
            try await offPool { () -> String in
                let c = try Client(port: port)
                c.send(request)
                return c.readAll()
            }
        }
        let page = try await get("GET / HTTP/1.0\r\n\r\n")
        #expect(page.hasPrefix("HTTP/1.0 200 OK"))
        #expect(page.contains("Content-Security-Policy: default-src 'none'"))
        #expect(page.contains("<title>Tandem fairness</title>"))
        let api = try await get("GET /api/v1/fairness HTTP/1.0\r\n\r\n")
        #expect(api.contains("Content-Type: application/json"))
        let body = try #require(api.range(of: "\r\n\r\n").map { String(api[$0.upperBound...]) })
        let report = try JSONDecoder().decode(FairnessReport.self, from: Data(body.utf8))
        #expect(report.times == [1_000])
        #expect(report.history.first?.vms.first?.allocation == [600_000])
        #expect(report.links.first?.vms.first?.vm == "a")
        let post = try await get("POST /api/v1/fairness HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        #expect(post.hasPrefix("HTTP/1.0 405"), "\(post.prefix(100))")
        // A name that is not this machine's (DNS rebinding): refused for the page and its data,
        // not for /metrics (Prometheus scrapes by whatever name it was given).
        let rebound = try await get("GET /api/v1/fairness HTTP/1.1\r\nHost: attacker.example:\(port)\r\nConnection: close\r\n\r\n")
        #expect(rebound.hasPrefix("HTTP/1.1 403"), "\(rebound.prefix(100))")
        let scrape = try await get("GET /metrics HTTP/1.1\r\nHost: attacker.example:\(port)\r\nConnection: close\r\n\r\n")
        #expect(scrape.hasPrefix("HTTP/1.1 200"))
        for host in ["127.0.0.1:\(port)", "[::1]:\(port)", "localhost:\(port)"] {
            let ok = try await get("GET / HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n\r\n")
            #expect(ok.hasPrefix("HTTP/1.1 200"), "\(host)")
        }
    }
}
