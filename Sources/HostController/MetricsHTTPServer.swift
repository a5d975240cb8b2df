import Foundation
import Prometheus
import TandemTransport
#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.0 server for `GET /metrics` (Prometheus text format), on its own thread.
/// Anything else gets 404. Meant for a loopback or management address.
final class MetricsHTTPServer: @unchecked Sendable {
    let fd: Int32
    let registry: PrometheusCollectorRegistry
    private var stopped = false
    private let lock = NSLock()

    init(host: String, port: UInt16, registry: PrometheusCollectorRegistry) throws {
        self.registry = registry
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw SystemError("socket", "metrics", errno: errno) }
        var one: Int32 = 1
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr(host == "localhost" ? "127.0.0.1" : host)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0, listen(s, 16) == 0 else { let e = errno; close(s); throw SystemError("bind", "metrics \(host):\(port)", errno: e) }
        fd = s
    }

    func start() {
        let t = Thread { [self] in
            while !lock.withLock({ stopped }) {
                let r = POSIX.poll([(fd, Int16(POLLIN))], timeoutMilliseconds: 300)
                guard r[0] & Int16(POLLIN) != 0 else { continue }
                let c = accept(fd, nil, nil)
                guard c >= 0 else { continue }
                serve(c)
                close(c)
            }
            close(fd)
        }
        t.name = "tandem-metrics"
        t.start()
    }

    func stop() { lock.withLock { stopped = true } }

    func serve(_ c: Int32) {
        // A client that stalls (not sending, or not reading a large body) gets 2 s, not forever.
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        // The request line and headers, to the blank line that ends them (they may come in
        // several segments; answering early and closing with bytes unread would reset the
        // connection and lose the answer).
        var buf = [UInt8](repeating: 0, count: 4096)
        var n = 0
        while n < buf.count {
            let got = buf.withUnsafeMutableBytes { read(c, $0.baseAddress! + n, 4096 - n) }
            if got <= 0 { break }
            n += got
            if buf[0..<n].firstRange(of: [13, 10, 13, 10]) != nil || buf[0..<n].firstRange(of: [10, 10]) != nil { break }
        }
        guard n > 0 else { return }
        let request = String(decoding: buf[0..<n], as: UTF8.self)
        let path = request.split(separator: " ").dropFirst().first.map(String.init) ?? ""
        var body: [UInt8] = []
        let status: String
        if request.hasPrefix("GET ") && (path == "/metrics" || path.hasPrefix("/metrics?")) {
            registry.emit(into: &body)
            status = "200 OK"
        } else {
            body = Array("not found: try /metrics\n".utf8)
            status = "404 Not Found"
        }
        let head = "HTTP/1.0 \(status)\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        let all = Array(head.utf8) + body
        var off = 0
        while off < all.count {
            let w = all[off...].withUnsafeBytes { send(c, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if w <= 0 { break }
            off += w
        }
        // Half-close and let the client finish (up to the 2 s timeout): closing with its
        // bytes unread would send a reset, which can discard the answer before it is read.
        shutdown(c, Int32(SHUT_WR))
        var sink = [UInt8](repeating: 0, count: 512)
        let until = POSIX.now() + 2
        while POSIX.now() < until, sink.withUnsafeMutableBytes({ read(c, $0.baseAddress, 512) }) > 0 {}
    }
}
