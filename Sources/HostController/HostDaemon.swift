import Foundation
import Logging
import Netlink
import Prometheus
import TandemProtocol
import HostCore
import ServiceLifecycle
import TandemDaemon
import TandemLibvirt
import TandemTransport
import UnixSignals

/// `tandem-host run`: the controller with real backends, channels, admin socket and metrics,
/// as a swift-service-lifecycle service. A graceful shutdown (SIGTERM) stops it with every
/// limit left in force; SIGHUP reads the configuration file again and applies what changed
/// (``Controller/reload(_:attach:)``); under systemd it says `READY=1` after the first round
/// and pings the watchdog at every pass (rounds, and channel passes between them).
public struct HostDaemon: Service {
    public let config: HostConfig
    /// The file SIGHUP reads again; nil: no reloads (the configuration was given as a value).
    public let configPath: String?
    let log: Logger
    let notifier: SystemdNotifier
    /// How libvirt domains' devices are found on the host (sysfs; a recorded tree in tests).
    let devices: LibvirtInventory.Devices

    public init(config: HostConfig, configPath: String? = nil, logger: Logger, notifier: SystemdNotifier = SystemdNotifier(),
                devices: LibvirtInventory.Devices = .host()) {
        self.config = config; self.configPath = configPath; self.log = logger; self.notifier = notifier; self.devices = devices
    }

    enum Event: Sendable {
        case admin(LineServer.Event)
        /// A controller round (and a pass over the channels).
        case tick
        /// A pass over the channels between rounds (when rounds are further apart than
        /// ``channelPassSeconds``).
        case channels
        /// SIGHUP: read the configuration again.
        case reload
        /// What the libvirt watcher read.
        case libvirt(LibvirtWatcher.Update)
        /// The kernel announced a change to links or tc objects (not the controller's own).
        case kernel(RouteEvent)
        /// A repair a kernel notification asked for, or a reallocation a report asked for, is due.
        case due
    }

    /// The loop's events, posted by its own thread (timers, the channels' watch) and by
    /// others (admin requests, signals, libvirt, the kernel), awaited by the loop's task.
    /// An AsyncStream did this at twice the cost of a round's pass (its generic code is
    /// not specialized for the event type: type metadata looked up on every yield).
    /// When `limit` events wait, the oldest is dropped (a stalled loop catches up with
    /// what is newest).
    final class Mailbox: @unchecked Sendable {
        private let lock = NSLock()
        private var queue: [Event] = []
        private var head = 0
        private var waiter: UnsafeContinuation<Event?, Never>?
        private var finished = false
        let limit: Int

        init(limit: Int) { self.limit = limit }

        func yield(_ e: Event) {
            let waiting: UnsafeContinuation<Event?, Never>? = lock.withLock {
                if finished { return nil }
                if let w = waiter { waiter = nil; return w }
                if queue.count - head >= limit { head += 1; trim() }   // the oldest goes
                queue.append(e)
                return nil
            }
            waiting?.resume(returning: e)
        }

        /// The next event; nil once finished and nothing is left.
        func next() async -> Event? {
            if let e = lock.withLock({ take() }) { return e }
            return await withUnsafeContinuation { (c: UnsafeContinuation<Event?, Never>) in
                let now: Event?? = lock.withLock {
                    if let e = take() { return .some(e) }
                    if finished { return .some(nil) }
                    // One reader: a second would take the first one's place and leave it waiting.
                    precondition(waiter == nil, "Mailbox.next() awaited by two tasks")
                    waiter = c
                    return .none
                }
                if let now { c.resume(returning: now) }
            }
        }

        /// Under the lock.
        private func take() -> Event? {
            guard head < queue.count else { return nil }
            let e = queue[head]
            head += 1
            trim()
            return e
        }

        /// Under the lock: the slots of events taken or dropped go, when the queue empties or
        /// they are half of it (a stalled loop's queue stays within twice the limit).
        private func trim() {
            if head == queue.count { queue.removeAll(keepingCapacity: true); head = 0 } else if head >= 1024 && head * 2 >= queue.count { queue.removeFirst(head); head = 0 }
        }

        /// Events waiting (for tests).
        var count: Int { lock.withLock { queue.count - head } }
        /// Slots held, taken ones included (for tests).
        var slots: Int { lock.withLock { queue.count } }

