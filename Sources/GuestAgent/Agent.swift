import Foundation
import Logging
import Netlink
import TandemProtocol
import AgentCore
import ServiceLifecycle
import TandemDaemon
import TandemTransport
#if canImport(Glibc)
import Glibc
#endif

public struct AgentOptions: Sendable {
    public var interface: String
    public var channel: ChannelSpec
    public var socketPath: String
    /// Seconds between demand reports until the host asks for another interval.
    public var interval: Double
    /// The limit shaped to before the host's first allocation.
    public var initialLimit: BitRate
    public var force: Bool
    public var keepShaping: Bool
    public var maxReservationsPerUID: Int
    /// How long a reservation waits for the host's answer.
    public var admissionTimeout: Double

    public init(interface: String, channel: ChannelSpec, socketPath: String = "/run/tandem/agent.sock", interval: Double = 0.1,
                initialLimit: BitRate = .gbit(10), force: Bool = false, keepShaping: Bool = false, maxReservationsPerUID: Int = 16, admissionTimeout: Double = 5) {
        self.interface = interface; self.channel = channel; self.socketPath = socketPath; self.interval = interval
        self.initialLimit = initialLimit; self.force = force; self.keepShaping = keepShaping
        self.maxReservationsPerUID = maxReservationsPerUID; self.admissionTimeout = admissionTimeout
    }
}

