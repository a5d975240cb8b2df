import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import TandemTransport
import TandemProtocol
import HostCore

/// `GET /metrics` (Prometheus text format), the fairness page (`GET /`) and its data
/// (`GET /api/v1/fairness`, JSON) over HTTP/1.1 on swift-nio (``TransportLoop``). Read-only:
/// anything else gets 404 (405 for another method). The page loads nothing from elsewhere,
/// and its Content-Security-Policy forbids it to. Clients are served side by side, with keep-alive; one that is
/// slow to send its request (or sends none) is closed ``requestSeconds`` after it connected
/// or after its last answer, so no client can hold a connection open by trickling bytes.
/// Meant for a loopback or management address.
final class MetricsHTTPServer: @unchecked Sendable {
    let registry: PrometheusCollectorRegistry
    let history: FairnessHistory?
    let channels: [Channel]
    /// Called before each `GET /metrics` is answered (the controller's series are brought up
    /// to date when read: ``ControllerMetrics/refresh()``).
    let beforeScrape: (@Sendable () -> Void)?
    /// Where it listens, as HOST:PORT.
    let addresses: [String]
    /// How long a client has for each whole request.
    static let requestSeconds: Int64 = 5

    /// Listens on `host` (`localhost`: 127.0.0.1 and, where the host has IPv6, ::1; `::`
    /// takes IPv4 as well, as Linux binds it dual-stack).
    init(host: String, port: UInt16, registry: PrometheusCollectorRegistry, history: FairnessHistory? = nil, beforeScrape: (@Sendable () -> Void)? = nil) throws {
        self.registry = registry
        self.history = history
        self.beforeScrape = beforeScrape
        let bootstrap = ServerBootstrap(group: TransportLoop.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // A client that asks and does not read: at most this much waits for it, then it is
            // closed (see `respond`).
            .childChannelOption(.writeBufferWaterMark, value: .init(low: 256 * 1024, high: 1 << 20))
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMap {
                    channel.pipeline.addHandler(MetricsHandler(registry: registry, history: history, beforeScrape: beforeScrape))
                }
            }
        func bind(_ address: String) throws -> Channel {
            do { return try bootstrap.bind(host: address, port: Int(port)).wait() } catch {
                throw SystemError("bind", "metrics \(address.contains(":") ? "[\(address)]" : address):\(port): \(error)", errno: (error as? IOError)?.errnoCode ?? EINVAL)
            }
        }
        var bound = [try bind(host == "localhost" ? "127.0.0.1" : host)]
        var addresses = [host == "localhost" ? "127.0.0.1:\(port)" : host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"]
        // (A host without IPv6, or with it off, has no ::1: IPv4's loopback is enough.)
        if host == "localhost", let six = try? bind("::1") { bound.append(six); addresses.append("[::1]:\(port)") }
        channels = bound
        self.addresses = addresses
    }

    /// Listening since ``init(host:port:registry:)``; kept for the daemon's start sequence.
    func start() {}

    func stop() { for c in channels { c.close(promise: nil) } }

    /// Whether a request's Host names this machine: an IP address, `localhost`, or the host's
    /// own name (short or full), with any port. No Host (HTTP/1.0) is this machine too.
    static func hostAllowed(_ header: String?) -> Bool {
        guard var host = header?.lowercased(), !host.isEmpty else { return true }
        if host.hasPrefix("["), let end = host.firstIndex(of: "]") { return IPAddress(String(host[host.index(after: host.startIndex)..<end])) != nil }
        if let colon = host.lastIndex(of: ":") { host = String(host[..<colon]) }
        if IPAddress(host) != nil || host == "localhost" || host.hasSuffix(".localhost") { return true }
        var buf = [CChar](repeating: 0, count: 256)
        guard gethostname(&buf, buf.count) == 0 else { return false }
        let name = String(cString: buf).lowercased()
        return host == name || host.hasPrefix(name + ".") || name.hasPrefix(host + ".")
    }

    final class MetricsHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let registry: PrometheusCollectorRegistry
        let history: FairnessHistory?
        let beforeScrape: (@Sendable () -> Void)?
        var head: HTTPRequestHead?
        var deadline: Scheduled<Void>?

        init(registry: PrometheusCollectorRegistry, history: FairnessHistory?, beforeScrape: (@Sendable () -> Void)?) {
            self.registry = registry; self.history = history; self.beforeScrape = beforeScrape
        }

        /// Closes the connection unless a whole request arrives within the time.
        func arm(_ context: ChannelHandlerContext) {
            deadline?.cancel()
            let channel = context.channel
            deadline = context.eventLoop.scheduleTask(in: .seconds(MetricsHTTPServer.requestSeconds)) { channel.close(promise: nil) }
        }

        func channelActive(context: ChannelHandlerContext) {
            arm(context)
            context.fireChannelActive()
        }

        func channelInactive(context: ChannelHandlerContext) {
            deadline?.cancel()
            context.fireChannelInactive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h): head = h
            case .body: break
            case .end:
                guard let h = head else { return }
                head = nil
                deadline?.cancel()
                respond(context, h)
            }
        }

        func respond(_ context: ChannelHandlerContext, _ h: HTTPRequestHead) {
            // Answers it has not read are piling up (pipelined requests): it goes.
            guard context.channel.isWritable else { context.close(promise: nil); return }
            var body: [UInt8] = []
            var status = HTTPResponseStatus.ok
            var type = "text/plain; version=0.0.4; charset=utf-8"
            var headers = HTTPHeaders()
            let path = String(h.uri.prefix { $0 != "?" })
            let page = ["/", "/fairness", "/api/v1/fairness"].contains(path)
            switch (h.method, path) {
            case (.GET, _) where page && !MetricsHTTPServer.hostAllowed(h.headers["Host"].first):
                // A page elsewhere whose name was made to point here (DNS rebinding) must not
                // read the VMs' names and reservations through the browser.
                body = Array("the page answers requests for this machine's address or name only (Host: \(h.headers["Host"].first ?? "")); open it by IP, localhost or the host's name\n".utf8)
                status = .forbidden
                type = "text/plain; charset=utf-8"
            case (.GET, "/metrics"):
                beforeScrape?()
                registry.emit(into: &body)
            case (.GET, "/") where history != nil, (.GET, "/fairness") where history != nil:
                body = Array(FairnessPage.html.utf8)
                type = "text/html; charset=utf-8"
                headers.add(name: "Content-Security-Policy", value: FairnessPage.contentSecurityPolicy)
            case (.GET, "/api/v1/fairness") where history != nil:
                let enc = JSONEncoder()
                enc.outputFormatting = [.sortedKeys]
                body = (try? enc.encode(history!.report(version: TandemVersion.string, now: Date().timeIntervalSince1970))).map { Array($0) } ?? Array("{}".utf8)
                type = "application/json"
            case (.GET, _), (.HEAD, _):
                body = Array("not found: try /, /metrics or /api/v1/fairness\n".utf8)
                status = .notFound
                type = "text/plain; charset=utf-8"
            default:
                body = Array("read-only: GET /, /metrics or /api/v1/fairness\n".utf8)
                status = .methodNotAllowed
                type = "text/plain; charset=utf-8"
                headers.add(name: "Allow", value: "GET")
            }
            headers.add(name: "Cache-Control", value: "no-store")
            headers.add(name: "X-Content-Type-Options", value: "nosniff")
            headers.add(name: "Content-Type", value: type)
            headers.add(name: "Content-Length", value: "\(body.count)")
            let keepAlive = h.isKeepAlive
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: h.version, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
            let channel = context.channel
            let deadline = context.eventLoop.scheduleTask(in: .seconds(MetricsHTTPServer.requestSeconds)) { channel.close(promise: nil) }
            self.deadline = deadline
            // The next request's time starts once this answer is written (not merely queued).
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { [self] _ in
                if !keepAlive { channel.close(promise: nil); return }
                deadline.cancel()
                self.deadline?.cancel()
                self.deadline = channel.eventLoop.scheduleTask(in: .seconds(MetricsHTTPServer.requestSeconds)) { channel.close(promise: nil) }
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
    }
}