        /// Ends the mailbox: the waiting `next()` (and later ones, once the queue is empty)
        /// return nil.
        func finish() {
            let w: UnsafeContinuation<Event?, Never>? = lock.withLock { finished = true; defer { waiter = nil }; return waiter }
            w?.resume(returning: nil)
        }
    }

    /// Backends and channels for the VMs of the configuration, as the controller takes them on.
    struct Attachments: VMAttachments {
        let netlink: RouteSocket
        let hub: ChannelHub
        /// Generic netlink, for devlink's rate objects.
        let devlink: RouteSocket
        /// The groups' rate nodes (devlink backend), as the configuration in force says.
        let nodes: DevlinkNodes

        func backend(for vm: HostConfig.VMConfig) -> any HardLimitBackend {
            switch vm.backend {
            case .tc(let iface): TCBackend(vm: vm.name, interface: iface, netlink: netlink)
            case .sriov(let pf, let vf, let setMin, false): SRIOVBackend(pf: pf, vf: vf, setMin: setMin, netlink: netlink)
            case .sriov(let pf, let vf, let setMin, true):
                DevlinkBackend(pf: pf, vf: vf, setMin: setMin, group: vm.group, nodes: nodes, netlink: netlink, devlink: devlink)
            }
        }

        func channel(for vm: HostConfig.VMConfig) -> (any GuestChannel)? {
            guard let path = vm.channel else { return nil }
            // A guest may send a few frames per report interval; 200 a second is far above
            // that and bounds what a flooding guest costs before the controller's own limits.
            return hub.add(name: vm.name, minBackoff: 0.1, maxBackoff: 5, maxFramesPerSecond: 200) { try UnixSocket.connect(path) }
        }

        func detach(_ vm: String) { hub.remove(name: vm) }
    }