/// The guest agent: one event loop over the channel, the reservation socket and a timer.
///
/// Events are handled one at a time, to completion, so a new allocation and a reservation
/// never interleave their netlink changes. While the host is away the last allocation
/// stays in force; when it comes back the agent greets it again and re-sends its
/// reservations.
public actor Agent: Service {
    let options: AgentOptions
    let log: Logger
    /// The shaping on the interface: given (tests), or made by ``run()`` (netlink).
    var shaper: (any GuestShaper)!
    /// Seconds on a monotonic clock: POSIX.now in production, the test's in tests.
    let clock: @Sendable () -> Double
    let notifier: SystemdNotifier
    var channel: FrameChannel!
    var server: LineServer!
    let diag: SocketDiagnostics?

    enum HostState: String { case absent, handshaking, connected }
    var hostState = HostState.absent
    var session = SessionID.random()
    var welcome: Welcome?
    var allocation: Allocation?
    /// The session the current allocation came in.
    var allocationSession: SessionID?
    var lastHostFrame = 0.0
    var lastHello = -100.0
    var lastReport = 0.0
    var reportInterval: Double
    var estimator = DemandEstimator()
    var framesSent: UInt64 = 0, framesReceived: UInt64 = 0, framesRefused: UInt64 = 0

    /// Reservation messages (reserve, release) to the host, whoever asks: well within what the
    /// host takes from a guest beside its reports (20 a second, burst 50, beyond which the
    /// host drops frames and, after 50 in 10 s, cuts the whole VM off).
    static let hostRequestRate = 8.0, hostRequestBurst = 16.0
    var hostRequests = TokenBucket(rate: Agent.hostRequestRate, burst: Agent.hostRequestBurst)
    /// Each user's reserve requests: one application cannot take all of the above.
    static let userRequestRate = 4.0, userRequestBurst = 8.0
    var userRequests: [UInt32: TokenBucket] = [:]
    /// Releases waiting for the host budget (the release itself is done at once here).
    var pendingReleases: [String] = []
    /// Clients that closed recently (the last 4096).
    var closedClients: Set<Int> = []
    var closedOrder: [Int] = []

    struct Held {
        var request: ReserveRequest
        var slot: Int
        var client: LineServer.Client
        /// Released when this passes; nil: while the client's connection is open.
        var expires: Double?
        var granted: Bool
        var waitingSince: Double?
        /// When it was asked for again after a welcome, while not answered yet: an allocation
        /// without it may come before the answer. (An answer that never comes, a request the
        /// host dropped, stops counting after ``reaskSeconds``.)
        var reaskedAt: Double?
    }
    var reservations: [String: Held] = [:]
    /// How long a reservation asked for again after a welcome is kept out of the release
    /// check while its answer has not come (the host takes 10 s to drop one not re-sent).
    static let reaskSeconds = 10.0

    public init(options: AgentOptions, logger: Logger, shaper: (any GuestShaper)? = nil,
                clock: @escaping @Sendable () -> Double = { POSIX.now() }, notifier: SystemdNotifier = SystemdNotifier()) {
        self.options = options
        self.log = logger
        self.shaper = shaper
        self.clock = clock
        self.notifier = notifier
        self.reportInterval = options.interval
        do { self.diag = try SocketDiagnostics() } catch {
            logger.warning("per-flow demand unavailable: no sock_diag socket", metadata: ["error": "\(error)"])
            self.diag = nil
        }
    }

    enum Event: Sendable {
        case channel(FrameChannel.Event)
        case client(LineServer.Event)
        case tick
        /// A TCP socket of the guest's was destroyed (a flow ended).
        case socketClosed(SocketClosed)
        /// The report that follows a flow's end.
        case afterFlowEnded
    }

    /// Runs until a graceful shutdown (SIGTERM, through the service group) or cancellation,
    /// then stops cleanly. Under systemd it says `READY=1` once its tree is installed and its
    /// socket listens.
    public func run() async throws {
        if shaper == nil { shaper = try await Shaper(interface: options.interface) }
        try await shaper.apply(ShapingTree.desired(limit: options.initialLimit, reservations: []), force: options.force)
        log.info("shaping", metadata: ["interface": "\(options.interface)", "limit": "\(options.initialLimit)"])

        // First open here, so "busy" and "missing" are reported at once.
        let first = try options.channel.open()
        let firstFD = LockedBox<Int32>(first)
        let spec = options.channel
        channel = FrameChannel(name: "agent", endpoint: spec.endpoint) {
            if let fd = firstFD.take() { return fd }
            return try spec.open()
        }
        try FileManager.default.createDirectory(atPath: (options.socketPath as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        server = try LineServer(path: options.socketPath, mode: 0o660)
        channel.start()
        try server.start()
        log.info("agent started", metadata: ["channel": "\(spec)", "socket": "\(options.socketPath)"])
        notifier.ready(status: "shaping \(options.interface) at \(options.initialLimit) until the host's first allocation")

        let (events, sink) = AsyncStream.makeStream(of: Event.self, bufferingPolicy: .bufferingNewest(16384))
        let ch = channel!, srv = server!
        let interval = options.interval
        // The agent's tasks, its actor, the netlink sockets it awaits and its interval's timer
        // share one thread (see DaemonLoop): a round is one wake-up of the process, not a
        // timer thread's, then a worker's of the cooperative pool (a tenth of the agent's
        // time with 1,000 flows went to those hand-overs).
        let loop = DaemonLoop(name: "tandem-agent")
        loop.start()
        defer { loop.stop() }
        await withTaskGroup(of: Void.self) { group in
            group.addTask(executorPreference: loop) { for await e in ch.events { sink.yield(.channel(e)) } }
            // Clients are handled from their own streams (the actor takes one event at a
            // time): a flood of their lines cannot push the host's frames, or a `.closed`,
            // out of a shared buffer.
            group.addTask(executorPreference: loop) { [self] in for await e in srv.events { await handle(.client(e)) } }
            group.addTask(executorPreference: loop) { [self] in for await e in srv.connections { await handle(.client(e)) } }
            let ticker = loop.every(max(interval, 0.01)) { sink.yield(.tick) }
            defer { loop.cancel(ticker) }
            // Flows that end are known at once (not at the next socket sample, a second
            // apart). Only the ends of flows that claim more are passed on: a guest closing
            // thousands of connections does not fill the agent's queue. Without sock_diag's
            // destroy groups the agent goes on without.
            if diag != nil {
                do { closes = try SocketCloseMonitor(listening: false) } catch { log.info("ended flows not announced (sock_diag destroy groups)", metadata: ["error": "\(error)"]) }
            }
            if let closes {
                closes.start()
                let claiming = self.claiming
                group.addTask(executorPreference: loop) {
                    for await e in closes.events {
                        if case .closed(let f) = e, !claiming.contains(f) { continue }
                        sink.yield(.socketClosed(e))
                    }
                }
            }
            defer { closes?.stop() }
            afterFlowEnded = { loop.after(Agent.afterFlowEndedSeconds) { sink.yield(.afterFlowEnded) } }
            group.addTask(executorPreference: loop) { [self] in
                for await e in events {
                    if Task.isCancelled { break }
                    await handle(e)
                }
            }
            // Until a graceful shutdown or cancellation, then wind down.
            try? await gracefulShutdown()
            notifier.stopping()
            group.cancelAll()
            sink.finish()
        }
        await shutdown()
    }

    func shutdown() async {
        channel?.stop()
        server?.stop()
        if !options.keepShaping {
            do { try await shaper?.remove() } catch { log.error("could not remove shaping", metadata: ["error": "\(error)"]) }
        }
        log.info("agent stopped", metadata: ["shaping": "\(options.keepShaping ? "kept" : "removed")"])
    }

    func handle(_ e: Event) async {
        switch e {
        case .tick: await tick()
        case .socketClosed(.closed(let flow)): await flowEnded(flow)
        case .socketClosed(.overrun): lastSocketSample = -1e9   // ends were lost: sample the sockets next time
        case .afterFlowEnded: await followUp()
        case .channel(let c): await handleChannel(c)
        case .client(let c): await handleClient(c)
        }
    }

    // MARK: channel

    func send(_ m: GuestMessage) { send(frame: MessageCodec.encode(m, session: session)) }

    func send(frame: [UInt8]) {
        guard MessageCodec.fits(frame) else {
            log.error("frame too large, not sent", metadata: ["bytes": "\(frame.count)"])
            return
        }
        channel.send(frame)
        framesSent += 1
    }

    func sendHello() {
        var mac = "00:00:00:00:00:00"
        if let m = cachedMAC { mac = m }
        send(.hello(Hello(agentVersion: TandemVersion.string, interface: options.interface, mac: mac, capabilities: ["reservations", "flows"])))
        lastHello = clock()
        if hostState == .absent { hostState = .handshaking }
    }
    var cachedMAC: String?
    var diagFailed = false
    /// Sockets (sock_diag) are sampled at most this often: the kernel walks its whole TCP
    /// hash table for each dump, which costs more than everything else in a report.
    static let socketSampleSeconds = 1.0
    var pacer = ReportPacer()
    var lastSocketSample = -1e9

    func handleChannel(_ e: FrameChannel.Event) async {
        switch e {
        case .connected:
            log.info("host channel up")
            if cachedMAC == nil { cachedMAC = (try? await shaper.mac()) ?? nil }
            sendHello()
        case .disconnected(let why):
            log.info("host away; keeping the last allocation", metadata: ["reason": "\(why)"])
            hostState = .absent
            welcome = nil
        case .openFailed(let why):
            log.debug("channel open failed", metadata: ["reason": "\(why)"])
        case .oversize(let n):
            framesRefused += 1
            log.warning("oversize frame from host skipped", metadata: ["bytes": "\(n)"])
        case .frame(let f):
            framesReceived += 1
            lastHostFrame = clock()
            switch MessageCodec.decodeHost(f) {
            case .invalid(let v):
                framesRefused += 1
                log.warning("invalid frame from host", metadata: ["error": "\(v)"])
            case .unknownKind(let k, _):
                log.debug("unknown message kind from host ignored", metadata: ["kind": "\(k)"])
            case .message(let m, let s, let unknown):
                if !unknown.isEmpty { log.debug("unknown fields from host", metadata: ["fields": "\(unknown)"]) }
                await handleHost(m, session: s)
            }
        }
    }

    func rotateSession() {
        session = SessionID.random()
        estimator.reset()
    }

    func handleHost(_ m: HostMessage, session s: SessionID?) async {
        // A ping from a host that does not know our session: it is new (or restarted).
        // If we were connected to another, that one is gone: start a new session so nothing
        // of the old one is taken for the new. While still greeting, keep the session, so the
        // welcome to the hello already sent still counts.
        if case .ping(let p) = m {
            if s != session {
                if hostState == .connected { rotateSession() }
                hostState = .handshaking
                welcome = nil
                sendHello()
            }
            send(.pong(p))
            return
        }
        guard s == session else {
            log.debug("frame of another session dropped")
            return
        }
        switch m {
        case .welcome(let w):
            welcome = w
            pacer.reset()   // the host hears the demand at once
            // A new welcome (possibly from a restarted host) starts its own epoch count.
            allocationSession = nil
            hostState = .connected
            reportInterval = Double(w.reportIntervalMilliseconds) / 1000
            log.info("welcomed", metadata: ["vm": "\(w.vm)", "version": "\(w.version)", "weight": "\(w.policy.weight)", "min": "\(w.policy.guarantee)"])
            // Reservations the host granted before it went away: ask again.
            for (id, h) in reservations.sorted(by: { $0.key < $1.key }) where h.granted {
                send(.reserve(h.request))
                reservations[id]?.waitingSince = nil
                reservations[id]?.reaskedAt = clock()
            }
        case .allocation(let a):
            await applyAllocation(a)
        case .reservation(let r):
            await handleReservationReply(r)
        case .pong:
            break
        case .error(let e):
            log.warning("host error", metadata: ["code": "\(e.code)", "message": "\(e.message)"])
        case .ping:
            break
        }
    }

    func slotted(_ granted: [GrantedReservation]) -> [ShapingTree.Slotted] {
        granted.compactMap { g in reservations[g.id].map { ShapingTree.Slotted(slot: $0.slot, reservation: g) } }
    }

    func applyAllocation(_ a: Allocation) async {
        // Epochs only order allocations within one welcome: a restarted host counts anew.
        if let cur = allocation, allocationSession == session, a.epoch < cur.epoch { return }
        // The host carries every reservation it holds in each allocation it sends after
        // granting it (the channel keeps order): one granted here and missing now was
        // released by the host (`tandem-host reservations release`). Dropped, so it is not
        // asked for again at the next welcome.
        let carried = Set(a.reservations.map(\.id))
        let now = clock()
        for (id, h) in reservations where h.granted && !carried.contains(id) && (h.reaskedAt.map { now - $0 > Self.reaskSeconds } ?? true) {
            reservations[id] = nil
            log.notice("reservation released by the host", metadata: ["id": "\(id)", "rate": "\(h.request.rate)"])
        }
        let tree = ShapingTree.desired(limit: a.softLimit, reservations: slotted(a.reservations))
        do {
            let ops = try await shaper.apply(tree)
            allocation = a
            allocationSession = session
            send(.applied(Applied(epoch: a.epoch)))
            if !ops.isEmpty { log.debug("allocation applied", metadata: ["epoch": "\(a.epoch)", "soft": "\(a.softLimit)", "ops": "\(ops.count)"]) }
        } catch {
            log.error("allocation not applied", metadata: ["epoch": "\(a.epoch)", "error": "\(error)"])
            send(.applied(Applied(epoch: a.epoch, error: String(describing: error).prefix(250).description)))
        }
    }

    /// Re-applies the current allocation (after the held reservations changed).
    func reshape() async {
        let limit = allocation?.softLimit ?? options.initialLimit
        let grants = allocation?.reservations ?? []
        let tree = ShapingTree.desired(limit: limit, reservations: slotted(grants))
        do { try await shaper.apply(tree) } catch { log.error("reshape failed", metadata: ["error": "\(error)"]) }
    }

    // MARK: timer

    func tick() async {
        let now = clock()
        if hostState == .connected && now - lastHostFrame > 5 {
            log.info("host silent for 5s; greeting again")
            hostState = .handshaking
            welcome = nil
            rotateSession()
        }
        if hostState != .connected && now - lastHello >= 1 { sendHello() }
        if hostState == .connected { sendPendingReleases(now: now) }
        // Reservations: TTLs and answers that never came.
        var changed = false
        for (id, h) in reservations {
            if let exp = h.expires, now >= exp {
                release(id, reason: "ttl expired"); changed = true
            } else if let since = h.waitingSince, now - since > options.admissionTimeout {
                reply(h.client.id, .failure("the host did not answer within \(Int(options.admissionTimeout))s; try again"))
                reservations[id] = nil
                send(.release(ReleaseRequest(id: id)))
                changed = true
            }
        }
        if changed { await reshape() }
        // (Half a tick of slack: ticks come every `interval`, a hair early or late.)
        if hostState == .connected && now - lastReport >= reportInterval - max(options.interval, 0.01) / 2 {
            lastReport = now
            // This report covers a flow's end as well as the follow-up would.
            followUpDue = nil
            await report(now)
        } else if let due = followUpDue, now > due + 0.1 {
            await followUp()   // (its event was lost)
        }
    }

    /// How long after a flow's end the agent reports: what its classes send then, measured
    /// from the end on (the socket is destroyed once its queue went out).
    static let afterFlowEndedSeconds = 0.02
    /// When the report after a flow's end is due; nil: none waits.
    var followUpDue: Double?
    var afterFlowEnded: @Sendable () -> Void = {}
    /// The flows whose end is passed on from the monitor's thread (``DemandEstimator/claiming``).
    let claiming = LockedSet<FlowKey>()
    /// Ends of flows, heard only while a flow claims (``updateClaiming()``).
    var closes: SocketCloseMonitor?
    var listening = false

    /// The flows whose end matters, for the monitor; it listens only while there are some.
    func updateClaiming() {
        let now = estimator.claiming
        claiming.set(now)
        if let closes, listening != !now.isEmpty {
            listening = !now.isEmpty
            closes.listen(listening)
        }
    }

    /// A flow that sent and wanted more ended: the estimator forgets its claim and starts the
    /// rates' interval now, and the report for it goes out ``afterFlowEndedSeconds`` later,
    /// without waiting for the next tick (one at a time: sockets that churn add no reports).
    func flowEnded(_ flow: FlowKey) async {
        guard estimator.forget(flow) else { return }
        updateClaiming()
        guard hostState == .connected, followUpDue == nil, let classes = await classSamples() else { return }
        let now = clock()
        estimator.restart(at: now, classes: classes)
        followUpDue = now + Self.afterFlowEndedSeconds
        afterFlowEnded()
    }

    func followUp() async {
        guard followUpDue != nil else { return }
        followUpDue = nil
        if hostState == .connected { await report(clock()) }
    }

    func report(_ now: Double) async {
        guard var r = await sample(now) else { return }
        // Keep the frame within the limit whatever the number of flows and classes (fixed
        // classes are named first and kept). Encoded once when it fits, as it nearly always does.
        guard pacer.shouldSend(r, at: now, slack: max(options.interval, 0.01) / 2) else { return }
        if r.classes.count > Limits.maxClassesPerReport { r.classes.removeLast(r.classes.count - Limits.maxClassesPerReport) }
        var frame = MessageCodec.encode(.demand(r), session: session)
        while !MessageCodec.fits(frame) && (!r.flows.isEmpty || r.classes.count > 4) {
            if !r.flows.isEmpty { r.flows.removeLast(max(1, r.flows.count / 4)) } else { r.classes.removeLast(max(1, (r.classes.count - 4) / 4)) }
            frame = MessageCodec.encode(.demand(r), session: session)
        }
        send(frame: frame)
    }

    /// Samples the classes (and, once a second, the sockets): the demand report for the
    /// interval since the last sample, nil for the first sample or when the tree is not there.
    func sample(_ now: Double) async -> DemandReport? {
        guard let classes = await classSamples() else { return nil }
        // Sockets once a second (see `socketSampleSeconds`); the reports in between name no
        // flows, and the last sampled flows' wanting still counts.
        var flows: [DemandEstimator.FlowSample]? = nil
        if let diag, now - lastSocketSample >= Self.socketSampleSeconds {
            lastSocketSample = now
            do {
                let (socks, _) = try await diag.sockets(.tcp)
                flows = socks.compactMap { s in s.tcp.map { DemandEstimator.FlowSample(flow: s.flow, inode: s.inode, bytesSent: $0.bytesSent, appLimited: $0.appLimited) } }
            } catch {
                if !diagFailed { log.warning("per-flow demand unavailable (sock_diag)", metadata: ["error": "\(error)"]) }
                diagFailed = true
            }
        }
        let unmet = shaperUnmet()
        let r = estimator.report(at: now, classes: classes, flows: flows, epoch: allocation?.epoch ?? 0, unmetReservations: unmet)
        if flows != nil { updateClaiming() }
        return r
    }

    /// The classes' counters, or nil when the tree is not there (then it is put back).
    func classSamples() async -> [DemandEstimator.ClassSample]? {
        var stats: [DemandEstimator.ClassSample] = []
        var trouble: String? = nil
        do { stats = try await shaper.classCounters() } catch { trouble = "\(error)" }
        // The interface re-created (a dump of a gone index is empty, not an error) or its tree
        // removed: put it back.
        if trouble != nil || !stats.contains(where: { $0.handle == ShapingTree.top }) {
            do {
                if try await shaper.recover() {
                    log.warning("interface or tree came back; shaping restored", metadata: ["interface": "\(options.interface)"])
                    estimator.reset()
                }
            } catch {
                log.error("cannot shape the interface", metadata: ["interface": "\(options.interface)", "error": "\(trouble ?? "")", "recover": "\(error)"])
            }
            return nil
        }
        return stats
    }

    func shaperUnmet() -> BitRate {
        let grants = allocation?.reservations ?? []
        return ShapingTree.desired(limit: allocation?.softLimit ?? options.initialLimit, reservations: slotted(grants)).unmetReservations
    }

    // MARK: clients

    func reply(_ client: Int, _ r: AgentResponse) {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        guard var data = try? enc.encode(r) else { return }
        data.append(UInt8(ascii: "\n"))
        server.send(client, Array(data))
    }

    func handleClient(_ e: LineServer.Event) async {
        switch e {
        case .opened: break
        case .oversize(let c): reply(c.id, .failure("request longer than \(server.maxLine) bytes refused"))
        case .rateLimited(let c): reply(c.id, .failure("too many requests: slow down"))
        case .closed(let c):
            closedClients.insert(c.id)
            closedOrder.append(c.id)
            if closedOrder.count > 4096 { closedClients.remove(closedOrder.removeFirst()) }
            // Reservations held by this connection go with it.
            var changed = false
            for (id, h) in reservations where h.client.id == c.id && h.expires == nil {
                release(id, reason: "holder closed its connection"); changed = true
            }
            if changed { await reshape() }
        case .line(let c, let bytes):
            // A line read before its client closed may be handled after the close (they come
            // on different streams): nothing is held for a client that is gone.
            guard !closedClients.contains(c.id) else { return }
            guard let req = try? JSONDecoder().decode(AgentRequest.self, from: Data(bytes)) else {
                reply(c.id, .failure("not a request: expected one JSON object per line with an \"op\" (reserve, release, list, status)"))
                return
            }
            await handleRequest(req, from: c)
        }
    }

    func handleRequest(_ req: AgentRequest, from c: LineServer.Client) async {
        switch req.op {
        case "reserve":
            guard let rateText = req.rate else { reply(c.id, .failure("reserve needs a rate, such as \"30mbit\"")); return }
            let rate: BitRate
            do { rate = try BitRate(parsing: rateText) } catch { reply(c.id, .failure(error.description)); return }
            let selector: FlowSelector
            do { selector = try req.selector() } catch { reply(c.id, .failure(error.description)); return }
            var expires: Double? = nil
            if let ttl = req.ttl {
                do {
                    let s = try DurationText.seconds(ttl)
                    guard s >= 1, s <= 7 * 86400 else { reply(c.id, .failure("ttl '\(ttl)' must be between 1s and 7 days")); return }
                    expires = clock() + s
                } catch { reply(c.id, .failure(error.description)); return }
            }
            let id = "r-" + String(UInt32.random(in: 0x1000_0000...UInt32.max), radix: 16)
            let request = ReserveRequest(id: id, rate: rate, selector: selector)
            do { try request.validate() } catch { reply(c.id, .failure(error.description)); return }
            if reservations.values.filter({ $0.client.uid == c.uid }).count >= options.maxReservationsPerUID {
                reply(c.id, .failure("uid \(c.uid) already holds \(options.maxReservationsPerUID) reservations, the most one user may hold"))
                return
            }
            guard reservations.count < ShapingTree.maxReservations, let slot = freeSlot() else {
                reply(c.id, .failure("this VM holds \(reservations.count) reservations, the most it can shape")); return
            }
            guard hostState == .connected else {
                reply(c.id, .failure("no host connected: a reservation needs the host's admission; try again when tandem-host is running"))
                return
            }
            let now = clock()
            var mine = userRequests[c.uid] ?? TokenBucket(rate: Self.userRequestRate, burst: Self.userRequestBurst)
            let userOK = mine.take(at: now)
            userRequests[c.uid] = mine
            guard userOK else {
                reply(c.id, .failure("uid \(c.uid) asks for reservations faster than \(Int(Self.userRequestRate)) a second: slow down"))
                return
            }
            guard hostRequests.take(at: now) else {
                reply(c.id, .failure("this VM asks the host for reservations faster than \(Int(Self.hostRequestRate)) a second: slow down"))
                return
            }
            reservations[id] = Held(request: request, slot: slot, client: c, expires: expires, granted: false, waitingSince: clock())
            send(.reserve(request))
            log.info("reservation asked", metadata: ["id": "\(id)", "rate": "\(rate)", "selector": "\(selector)", "uid": "\(c.uid)", "pid": "\(c.pid)"])
        case "release":
            guard let id = req.id, let h = reservations[id] else { reply(c.id, .failure("no reservation '\(req.id ?? "")'")); return }
            guard c.uid == 0 || c.uid == h.client.uid else { reply(c.id, .failure("reservation \(id) belongs to uid \(h.client.uid)")); return }
            release(id, reason: "released by uid \(c.uid)")
            await reshape()
            reply(c.id, AgentResponse(ok: true, id: id))
        case "list":
            reply(c.id, AgentResponse(ok: true, reservations: reservationInfos()))
        case "status":
            reply(c.id, AgentResponse(ok: true, status: await status()))
        default:
            reply(c.id, .failure("unknown op '\(req.op.prefix(40))': use reserve, release, list or status"))
        }
    }

    /// Slots go round-robin, so a slot (its class and filter priorities) is reused only long
    /// after its last holder, never while a stale filter of it might still be installed.
    var nextSlot = 0
    func freeSlot() -> Int? {
        let used = Set(reservations.values.map(\.slot))
        for k in 0..<ShapingTree.maxReservations {
            let s = (nextSlot + k) % ShapingTree.maxReservations
            if !used.contains(s) { nextSlot = (s + 1) % ShapingTree.maxReservations; return s }
        }
        return nil
    }

    func release(_ id: String, reason: String) {
        guard reservations.removeValue(forKey: id) != nil else { return }
        // Released here at once (the tree reshaped by the caller); the host hears of it as
        // the budget allows (the next ticks), so a churning application cannot flood it.
        if hostRequests.take(at: clock()) { send(.release(ReleaseRequest(id: id))) } else { pendingReleases.append(id) }
        log.info("reservation released", metadata: ["id": "\(id)", "reason": "\(reason)"])
    }

    /// Releases that waited for the budget, and users' buckets that are full again.
    func sendPendingReleases(now: Double) {
        while let id = pendingReleases.first, hostRequests.take(at: now) {
            pendingReleases.removeFirst()
            send(.release(ReleaseRequest(id: id)))
        }
        userRequests = userRequests.filter { var b = $0.value; return !b.isFull(at: now) }
    }

    func handleReservationReply(_ r: ReservationReply) async {
        guard let h = reservations[r.id] else { return }
        reservations[r.id]?.reaskedAt = nil
        if r.granted {
            reservations[r.id]?.granted = true
            reservations[r.id]?.waitingSince = nil
            if h.waitingSince != nil { reply(h.client.id, AgentResponse(ok: true, id: r.id)) }
            log.info("reservation granted", metadata: ["id": "\(r.id)"])
        } else {
            reservations[r.id] = nil
            if h.waitingSince != nil { reply(h.client.id, .failure("refused by the host: \(r.reason ?? "no reason given")")) }
            log.info("reservation refused", metadata: ["id": "\(r.id)", "reason": "\(r.reason ?? "")"])
            await reshape()
        }
    }

    func reservationInfos() -> [ReservationInfo] {
        let applied = ShapingTree.desired(limit: allocation?.softLimit ?? options.initialLimit, reservations: slotted(allocation?.reservations ?? [])).appliedReservations
        let now = clock()
        return reservations.values.sorted { $0.request.id < $1.request.id }.map { h in
            ReservationInfo(id: h.request.id, rate: h.request.rate.description, shapedRate: applied[h.request.id]?.description,
                            selector: h.request.selector.description, uid: h.client.uid, pid: h.client.pid,
                            ttlRemaining: h.expires.map { max(0, $0 - now) })
        }
    }

    func status() async -> AgentStatus {
        let stats = (try? await shaper.classStats()) ?? []
        let classes = stats.map { s in
            AgentStatus.ClassInfo(name: ShapingTree.name(of: s.spec.handle) ?? s.spec.handle.description, handle: s.spec.handle.description,
                                  rate: s.spec.rate.description, ceil: s.spec.ceil.description,
                                  sentBytes: s.stats.bytes, drops: s.stats.drops, backlog: s.stats.backlog)
        }
        return AgentStatus(interface: options.interface, host: hostState.rawValue, vm: welcome?.vm, session: session.rawValue,
                           policy: welcome?.policy, epoch: allocation?.epoch, hardLimit: allocation?.hardLimit.description,
                           softLimit: (allocation?.softLimit ?? options.initialLimit).description, classes: classes,
                           reservations: reservationInfos(), framesSent: framesSent, framesReceived: framesReceived, framesRefused: framesRefused)
    }
}

/// A value handed once from one thread to another.
final class LockedBox<T>: @unchecked Sendable {
    private var value: T?
    private let lock = NSLock()
    init(_ v: T?) { value = v }
    func take() -> T? { lock.lock(); defer { lock.unlock() }; let v = value; value = nil; return v }
}

/// A set read on one thread and replaced on another.
final class LockedSet<T: Hashable>: @unchecked Sendable {
    private var value: Set<T> = []
    private let lock = NSLock()
    func set(_ v: Set<T>) { lock.withLock { value = v } }
    func contains(_ x: T) -> Bool { lock.withLock { value.contains(x) } }
}