    public func run() async throws {
        // SIGHUP's default action ends the process: trapped before anything else.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        let netlink = try RouteSocket()
        let hub = ChannelHub()
        let attach = Attachments(netlink: netlink, hub: hub, devlink: try RouteSocket(protocol: .generic), nodes: DevlinkNodes(config.groups))
        var backends: [String: any HardLimitBackend] = [:]
        var channels: [String: any GuestChannel] = [:]
        for vm in config.vms {
            backends[vm.name] = attach.backend(for: vm)
            channels[vm.name] = attach.channel(for: vm)
        }
        let registry = PrometheusCollectorRegistry()
        let metrics = ControllerMetrics(registry: registry)
        var metricsServer: MetricsHTTPServer?
        if let listen = config.controller.metrics, let (host, port) = HostConfig.parseListen(listen) {
            metricsServer = try MetricsHTTPServer(host: host, port: port, registry: registry, history: metrics.history, beforeScrape: { metrics.refresh() })
            metricsServer?.start()
            log.info("metrics", metadata: ["listen": "\(metricsServer!.addresses.joined(separator: ", "))"])
        }
        let controller = try Controller(config: config, backends: backends, channels: channels,
                                        store: StateStore(directory: config.controller.stateDir), metrics: metricsServer == nil ? nil : metrics, logger: log)
        await controller.prepare()

        try FileManager.default.createDirectory(atPath: (config.controller.adminSocket as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let admin = try LineServer(path: config.controller.adminSocket, mode: 0o600, maxLine: 4096, linesPerSecond: 100)
        try admin.start()
        log.info("controller started", metadata: ["vms": "\(config.vms.count)", "links": "\(config.links.count)", "admin": "\(config.controller.adminSocket)"])

        let sink = Mailbox(limit: 65536)
        let interval = config.controller.interval
        let watcher = config.libvirt.map { LibvirtWatcher(uri: $0.uri) }
        if let watcher { log.info("following libvirt", metadata: ["uri": "\(watcher.uri)"]) }
        watcher?.start()
        // Devices and tc objects changed by others (a VM's tap re-created, a class deleted)
        // are put back when the kernel says so, not at the next round. Without it (the
        // socket could not be opened) the rounds and looks still find them.
        var monitor: RouteMonitor?
        do { monitor = try RouteMonitor(ignoring: [netlink.localPort]) } catch {
            log.warning("kernel notifications not followed; changes are found by the rounds", metadata: ["error": "\(error)"])
        }
        monitor?.start()
        defer { monitor?.stop() }
        let loop = DaemonLoop(name: "tandem-loop")
        loop.start()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { for await e in admin.events { sink.yield(.admin(e)) } }
            group.addTask { for await _ in hangups { sink.yield(.reload) } }
            if let watcher { group.addTask { for await u in watcher.updates { sink.yield(.libvirt(u)) } } }
            if let monitor { group.addTask { for await k in monitor.events { sink.yield(.kernel(k)) } } }
            // The loop's task, its round timer and its watch on the guests' channels share one
            // thread (see DaemonLoop): a round, or a guest's frame, is one wake-up.
            loop.every(interval) { sink.yield(.tick) }
            // A guest's frame is read when it comes (a pass at most every waker gap), so that a
            // report that changes its VM's demand is acted on at once, not at the next round.
            loop.watch(hub.readinessFD, minGap: Self.channelWakeGapSeconds) { sink.yield(.channels) }
            // Channels are served at least every channelPassSeconds, by the rounds themselves
            // when they are that frequent.
            if interval > Self.channelPassSeconds { loop.every(Self.channelPassSeconds) { sink.yield(.channels) } }
            group.addTask(executorPreference: loop) { [self] in
                var ready = false
                var file = config
                var source = config.libvirt.map { LibvirtSource(uri: $0.uri) }
                var lastLook = 0.0
                var lastRound = -1e9
                // When the next repair is due, if a wake-up for it is set.
                var wakeAt: Double?
                func wake(at: Double?, now: Double) {
                    guard let at, at < (wakeAt ?? .infinity) else { return }
                    wakeAt = at
                    loop.after(at - now) { sink.yield(.due) }
                }
                while let e = await sink.next() {
                    if Task.isCancelled { break }
                    let now = POSIX.now()
                    switch e {
                    case .tick, .channels:
                        // The watchdog hears from every pass: rounds may be up to 60 s apart.
                        if ready { notifier.watchdog(now: now) }
                        // What the guests sent, then (in a round) what to do about it.
                        let passed = hub.service(now: now)
                        if !passed.isEmpty { await controller.receive(passed, now: now) }
                        loop.rearm()
                        // Ticks that queued up behind a slow pass are one round, not a burst.
                        if case .tick = e, now - lastRound >= interval / 2 {
                            lastRound = now
                            await controller.tick(now: now)
                            // What the host's devices say may change without a libvirt event (a
                            // tap put in its bridge after the start, a PF's driver loaded): the
                            // domains left out, or kept on their old device, are looked at again.
                            if var s = source, !(s.unmanaged.isEmpty && s.kept.isEmpty), now - lastLook >= Self.libvirtLookSeconds {
                                lastLook = now
                                let before = await controller.config
                                (s.unmanaged, s.kept) = await apply(file: file, source: s, controller: controller, attach: attach, why: "libvirt: devices looked at again", unlessSame: before)
                                source = s
                            }
                            if !ready {
                                // Every backend has been set up (or said why not) and the first
                                // limits are in the kernel.
                                ready = true
                                notifier.ready(status: "\(config.vms.count) VMs on \(config.links.count) links")
                            }
                        }
                        // (After the round, which allocated every link: only what came since.)
                        wake(at: await controller.due(now: now), now: now)
                    case .kernel(let k):
                        wake(at: await controller.kernelChanged(k, now: now), now: now)
                    case .due:
                        wakeAt = nil   // (this wake-up's; a later one set meanwhile fires anyway)
                        wake(at: await controller.due(now: now), now: now)
                    case .admin(let ae):
                        var libvirt: LibvirtStatus?
                        if let s = source { libvirt = s.status(managed: await controller.libvirtVMs(), now: now) }
                        await Self.handleAdmin(ae, controller: controller, server: admin, libvirt: libvirt, now: now)
                    case .reload:
                        if let (new, inventory) = await reload(controller, attach: attach, source: source) {
                            file = new
                            if let inventory { source?.unmanaged = inventory.unmanaged; source?.kept = inventory.kept }
                        }
                    case .libvirt(let update):
                        guard var s = source else { break }
                        let changed = s.apply(update, now: now)
                        if case .unreachable(let why, let retryIn) = update {
                            log.warning("libvirt unreachable; limits stay in force, retrying", metadata: ["uri": "\(s.uri)", "error": "\(why)", "retry_in": "\(retryIn)s"])
                        }
                        if case .resync(let all) = update { log.info("libvirt connected", metadata: ["uri": "\(s.uri)", "active_domains": "\(all.count)", "resync": "\(s.resyncs)"]) }
                        if case .readFailed(_, let name, let why) = update {
                            log.warning("libvirt domain not read after an event; kept as last read", metadata: ["domain": "\(name)", "error": "\(why)"])
                        }
                        if changed {
                            let why: String
                            switch update {
                            case .domain(_, _, _, let event): why = "libvirt: \(event)"
                            default: why = "libvirt: resync"
                            }
                            (s.unmanaged, s.kept) = await apply(file: file, source: s, controller: controller, attach: attach, why: why)
                        }
                        source = s
                    }
                    // Frames are written when sent; what a full socket did not take goes now.
                    let flushed = hub.flush(now: now)
                    if !flushed.isEmpty { await controller.receive(flushed, now: now) }
                }
            }
            // Until SIGTERM (the service group's graceful shutdown) or cancellation.
            try? await gracefulShutdown()
            notifier.stopping()
            group.cancelAll()
            sink.finish()
        }
        loop.stop()
        watcher?.stop()
        hub.stop()
        await controller.flush()
        admin.stop()
        metricsServer?.stop()
        // Limits stay in the kernel: a stopped controller leaves no VM unlimited.
        log.info("controller stopped; limits left in force")
    }

    /// SIGHUP: the file is read and checked whole; a bad one changes nothing (the error is
    /// logged and shown in systemd's status), a good one is applied (with libvirt's VMs
    /// worked out again against it). Returns the file's configuration now in force.
    func reload(_ controller: Controller, attach: Attachments, source: LibvirtSource?) async -> (HostConfig, LibvirtInventory.Outcome?)? {
        guard let configPath else { log.warning("SIGHUP ignored: no configuration file to read again"); return nil }
        notifier.reloading()
        let new: HostConfig
        do { new = try HostConfig.load(path: configPath) } catch {
            log.error("configuration not reloaded: nothing changed", metadata: ["error": "\(error)"])
            notifier.ready(status: "reload failed: \(error)")
            return nil
        }
        if new.libvirt != config.libvirt {
            log.warning("[libvirt] changed: it takes effect at a restart", metadata: ["uri": "\(config.libvirt?.uri ?? "none")"])
        }
        let previous = await Self.libvirtVMs(controller)
        attach.nodes.update(new.groups)
        let inventory = source.map { LibvirtInventory.build(file: new, entries: $0.ordered, devices: devices, previous: previous) }
        let change = await controller.reload(inventory?.config ?? new, attach: attach)
        notifier.ready(status: "\(new.vms.count) VMs on \(new.links.count) links (reloaded: \(change.added.count) added, \(change.removed.count) removed)")
        return (new, inventory)
    }

    /// How often domains left unmanaged (or kept on their old device) are looked at again.
    static let libvirtLookSeconds = 5.0

    /// libvirt's domains changed: the VMs are worked out again and the difference applied
    /// (only the VMs that changed are touched). Returns the domains left unmanaged.
    /// `unlessSame`: nothing is applied (or logged as a reload) when the VMs come out as these.
    func apply(file: HostConfig, source: LibvirtSource, controller: Controller, attach: Attachments, why: String, unlessSame: HostConfig? = nil) async -> ([UnmanagedDomain], [UnmanagedDomain]) {
        let inventory = LibvirtInventory.build(file: file, entries: source.ordered, devices: devices, previous: await Self.libvirtVMs(controller))
        if let unlessSame, unlessSame.vms == inventory.config.vms { return (inventory.unmanaged, inventory.kept) }
        let before = Set((source.unmanaged + source.kept).map(\.reason))
        for u in inventory.unmanaged where !before.contains(u.reason) {
            log.warning("libvirt domain not managed", metadata: ["domain": "\(u.domain)", "reason": "\(u.reason)"])
        }
        for u in inventory.kept where !before.contains(u.reason) {
            log.warning("libvirt domain's metadata refused", metadata: ["domain": "\(u.domain)", "reason": "\(u.reason)"])
        }
        await controller.reload(inventory.config, attach: attach, why: why)
        return (inventory.unmanaged, inventory.kept)
    }

    /// The libvirt VMs in force, by domain UUID.
    static func libvirtVMs(_ controller: Controller) async -> [String: HostConfig.VMConfig] {
        var out: [String: HostConfig.VMConfig] = [:]
        for vm in await controller.config.vms { if case .libvirt(let uuid) = vm.origin { out[uuid] = vm } }
        return out
    }

    /// Longest a guest's frame waits to be read when rounds are further apart than this.
    static let channelPassSeconds = 0.1
    /// Least time between two passes a guest's frame wakes (busy guests: at most 50 a second).
    static let channelWakeGapSeconds = 0.02

    static func handleAdmin(_ e: LineServer.Event, controller: Controller, server: LineServer, libvirt: LibvirtStatus? = nil, now: Double) async {
        if case .line(let client, _) = e, client.uid != 0 && client.uid != geteuid() {
            reply(server, client.id, AdminResponse(ok: false, error: "uid \(client.uid) may not use the admin socket"))
            return
        }
        guard case .line(let client, let bytes) = e else {
            if case .oversize(let c) = e { reply(server, c.id, AdminResponse(ok: false, error: "request too long")) }
            if case .rateLimited(let c) = e { reply(server, c.id, AdminResponse(ok: false, error: "too many requests")) }
            return
        }
        guard let req = try? JSONDecoder().decode(AdminRequest.self, from: Data(bytes)) else {
            reply(server, client.id, AdminResponse(ok: false, error: "not a request: expected one JSON object per line with an \"op\" (\(AdminRequest.ops.joined(separator: ", ")))"))
            return
        }
        switch req.op {
        case "fairness": reply(server, client.id, AdminResponse(ok: true, fairness: await controller.fairness()))
        case "status":
            var status = await controller.status(now: now)
            status.libvirt = libvirt
            reply(server, client.id, AdminResponse(ok: true, status: status))
        case "policy-set":
            guard let vm = req.vm else { reply(server, client.id, AdminResponse(ok: false, error: "policy-set needs a vm")); return }
            do {
                let min = try req.min.map { try BitRate(parsing: $0) }
                var max: BitRate?? = nil
                if let m = req.max { max = m == "none" ? .some(nil) : .some(try BitRate(parsing: m)) }
                let p = try await controller.setPolicy(vm: vm, weight: req.weight, min: min, max: max)
                reply(server, client.id, AdminResponse(ok: true, policy: PolicyView(weight: p.weight, min: p.guarantee.description, max: p.cap?.description)))
            } catch {
                reply(server, client.id, AdminResponse(ok: false, error: "\(error)"))
            }
        case "policy-show":
            do { reply(server, client.id, AdminResponse(ok: true, policies: try await controller.policies(vm: req.vm))) } catch {
                reply(server, client.id, AdminResponse(ok: false, error: "\(error)"))
            }
        case "policy-reset":
            guard let vm = req.vm else { reply(server, client.id, AdminResponse(ok: false, error: "policy-reset needs a vm")); return }
            do { reply(server, client.id, AdminResponse(ok: true, policies: [try await controller.resetPolicy(vm: vm)])) } catch {
                reply(server, client.id, AdminResponse(ok: false, error: "\(error)"))
            }
        case "reservations-list":
            do { reply(server, client.id, AdminResponse(ok: true, reservations: try await controller.reservationList(vm: req.vm))) } catch {
                reply(server, client.id, AdminResponse(ok: false, error: "\(error)"))
            }
        case "reservations-release":
            guard let vm = req.vm, let id = req.id else { reply(server, client.id, AdminResponse(ok: false, error: "reservations-release needs a vm and an id")); return }
            do {
                let r = try await controller.releaseReservation(vm: vm, id: id, now: now)
                reply(server, client.id, AdminResponse(ok: true, reservations: [r]))
            } catch {
                reply(server, client.id, AdminResponse(ok: false, error: "\(error)"))
            }
        default:
            reply(server, client.id, AdminResponse(ok: false, error: "unknown op '\(req.op.prefix(40))': use \(AdminRequest.ops.joined(separator: ", "))"))
        }
    }

    static func reply(_ server: LineServer, _ id: Int, _ r: AdminResponse) {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        guard var d = try? enc.encode(r) else { return }
        d.append(UInt8(ascii: "\n"))
        server.send(id, Array(d))
    }
}
