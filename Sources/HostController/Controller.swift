import Foundation
import Logging
import TandemProtocol
import HostCore
import Netlink
import TandemTransport

/// The host controller's state and decisions. One actor; ``run()`` drives it with real
/// time and real channels, tests drive ``receive(_:_:now:)`` and ``tick(now:)`` with their own.
///
/// Every round: read each VM's counters through its backend and turn them into a rate;
/// estimate each VM's demand from what the host measured (trusted) and what its guest
/// reported (believed only up to the VM's fair share); allocate each link (weighted
/// max-min); push limits that moved by more than the step; tell each guest its allocation.
public actor Controller {
    public enum AgentState: String, Sendable { case none, absent, handshaking, connected, silent, disconnected }

    /// One VM's state: a class, changed in place by the round and by channel events (a
    /// struct was copied out of the dictionary and back four times per VM per round).
    final class VM {
        init(config: HostConfig.VMConfig, policy: VMPolicy, backend: any HardLimitBackend, channel: (any GuestChannel)?, meter: RateMeter, agent: AgentState, budget: TokenBucket) {
            self.config = config; self.policy = policy; self.backend = backend; self.channel = channel; self.meter = meter; self.agent = agent
            self.budget = budget
        }
        var config: HostConfig.VMConfig
        var policy: VMPolicy
        /// Replaced when a reload names another device for the VM.
        var backend: any HardLimitBackend
        /// Replaced when a reload names another socket for the VM.
        var channel: (any GuestChannel)?
        var meter: RateMeter
        var measured = BitRate.zero
        /// When `measured` was last measured, and when the interval it covers began.
        var measuredAt = -1e9
        var intervalStart = -1e9
        var lastDrops: UInt64?
        var dropsDelta: UInt64 = 0
        var demand = BitRate.zero
        var allocation = BitRate.zero
        var limit = BitRate.zero
        /// What the kernel has (as far as this controller set it); nil: not yet set.
        var applied: BitRate?
        var agent: AgentState
        var handshake = HandshakeFilter()
        var lastGuestFrame = -1e9
        var lastPing = -1e9
        var report: DemandReport?
        var reportTime = -1e9
        var epoch: UInt64 = 0
        var sentSoft: BitRate?
        var sentReservations: [GrantedReservation]?
        var reservations: [String: GrantedReservation] = [:]
        /// The guest's message budget (``Controller/guestRate``, burst 50).
        var budget: TokenBucket
        var violations: [String: UInt64] = [:]
        var recentViolations: [Double] = []
        var messages: UInt64 = 0
        /// Reports dropped unread: a newer one from the guest came in the same pass.
        var superseded: UInt64 = 0
        var disconnects: UInt64 = 0
        var resets: UInt64 = 0
        var lastError: String?
        /// Bytes the VM sent since this controller started, from its counters' increases (a
        /// reset of the counters adds nothing): `tandem_vm_transmitted_bytes_total`.
        var transmitted: UInt64 = 0
        var lastBytes: UInt64?
        /// What the agent said it is in its hello.
        var agentVersion: String?
        /// Reservations the admin released (`tandem-host reservations release`), by id, with
        /// when: the guest asking for one again is refused, for ``adminReleaseSeconds``.
        var releasedByAdmin: [String: Double] = [:]
        /// What the guest last said it could not apply (its word; nil once it applies).
        var guestError: String?
        var lastWelcomeLog = -1e9
        var lastVerify = -1e9
        /// A kernel notification asked for a repair, due at this time (tc changes wait for a
        /// quiet moment, ``Controller/tcQuietSeconds``); repairs it may still ask for now
        /// (``Controller/repairsPerSecond``).
        var repairAt: Double?
        var firstTCChange: Double?
        var repairBudget = TokenBucket(rate: Controller.repairsPerSecond, burst: Controller.repairBurst)
        /// Times what `prepare` made was found changed and put back.
        var repairs: UInt64 = 0
        /// The lowest limit in force during the interval measured last (what `measured` is
        /// judged against), and during the one being measured now (from the last round's
        /// enforcement on).
        var limitMeasured: BitRate?
        var lowestApplied: BitRate?
        /// The backend was set up once (a later set-up is a repair).
        var everPrepared = false
        /// The VM's place in the roster (spreads the close looks over the period).
        var slot = 0
        /// The backend is set up (an interface that did not exist at start, or was
        /// re-created, is set up again when it appears).
        var prepared = false
        /// Reservations the guest has not re-confirmed since it (re)connected, with the time
        /// they are dropped: an agent that restarted no longer holds them.
        var unconfirmed: [String: Double] = [:]
        /// Since when the agent is not there (absent, silent, cut off); nil while it is.
        var absentSince: Double?
        /// Since when the guest reports an epoch older than the last allocation sent.
        var staleSince: Double?
    }

    /// The configuration in force (a reload replaces it, see ``reload(_:attach:)``).
    public private(set) var config: HostConfig
    let log: Logger
    var vms: [String: VM] = [:]
    /// VM names in configuration order.
    var order: [String]
    /// The VMs in configuration order, and per link: what each round walks (no lookups by name).
    var roster: [VM] = []
    var members: [String: [VM]] = [:]
    /// Each link's fair shares (by VM), until a policy changes.
    var fairShares: [String: [String: BitRate]] = [:]
    let store: StateStore?
    /// Writes state.json off the controller (``StateWriter``).
    let writer: StateWriter?
    let started: Double
    var persisted = PersistedState()
    let metrics: ControllerMetrics?
    var lastMetrics = -1e9

    /// Guest messages allowed per second (burst: 50), beyond which they are dropped: 20, or
    /// more where the report interval is short (three per interval).
    public static let guestMessagesPerSecond = 20.0
    var guestRate: Double { Self.guestRate(interval: config.controller.interval) }
    static func guestRate(interval: Double) -> Double { max(guestMessagesPerSecond, 3 / interval) }
    /// How long the reservations of a VM whose agent is not there are kept.
    public static let absentReservationSeconds = 60.0
    /// How long a reconnected guest has to re-send the reservations it still holds.
    public static let reconfirmSeconds = 10.0
    /// Violations within 10 s that cut a guest off, and for how long.
    public static let violationLimit = 50
    public static let cutOffSeconds = 10.0
    public static let maxReservationsPerVM = 256
    /// How often each VM's backend is looked at closely (two requests per VM). A re-created
    /// interface or a removed tree shows in every round's counters batch already.
    public static let verifySeconds = 30.0
    /// At most one "agent welcomed" at info per VM in this many seconds.
    public static let welcomeLogSeconds = 60.0
    /// A guest that sent nothing for this long is silent: its claims no longer count.
    public static let silentAfter = 3.0

    public init(config: HostConfig, backends: [String: any HardLimitBackend], channels: [String: any GuestChannel],
                store: StateStore?, metrics: ControllerMetrics? = nil, logger: Logger, now: Double = POSIX.now()) throws {
        self.config = config
        self.log = logger
        self.store = store
        self.writer = store.map { StateWriter(store: $0) }
        self.metrics = metrics
        self.started = now
        self.order = config.vms.map(\.name)
        if let store {
            do { persisted = try store.load() } catch {
                // A state file this version cannot read does not keep the controller (and the
                // limits it sets) from starting: it is moved aside, loudly, and the
                // configuration's policies apply.
                let aside = store.path + ".unreadable-\(Int(Date().timeIntervalSince1970))"
                let moved = rename(store.path, aside) == 0
                stateProblem = "\(error); " + (moved ? "moved to \(aside), starting from the configuration's policies" : "could not move it aside (\(String(cString: strerror(errno)))); starting from the configuration's policies")
                logger.critical("state file not readable", metadata: ["error": "\(error)", "moved_to": "\(moved ? aside : "-")"])
            }
        }
        for vm in config.vms {
            guard let backend = backends[vm.name] else { throw PolicyError.noBackend(vm.name) }
            vms[vm.name] = Self.makeState(vm, capacity: config.links.first { $0.name == vm.link }!.capacity, guestRate: Self.guestRate(interval: config.controller.interval), backend: backend,
                                          channel: channels[vm.name], persisted: persisted, statePath: store?.path, log: logger)
        }
        (roster, members) = Self.roster(order, vms)
    }

    /// A VM's state, with the policy and reservations kept in state.json if any.
    static func makeState(_ vm: HostConfig.VMConfig, capacity: BitRate, guestRate: Double, backend: any HardLimitBackend, channel: (any GuestChannel)?,
                          persisted: PersistedState, statePath: String?, log: Logger) -> VM {
        // A libvirt VM's policy is its domain's metadata: nothing in state.json overrides it.
        let runtime = vm.origin == .file ? persisted.policies[vm.name] : nil
        let state = VM(config: vm, policy: runtime ?? vm.policy, backend: backend, channel: channel,
                       meter: RateMeter(ceiling: capacity + capacity), agent: channel == nil ? .none : .absent,
                       budget: TokenBucket(rate: guestRate, burst: 50))
        for r in persisted.reservations[vm.name] ?? [] { state.reservations[r.id] = r }
        if let p = runtime, p != vm.policy {
            log.notice("policy set at runtime overrides the configuration", metadata: ["vm": "\(vm.name)", "weight": "\(p.weight)", "min": "\(p.guarantee)", "max": "\(p.cap.map(\.description) ?? "none")", "state": "\(statePath ?? "")"])
        }
        return state
    }

    /// The VMs in ``order``, and each link's, in that order; each VM's slot set.
    static func roster(_ order: [String], _ vms: [String: VM]) -> ([VM], [String: [VM]]) {
        let roster = order.compactMap { vms[$0] }
        var members: [String: [VM]] = [:]
        for (i, vm) in roster.enumerated() {
            vm.slot = i
            members[vm.config.link, default: []].append(vm)
        }
        return (roster, members)
    }

    func capacity(of vm: VM) -> BitRate { config.links.first { $0.name == vm.config.link }!.capacity }
    func link(_ name: String) -> HostConfig.LinkConfig { config.links.first { $0.name == name }! }

    // MARK: start

    /// Prepares every backend. A VM's limit at start is what the kernel has (a restarted
    /// controller takes over without a gap), or else its fair share.
    public func prepare() async {
        for name in order {
            guard let vm = vms[name] else { continue }
            let fair = fairShare(name)
            vm.limit = fair
            await prepareBackend(vm, initialLimit: fair)
        }
    }

    /// Sets up a VM's backend, keeping a limit the kernel already has. Errors (the VM's
    /// interface does not exist yet) are recorded and retried every round.
    func prepareBackend(_ vm: VM, initialLimit: BitRate) async {
        let name = vm.config.name
        do {
            try await vm.backend.prepare(initialLimit: initialLimit)
            let current = try await vm.backend.currentLimit()
            vm.applied = current
            if let current { vm.limit = current }
            vm.prepared = true
            vm.everPrepared = true
            vm.lastError = nil
            log.info("backend ready", metadata: ["vm": "\(name)", "backend": "\(vm.backend.describe)", "limit": "\(vm.limit)", "found": "\(current.map(\.description) ?? "none")"])
        } catch {
            backendFailed(vm)
            if vm.lastError != "\(error)" {
                log.error("backend not ready; retrying", metadata: ["vm": "\(name)", "backend": "\(vm.backend.describe)", "error": "\(error)"])
            }
            vm.lastError = "\(error)"
            vm.prepared = false
        }
    }

    // MARK: reload

    /// Applies a new configuration while running (SIGHUP): VMs gone from it are released,
    /// new ones set up and limited now (at their fair share, or what the kernel has). A VM
    /// whose backend changed keeps its state and gets the new device set up before the old one
    /// is released; one whose link or channel changed keeps its backend; a changed policy is
    /// taken (unless `policy set` overrode it: that stays, as at a start) and told to a
    /// connected guest. VMs it does not name as changed are not touched: no kernel request is
    /// made for them here. `[controller]` keys other than `step` and `soft_limit` keep their
    /// values until a restart (the result names them). The caller has checked the whole file
    /// (``HostConfig/load(path:)``): nothing of a bad one is applied.
    @discardableResult
    public func reload(_ new: HostConfig, attach: any VMAttachments, why: String = "configuration reloaded") async -> ConfigChange {
        let change = ConfigChange(from: config, to: new)
        var next = new
        next.controller = config.controller
        next.controller.step = new.controller.step
        next.controller.softFraction = new.controller.softFraction
        let fresh = change.added
        for name in change.removed { await release(name, attach: attach) }
        for vm in change.replaced {
            guard let state = vms[vm.name] else { continue }
            let capacity = next.links.first { $0.name == vm.link }!.capacity
            if vm.needsOtherBackend(than: state.config) { await replaceBackend(state, with: vm, attach: attach, capacity: capacity) }
            if state.config.channel != vm.channel {
                attach.detach(vm.name)
                state.channel = attach.channel(for: vm)
                state.agent = state.channel == nil ? .none : .absent
                state.handshake.reset()
                state.report = nil
            }
            if state.config.link != vm.link { state.meter = RateMeter(ceiling: capacity + capacity) }
            // Now a libvirt domain: its policy is its metadata's, no longer state.json's.
            if state.config.origin == .file, vm.origin != .file, persisted.policies.removeValue(forKey: vm.name) != nil { save() }
            state.config = vm
            takePolicy(state, vm)
        }
        for vm in change.repoliced {
            guard let state = vms[vm.name] else { continue }
            state.config = vm
            takePolicy(state, vm)
        }
        config = next
        for vm in fresh {
            vms[vm.name] = Self.makeState(vm, capacity: link(vm.link).capacity, guestRate: guestRate, backend: attach.backend(for: vm), channel: attach.channel(for: vm),
                                          persisted: persisted, statePath: store?.path, log: log)
        }
        order = config.vms.map(\.name)
        (roster, members) = Self.roster(order, vms)
        fairShares = [:]
        // (After the roster: a VM that moved off a changed link keeps its new link's meter.)
        for l in change.relinked {
            for vm in members[l.name] ?? [] { vm.meter = RateMeter(ceiling: l.capacity + l.capacity) }
        }
        for vm in fresh {
            guard let state = vms[vm.name] else { continue }
            let fair = fairShare(vm.name)
            state.limit = fair
            await prepareBackend(state, initialLimit: fair)
        }
        // A `policy set` kept over the file may no longer fit where the reload put its VM (a
        // group with a smaller min): said, not undone (the allocator scales guarantees that do
        // not fit down).
        _ = guaranteesInForce { name, problem in
            log.warning("a runtime policy no longer fits after the reload", metadata: ["vm": "\(name)", "problem": "\(problem)"])
        }
        // What the reload forgot (released VMs' policies and reservations) is written before
        // it returns: a reload is not on the round's path.
        if dirty { await flush() }
        if !change.needsRestart.isEmpty {
            log.warning("configuration keys changed that take effect at a restart", metadata: ["keys": "\(change.needsRestart.joined(separator: ", "))"])
        }
        log.notice("\(why)", metadata: [
            "added": "\(change.added.map(\.name))", "removed": "\(change.removed)", "replaced": "\(change.replaced.map(\.name))",
            "policies": "\(change.repoliced.map(\.name))", "links": "\(change.relinked.map(\.name))", "groups": "\(change.regrouped)",
        ])
        return change
    }

    /// The file's policy for a VM, unless `policy set` overrode it at runtime (that stays, as
    /// at a start); a connected guest is told a policy that changed.
    func takePolicy(_ state: VM, _ vm: HostConfig.VMConfig) {
        guard persisted.policies[vm.name] == nil || vm.origin != .file else {
            if state.policy != vm.policy {
                log.notice("policy set at runtime overrides the configuration", metadata: ["vm": "\(vm.name)", "state": "\(store?.path ?? "")"])
            }
            return
        }
        guard state.policy != vm.policy else { return }
        state.policy = vm.policy
        welcomeAgain(state)
    }

    /// A VM's backend changes (another interface, PF or VF; or `set_min` on the same VF). The
    /// VM keeps its state (policy, reservations, agent session). Another device is set up
    /// first, at the VM's current limit, and only then is the old one released: the VM is
    /// never without a limit. The same VF is taken over as it is (its limit kept) and the new
    /// backend applies its limit in the next round.
    func replaceBackend(_ state: VM, with vm: HostConfig.VMConfig, attach: any VMAttachments, capacity: BitRate) async {
        let old = state.backend
        let sameDevice: Bool
        switch (state.config.backend, vm.backend) {
        // (The same VF under the other rate interface is handed over: see teardown(handingOverTo:).)
        case (.sriov(let p1, let v1, _, let d1), .sriov(let p2, let v2, _, let d2)): sameDevice = p1 == p2 && v1 == v2 && d1 == d2
        default: sameDevice = false
        }
        state.backend = attach.backend(for: vm)
        state.applied = nil
        state.meter = RateMeter(ceiling: capacity + capacity)
        state.lastDrops = nil
        state.lastBytes = nil   // (another device's counter: its total is not this VM's)
        await prepareBackend(state, initialLimit: initialLimit(state))
        if !sameDevice {
            do { try await old.teardown(handingOverTo: state.backend) } catch {
                log.error("old backend not released", metadata: ["vm": "\(vm.name)", "backend": "\(old.describe)", "error": "\(error)"])
            }
        }
        log.info("backend replaced", metadata: ["vm": "\(vm.name)", "old": "\(old.describe)", "new": "\(state.backend.describe)"])
    }

    /// A VM leaves: its limit lifted (the backend's teardown: the IFB and redirect removed,
    /// or the VF's rate set to 0, no limit), its channel closed, its runtime policy and
    /// reservations forgotten.
    func release(_ name: String, attach: any VMAttachments) async {
        guard let vm = vms.removeValue(forKey: name) else { return }
        order.removeAll { $0 == name }
        attach.detach(name)
        do { try await vm.backend.teardown() } catch {
            log.error("backend not released", metadata: ["vm": "\(name)", "backend": "\(vm.backend.describe)", "error": "\(error)"])
        }
        let hadPolicy = persisted.policies.removeValue(forKey: name) != nil
        let hadReservations = persisted.reservations.removeValue(forKey: name) != nil
        if hadPolicy || hadReservations { save() }
        log.info("VM released", metadata: ["vm": "\(name)", "backend": "\(vm.backend.describe)"])
    }

    /// Tells a connected guest its policy again (a welcome in the same session).
    func welcomeAgain(_ vm: VM) {
        guard vm.agent == .connected else { return }
        send(vm, .welcome(Welcome(version: .current, vm: vm.config.name, policy: vm.policy, reportIntervalMilliseconds: reportIntervalMilliseconds)))
    }

    var reportIntervalMilliseconds: UInt32 { UInt32(Swift.max(10, Swift.min(60_000, config.controller.interval * 1000))) }

    func fairShare(_ name: String) -> BitRate {
        guard let vm = vms[name] else { return .zero }
        return fairShares(of: link(vm.config.link))[name] ?? .zero
    }

    /// A link's fair shares by VM. They depend on policies only: kept until one changes (a
    /// reload or `policy set` forgets them).
    func fairShares(of link: HostConfig.LinkConfig) -> [String: BitRate] {
        if let f = fairShares[link.name] { return f }
        let f = Allocator.fairShares(capacity: link.capacity, (members[link.name] ?? []).map { Self.input($0, demand: .zero) }, groups: groups(on: link.name))
        fairShares[link.name] = f
        return f
    }

    /// The limit a VM's backend is set up with: its own if it has one, else its fair share.
    func initialLimit(_ vm: VM) -> BitRate { vm.limit > .zero ? vm.limit : fairShare(vm.config.name) }

    // MARK: rounds

    /// One allocation round at time `now`.
    public func tick(now: Double) async {
        // Written in the background (at most once a second): the round does not wait for it.
        if dirty && !saving && now - lastSave >= 1 { lastSave = now; startSave() }
        let batches = await readBatches()
        for vm in roster { await measure(vm, now: now, batches: batches) }
        for link in config.links { await reallocate(link, now: now) }
        // The next interval is measured under the limits in force now, and under any lower
        // one a reallocation between rounds sets.
        for vm in roster { vm.lowestApplied = vm.applied }
        for vm in roster { heartbeat(vm, now: now) }
        // Metrics are scraped every few seconds: once a second is plenty.
        if let metrics, now - lastMetrics >= 1 {
            lastMetrics = now
            let table = fairnessSnapshot()
            metrics.publish(table, vms: vms, limitWrites: limitWrites, backendErrors: backendErrors)
            metrics.history.record(time: Date().timeIntervalSince1970, links: table, reservations: (try? reservationList(vm: nil)) ?? [])
        }
    }

    /// Allocates one link and enforces what changed. What the link has left under its
    /// limits is its slack: a limit above a VM's new allocation may stay (no write) only
    /// while it fits in there, so the limits in force never add up to more than the link.
    func reallocate(_ link: HostConfig.LinkConfig, now: Double) async {
        allocate(link, now: now)
        let group = members[link.name] ?? []
        let sum = group.reduce(BitRate.zero) { $0 + $1.limit }
        var slack = link.capacity > sum ? link.capacity - sum : .zero
        for vm in group { await enforce(vm, now: now, slack: &slack) }
        lastAllocation[link.name] = now
        reactAt[link.name] = nil
    }

    /// Least time between two reallocations of a link that reports ask for (between rounds):
    /// a guest cannot make the controller spin.
    public static let reactSeconds = 0.02
    /// When each link was last allocated, and when a report asked for it again.
    var lastAllocation: [String: Double] = [:]
    var reactAt: [String: Double] = [:]

    /// A report that changes what the host would give the VM (it wants more where it did
    /// not, or no longer; its rate moved by more than a tenth): its link is allocated again
    /// now, not at the next round.
    func reportChanged(_ vm: VM, _ old: DemandReport?, _ new: DemandReport) -> Bool {
        guard let old else { return true }
        if old.wantsMore != new.wantsMore || old.unmetReservations != new.unmetReservations { return true }
        let a = Double(old.rate.bitsPerSecond), b = Double(new.rate.bitsPerSecond)
        return abs(a - b) > max(0.1 * max(a, b), Double(capacity(of: vm).bitsPerSecond) * 0.01)
    }

    /// The reallocations reports asked for that are due. Returns when the next one is, if
    /// one waits (within ``reactSeconds`` of its link's last allocation).
    @discardableResult
    public func reactDue(now: Double) async -> Double? {
        var next: Double?
        for link in config.links {
            guard let at = reactAt[link.name] else { continue }
            let due = max(at, (lastAllocation[link.name] ?? -1e9) + Self.reactSeconds)
            if due <= now { await reallocate(link, now: now) } else { next = min(next ?? .infinity, due) }
        }
        return next
    }

    /// What kernel notifications and guests' reports asked for, if due; when the next is, if
    /// one waits (the daemon comes back then).
    public func due(now: Double) async -> Double? {
        let (r, a) = (await repairDue(now: now), await reactDue(now: now))
        return [r, a].compactMap { $0 }.min()
    }

    /// One request per batch key for the round's counters (see ``CounterBatch``). A batch
    /// that cannot be read is left out: its VMs read their own counters, which say why.
    func readBatches() async -> [String: CounterBatch] {
        var out: [String: CounterBatch] = [:]
        var failed: Set<String> = []
        for vm in roster {
            guard vm.prepared, let key = vm.backend.batchKey, out[key] == nil, !failed.contains(key) else { continue }
            if let b = try? await vm.backend.readBatch() { out[key] = b } else { failed.insert(key) }
        }
        return out
    }

    func measure(_ vm: VM, now: Double, batches: [String: CounterBatch] = [:]) async {
        let name = vm.config.name
        let batch = vm.backend.batchKey.flatMap { batches[$0] }
        if !vm.prepared {
            await prepareBackend(vm, initialLimit: initialLimit(vm))
            if !vm.prepared { return }
        } else if let batch {
            // (Only for a backend prepared before the batch was read: one set up just now is
            // not in it yet.)
            if vm.backend.isIntact(in: batch) == false { await repair(vm, why: "not intact in the round's dump"); return }
            if let k = vm.backend.currentLimit(in: batch) { compare(vm, kernelLimit: k) }
        }
        // An agent that is not there (gone, cut off, or not back since a controller restart)
        // holds its reservations for `absentReservationSeconds`: then they lapse (it re-sends
        // what it still holds when it is back, and they are admitted again).
        if vm.agent != .connected && vm.agent != .handshaking {
            let since = vm.absentSince ?? now
            vm.absentSince = since
            if now - since >= Self.absentReservationSeconds && !vm.reservations.isEmpty {
                let ids = vm.reservations.keys.sorted()
                vm.reservations = [:]
                vm.unconfirmed = [:]
                persistReservations(vm)
                log.info("reservations of an absent agent dropped", metadata: ["vm": "\(name)", "ids": "\(ids)", "absent_for": "\(Int(now - since))s"])
            }
        } else {
            vm.absentSince = nil
        }
        // Reservations not re-sent after a reconnect: the guest no longer holds them.
        let lapsed = vm.unconfirmed.filter { $0.value <= now }.map(\.key)
        if !lapsed.isEmpty {
            for id in lapsed { vm.reservations[id] = nil; vm.unconfirmed[id] = nil }
            persistReservations(vm)
            log.info("reservations not re-confirmed by the guest dropped", metadata: ["vm": "\(name)", "ids": "\(lapsed.sorted())"])
        }
        do {
            let batched = batch.flatMap { vm.backend.counters(in: $0) }
            let (bytes, drops) = if let batched { batched } else { try await vm.backend.counters() }
            if let last = vm.lastBytes, bytes >= last { vm.transmitted &+= bytes - last }
            vm.lastBytes = bytes
            switch vm.meter.sample(bytes: bytes, at: now) {
            case .first: break
            case .rate(let r), .wrapped(let r):
                vm.measured = r
                vm.intervalStart = vm.measuredAt
                vm.measuredAt = now
                // The lowest limit in force over the interval just measured; the next starts
                // with the one in force now.
                vm.limitMeasured = vm.lowestApplied
            case .reset:
                vm.resets += 1
                vm.applied = nil   // a reset (driver reload) clears limits too: re-apply
                log.warning("counters went back: reset; limits will be re-applied", metadata: ["vm": "\(name)"])
            }
            if let d = drops { vm.dropsDelta = d >= (vm.lastDrops ?? d) ? d - (vm.lastDrops ?? d) : 0; vm.lastDrops = d }
            if vm.lastError?.hasPrefix("counters: ") == true { vm.lastError = nil }
        } catch {
            backendFailed(vm)
            if vm.lastError != "counters: \(error)" { log.error("counters unreadable", metadata: ["vm": "\(name)", "error": "\(error)"]) }
            vm.lastError = "counters: \(error)"
            vm.applied = nil
        }
        if vm.agent == .connected && now - vm.lastGuestFrame > Self.silentAfter {
            vm.agent = .silent
            log.warning("agent silent", metadata: ["vm": "\(name)"])
        }
    }

    func allocate(_ link: HostConfig.LinkConfig, now: Double) {
        let group = members[link.name] ?? []
        let fair = fairShares(of: link)
        var inputs: [Allocator.Input] = []
        inputs.reserveCapacity(group.count)
        for v in group {
            let fresh = reportFresh(v, now: now)
            let reserved = v.reservations.values.reduce(BitRate.zero) { $0 + $1.rate }
            v.demand = DemandEstimate.host(measured: v.measured, limit: v.limit, limitMeasured: v.limitMeasured, drops: v.dropsDelta, report: fresh ? v.report : nil,
                                           // (A report from within the interval measured counts:
                                           // a flow that ended in it must not make the VM look
                                           // at its limit against a limit its report lowered.)
                                           reportIsNewer: v.reportTime > v.intervalStart,
                                           fairShare: fair[v.config.name] ?? .zero, capacity: link.capacity, reserved: reserved)
            inputs.append(Self.input(v, demand: v.demand))
        }
        // Outputs come in the inputs' order.
        for (v, out) in zip(group, Allocator.allocate(capacity: link.capacity, inputs, groups: groups(on: link.name))) {
            v.allocation = out.allocation
            v.limit = out.limit
        }
    }

    /// Agents report on change and at least every keepalive: a report holds until then.
    func reportFresh(_ v: VM, now: Double) -> Bool {
        v.agent == .connected && now - v.reportTime < max(3 * config.controller.interval, 2.5 * Limits.reportKeepaliveSeconds)
    }

    static func input(_ v: VM, demand: BitRate) -> Allocator.Input {
        Allocator.Input(name: v.config.name, weight: v.policy.weight, guarantee: v.policy.guarantee, cap: v.policy.cap, demand: demand, group: v.config.group)
    }

    /// The link's `[[group]]`s, as the allocator takes them.
    func groups(on link: String) -> [Allocator.Group] {
        config.groups.filter { $0.link == link }.map { Allocator.Group(name: $0.name, weight: $0.weight, guarantee: $0.guarantee, cap: $0.cap) }
    }

    /// Whether a VM's limit is written this round. A limit is written when it moves by more
    /// than `step`, with two exceptions that keep the kernel within the policy: a limit in
    /// force above the VM's cap is always written down, and one above the VM's new limit
    /// stays only as far as the link's `slack` (what its limits leave unallocated) covers
    /// it, which it then uses up.
    static func needsWrite(applied: BitRate?, limit: BitRate, cap: BitRate?, step: BitRate, slack: inout BitRate) -> Bool {
        guard let applied else { return true }
        if let cap, applied > cap { return true }
        if applied <= limit { return limit - applied > step }
        let excess = applied - limit
        guard excess <= step, excess <= slack else { return true }
        slack = slack - excess
        return false
    }

    func enforce(_ vm: VM, now: Double, slack: inout BitRate) async {
        let name = vm.config.name
        let step = capacity(of: vm).scaled(by: config.controller.step)
        // Found changed behind our back (or reset)? A closer look than the round's batch
        // (the redirect filter, the limit's value), every `verifySeconds`, VMs spread out.
        if vm.lastVerify < -1e8 { vm.lastVerify = now - Self.verifySeconds * Double(vm.slot) / Double(max(1, roster.count)) }
        if now - vm.lastVerify > Self.verifySeconds, vm.applied != nil {
            vm.lastVerify = now
            if !(await vm.backend.isIntact()) { await repair(vm, why: "not intact at the look"); return }
            // (Not `try?`, which would fold "no limit" into "not readable"; the latter is left
            // for the next look.)
            do { compare(vm, kernelLimit: try await vm.backend.currentLimit()) } catch {}
        }
        if Self.needsWrite(applied: vm.applied, limit: vm.limit, cap: vm.policy.cap, step: step, slack: &slack) {
            do {
                try await vm.backend.apply(limit: vm.limit, guarantee: vm.policy.guarantee)
                limitWrites[vm.backend.kind, default: 0] += 1
                vm.applied = vm.limit
                vm.lowestApplied = min(vm.lowestApplied ?? vm.limit, vm.limit)
                vm.lastError = nil
            } catch {
                backendFailed(vm)
                if vm.lastError != "\(error)" { log.error("limit not applied", metadata: ["vm": "\(name)", "limit": "\(vm.limit)", "error": "\(error)"]) }
                vm.lastError = "\(error)"
            }
        }
        guard vm.agent == .connected, let applied = vm.applied else { return }
        let soft = applied.scaled(by: config.controller.softFraction)
        let grants = vm.reservations.values.sorted { $0.id < $1.id }
        if vm.sentSoft != soft || vm.sentReservations != grants {
            vm.epoch += 1
            vm.sentSoft = soft
            vm.sentReservations = grants
            send(vm, .allocation(Allocation(epoch: vm.epoch, hardLimit: applied, softLimit: soft, reservations: Array(grants.prefix(Limits.maxReservationsPerAllocation)))))
        }
    }

    /// What `prepare` made is gone or changed (an interface re-created by a VM restart, a
    /// class or filter deleted by hand): made again now, at the limit in force (the one the
    /// kernel has, if someone changed it, is put back). A VM not set up yet is set up.
    func repair(_ vm: VM, why: String) async {
        let name = vm.config.name
        guard vm.prepared else {
            let before = vm.everPrepared
            await prepareBackend(vm, initialLimit: initialLimit(vm))
            if vm.prepared && before { vm.repairs += 1 }
            return
        }
        let target = vm.applied ?? vm.limit
        do {
            let done = try await vm.backend.restore(limit: target)
            let kernel = try await vm.backend.currentLimit()
            var reapplied = false
            if !(kernel.map { vm.backend.sameLimit($0, target) } ?? false) {
                try await vm.backend.apply(limit: target, guarantee: vm.policy.guarantee)
                reapplied = true
            }
            vm.applied = target
            if !done.isEmpty || reapplied {
                vm.repairs += 1
                log.warning("backend changed behind the controller; put back", metadata: [
                    "vm": "\(name)", "why": "\(why)", "made": "\(done.joined(separator: ", "))",
                    "limit": "\(target)", "kernel_had": "\(kernel.map(\.description) ?? "none")"])
            }
            if vm.lastError != nil && !(vm.lastError!.hasPrefix("counters: ")) { vm.lastError = nil }
        } catch {
            if vm.lastError != "\(error)" {
                log.error("backend not set up again; retrying", metadata: ["vm": "\(name)", "why": "\(why)", "error": "\(error)"])
            }
            vm.lastError = "\(error)"
            vm.prepared = false
            vm.applied = nil
        }
    }

    /// Repairs of one VM that kernel notifications may ask for: a burst (a tap deleted, made
    /// again and brought up is three), then this many a second; more wait for the next pass
    /// (a guest flapping its link cannot make the controller spin).
    public static let repairsPerSecond = 10.0
    public static let repairBurst = 5.0

    /// How long tc changes to a VM's objects must be quiet before they are repaired: a tool
    /// that deletes and adds again (libvirt's `<bandwidth>` clears the tap's qdiscs before
    /// setting its own) is not raced; at most ``tcWaitSeconds`` after the first. Link changes
    /// (a tap made again, which has nothing in place) are repaired at once. With the
    /// default-deny root a deleted class drops the VM's traffic meanwhile, never passes it.
    public static let tcQuietSeconds = 0.05
    public static let tcWaitSeconds = 0.25

    /// A kernel notification: the VMs whose backends it concerns are repaired now, or when
    /// due (tc changes, or past their budget of repairs). Returns when the next repair is
    /// due, for the caller to come back then.
    @discardableResult
    public func kernelChanged(_ event: RouteEvent, now: Double) async -> Double? {
        for vm in roster where vm.backend.concerns(event) {
            if case .tc = event {
                let first = vm.firstTCChange ?? now
                vm.firstTCChange = first
                vm.repairAt = min(max(vm.repairAt ?? now, now + Self.tcQuietSeconds), first + Self.tcWaitSeconds)
            } else {
                vm.repairAt = now
            }
        }
        return await repairDue(now: now)
    }

    /// The repairs kernel notifications asked for that are due (and within their VM's
    /// budget). Returns when the next one is due, if any waits.
    @discardableResult
    public func repairDue(now: Double) async -> Double? {
        var next: Double?
        for vm in roster {
            guard let at = vm.repairAt else { continue }
            guard at <= now, vm.repairBudget.take(at: now) else {
                // Not due yet; or due, past its budget: when the budget has one again.
                next = min(next ?? .infinity, at > now ? at : now + 1 / Self.repairsPerSecond)
                continue
            }
            vm.repairAt = nil
            vm.firstTCChange = nil
            await repair(vm, why: "kernel notification")
        }
        return next
    }

    /// The limit the kernel has (`nil`: none) against the one applied. Nothing there (a VF
    /// re-created by a driver reset reads 0, unlimited) or a different limit (someone else
    /// set it): apply ours again.
    func compare(_ vm: VM, kernelLimit k: BitRate?) {
        guard let a = vm.applied, !(k.map { vm.backend.sameLimit($0, a) } ?? false) else { return }
        log.warning("limit changed behind the controller; re-applying", metadata: ["vm": "\(vm.config.name)", "kernel": "\(k.map(\.description) ?? "none")", "expected": "\(a)"])
        vm.applied = nil
    }

    func heartbeat(_ vm: VM, now: Double) {
        guard vm.channel != nil else { return }
        // Nobody to ping: a channel that is down or cut off.
        if vm.agent == .absent || vm.agent == .disconnected { return }
        // A quiet guest is pinged every second, so that silence is noticed; one heard from
        // within the second (agents report at least once a second) every 2.5 s, enough for the
        // agent, which greets again after 5 s without a word from the host.
        if now - vm.lastPing >= (now - vm.lastGuestFrame >= 1 ? 1 : 2.5) {
            vm.lastPing = now
            send(vm, .ping(Ping(nonce: UInt64(now * 1000))))
        }
    }

    func send(_ vm: VM, _ m: HostMessage) {
        let frame = MessageCodec.encode(m, session: vm.handshake.session)
        guard MessageCodec.fits(frame) else { log.error("frame too large", metadata: ["vm": "\(vm.config.name)"]); return }
        vm.channel?.send(frame)
    }

    // MARK: guests

    /// What a pass over the channels brought, in order: one call onto the controller for
    /// the pass, not one per frame.
    ///
    /// A demand report followed, in the same pass and connection, by a newer one from the same
    /// guest is dropped after its framing checks, unread: only the newest counts, and a loop
    /// that fell behind catches up without decoding what it would throw away. It still
    /// counts against the guest's message budget.
    public func receive(_ events: [(String, FrameChannel.Event)], now: Double) {
        let skip = Self.supersededReports(events)
        for (i, (name, event)) in events.enumerated() { receive(name, event, now: now, superseded: skip[i]) }
    }

    /// Which events are demand reports with a newer one after them from the same channel and
    /// connection. A pass reads each channel's frames one after the other, so a report's
    /// successors are in the run of events that follows it with the same name (an earlier
    /// run, not looked at, only means a report read as before).
    static func supersededReports(_ events: [(String, FrameChannel.Event)]) -> [Bool] {
        var skip = [Bool](repeating: false, count: events.count)
        guard events.count > 1 else { return skip }
        var run: String?
        var newerReport = false
        for i in events.indices.reversed() {
            let (name, event) = events[i]
            if name != run { run = name; newerReport = false }
            switch event {
            case .frame(let f) where MessageCodec.endsAsDemandReport(f):
                if newerReport { skip[i] = true } else { newerReport = true }
            case .frame, .oversize:
                break
            case .connected, .disconnected, .openFailed:
                newerReport = false
            }
        }
        return skip
    }

    /// One event from a VM's channel.
    public func receive(_ name: String, _ event: FrameChannel.Event, now: Double) { receive(name, event, now: now, superseded: false) }

    /// `superseded`: a frame with a newer report after it, dropped once counted.
    func receive(_ name: String, _ event: FrameChannel.Event, now: Double, superseded: Bool) {
        guard let vm = vms[name] else { return }
        switch event {
        case .connected:
            vm.agent = .handshaking
            vm.handshake.reset()
            vm.lastPing = now
            send(vm, .ping(Ping(nonce: 0)))   // "who is there": the agent answers with a hello
            log.info("channel connected", metadata: ["vm": "\(name)"])
        case .disconnected(let why):
            if vm.agent != .disconnected { vm.agent = .absent }
            vm.handshake.reset()
            vm.report = nil
            log.info("channel down", metadata: ["vm": "\(name)", "reason": "\(why)"])
        case .openFailed:
            if vm.agent != .disconnected { vm.agent = .absent }
        case .oversize:
            if vm.agent != .disconnected { violation(vm, "oversize", now: now) }
        case .frame(let f):
            // Cut off: whatever was already in flight is not looked at.
            if vm.agent == .disconnected { return }
            vm.messages += 1
            // Rate limit: a token bucket per channel.
            guard vm.budget.take(at: now) else { violation(vm, "rate-limited", now: now); return }
            if superseded { vm.superseded += 1; return }
            // Without a report's classes and flows (checked, not kept): the host uses neither.
            switch MessageCodec.decodeGuest(f, detail: false) {
            case .invalid(let v):
                violation(vm, v == .notAFrame ? "garbage" : "invalid", now: now)
                log.debug("invalid guest frame", metadata: ["vm": "\(name)", "error": "\(v)"])
            case .unknownKind(let k, _):
                vm.violations["unknown-kind", default: 0] += 1
                log.debug("unknown message kind ignored", metadata: ["vm": "\(name)", "kind": "\(k.prefix(32))"])
            case .message(let m, let session, _):
                guard vm.handshake.accept(m, session: session) else {
                    vm.violations["stale", default: 0] += 1
                    return
                }
                vm.lastGuestFrame = now
                if vm.agent == .silent {
                    vm.agent = .connected
                    log.info("agent heard again", metadata: ["vm": "\(name)"])
                }
                handle(vm, m, now: now)
            }
        }
    }

    /// Limit writes that the kernel took, and backend calls that failed (set-up, counters, a
    /// limit), by kind of backend: `tandem_limit_writes_total`, `tandem_backend_errors_total`.
    var limitWrites: [String: UInt64] = [:]
    var backendErrors: [String: UInt64] = [:]
    func backendFailed(_ vm: VM) { backendErrors[vm.backend.kind, default: 0] += 1 }

    func violation(_ vm: VM, _ kind: String, now: Double) {
        vm.violations[kind, default: 0] += 1
        vm.recentViolations.append(now)
        vm.recentViolations.removeAll { now - $0 > 10 }
        metrics?.channelError(vm.config.name, link: vm.config.link, kind)
        if vm.recentViolations.count >= Self.violationLimit {
            vm.recentViolations.removeAll()
            vm.disconnects += 1
            vm.agent = .disconnected
            vm.handshake.reset()
            vm.report = nil
            vm.channel?.disconnect(for: Self.cutOffSeconds)
            log.warning("guest misbehaving: channel cut off", metadata: ["vm": "\(vm.config.name)", "seconds": "\(Self.cutOffSeconds)", "kind": "\(kind)"])
        }
    }

    func handle(_ vm: VM, _ m: GuestMessage, now: Double) {
        switch m {
        case .hello(let h):
            guard let version = ProtocolVersion.negotiate(h.protocolVersions) else {
                send(vm, .error(ErrorMessage(code: .unsupportedVersion, message: "no common protocol version: host speaks \(ProtocolVersion.supported.map(\.description).joined(separator: ", "))")))
                vm.handshake.reset()   // no session without a version to speak
                return
            }
            vm.agent = .connected
            vm.agentVersion = String(h.agentVersion.prefix(64))
            // The guest re-sends what it still holds; the rest lapses.
            for id in vm.reservations.keys { vm.unconfirmed[id] = now + Self.reconfirmSeconds }
            vm.sentSoft = nil
            vm.sentReservations = nil
            var policy = vm.policy
            if !policy.weight.isFinite { policy.weight = 1 }
            send(vm, .welcome(Welcome(version: version, vm: vm.config.name, policy: policy,
                                       reportIntervalMilliseconds: reportIntervalMilliseconds)))
            // A guest decides how often it says hello: at info once a minute per VM, else debug.
            let level: Logger.Level = now - vm.lastWelcomeLog >= Self.welcomeLogSeconds ? .info : .debug
            if level == .info { vm.lastWelcomeLog = now }
            log.log(level: level, "agent welcomed", metadata: ["vm": "\(vm.config.name)", "agent": "\(h.agentVersion)", "interface": "\(h.interface)"])
        case .demand(let d):
            if reportChanged(vm, reportFresh(vm, now: now) ? vm.report : nil, d) { reactAt[vm.config.link] = reactAt[vm.config.link] ?? now }
            vm.report = d
            vm.reportTime = now
            // The guest still enforces an older allocation: ours was lost on the way. Send it
            // again (after a second, to let one in flight arrive).
            if d.epoch < vm.epoch {
                if vm.staleSince == nil { vm.staleSince = now }
                if let s = vm.staleSince, now - s > 1 { vm.sentSoft = nil; vm.staleSince = nil }
            } else {
                vm.staleSince = nil
            }
        case .reserve(let r):
            if let at = vm.releasedByAdmin[r.id], now - at < Self.adminReleaseSeconds {
                send(vm, .reservation(ReservationReply(id: r.id, granted: false, reason: Self.adminReleaseReason)))
                return
            }
            let reply = admit(vm, r)
            send(vm, .reservation(reply))
            // A grant is in force when the guest has the allocation that carries it: now, not
            // at the next round.
            if reply.granted { reactAt[vm.config.link] = reactAt[vm.config.link] ?? now }
        case .release(let r):
            vm.unconfirmed[r.id] = nil
            vm.releasedByAdmin[r.id] = nil
            if vm.reservations.removeValue(forKey: r.id) != nil {
                persistReservations(vm)
                log.info("reservation released", metadata: ["vm": "\(vm.config.name)", "id": "\(r.id)"])
            }
        case .applied(let a):
            // The guest's word, kept apart: it never hides the host's own backend error.
            vm.guestError = a.error.map { "could not apply epoch \(a.epoch): \($0)" }
        case .ping(let p):
            send(vm, .pong(p))
        case .pong:
            break
        }
    }

    /// Admission (``Admission/decide(_:held:maxHeld:policy:link:others:fairShare:)``); a grant is kept and persisted.
    func admit(_ vm: VM, _ r: ReserveRequest) -> ReservationReply {
        let others = (members[vm.config.link] ?? []).filter { $0 !== vm }.map {
            Admission.Commitment(guarantee: $0.policy.guarantee, reserved: $0.reservations.values.reduce(.zero) { $0 + $1.rate })
        }
        switch Admission.decide(r, held: vm.reservations, maxHeld: Self.maxReservationsPerVM, policy: vm.policy, link: link(vm.config.link), others: others,
                                 fairShare: fairShare(vm.config.name)) {
        case .alreadyHeld:
            vm.unconfirmed[r.id] = nil
            return ReservationReply(id: r.id, granted: true)
        case .refused(let reason):
            return ReservationReply(id: r.id, granted: false, reason: reason)
        case .granted(let g):
            vm.reservations[r.id] = g
            persistReservations(vm)
            log.info("reservation admitted", metadata: ["vm": "\(vm.config.name)", "id": "\(r.id)", "rate": "\(r.rate)", "selector": "\(r.selector)"])
            return ReservationReply(id: r.id, granted: true)
        }
    }

    func persistReservations(_ vm: VM) {
        persisted.reservations[vm.config.name] = vm.reservations.values.sorted { $0.id < $1.id }
        save()
    }

    /// Reservations change at a guest's pace: they are written at most once a second, from
    /// the round (a crash loses at most a second of them; agents re-send what they hold).
    var dirty = false
    var lastSave = -1e9
    func save() { dirty = true }

    /// Writes what changed now (on a clean stop), after a write in flight.
    public func flush() async {
        await inFlight?.value
        if dirty { await writeNow() }
    }

    /// The background write in flight, if any.
    var inFlight: Task<Void, Never>?
    var saving: Bool { inFlight != nil }

    /// Starts a background write of the state as it is now; the round goes on.
    func startSave() {
        guard let writer else { dirty = false; return }
        dirty = false
        let snapshot = persisted
        inFlight = Task {
            let error = await writer.write(snapshot)
            self.inFlight = nil
            self.noteSave(error)
        }
    }

    /// Writes the state and waits for it (a policy change is saved before it is applied). A
    /// failed write leaves it to be written again (from the round, once a second) and is
    /// shown in `status` until a write succeeds; nothing is dropped.
    @discardableResult
    func writeNow() async -> Bool {
        guard let writer else { return true }
        dirty = false
        let error = await writer.write(persisted)
        noteSave(error)
        return error == nil
    }

    func noteSave(_ error: Error?) {
        guard let error else {
            if stateProblem?.hasPrefix(Self.notSavedPrefix) == true {
                log.notice("state saved again", metadata: ["state": "\(store?.path ?? "")"])
                stateProblem = nil
            }
            return
        }
        dirty = true
        if stateProblem != Self.notSavedPrefix + "\(error)" { log.error("state not saved; retrying every second", metadata: ["error": "\(error)"]) }
        stateProblem = Self.notSavedPrefix + "\(error)"
    }
    static let notSavedPrefix = "not saved, retrying: "
    /// What is wrong with state.json (not readable at start, or not writable now), for `status`.
    var stateProblem: String?

    // MARK: admin

    public func setPolicy(vm name: String, weight: Double?, min: BitRate?, max: BitRate??) async throws -> VMPolicy {
        guard let vm = vms[name] else { throw PolicyError.noSuchVM(name, known: order) }
        if case .libvirt = vm.config.origin { throw PolicyError.fromLibvirt(name) }
        var p = vm.policy
        if let weight { p.weight = weight }
        if let min { p.guarantee = min }
        if let max { p.cap = max }
        do { try p.validate(prefix: "") } catch {
            let key = error.field == "guarantee" ? "min" : error.field == "cap" ? "max" : error.field
            throw PolicyError.invalid(key: key, problem: error.problem)
        }
        try await install(p, on: vm, kept: p)
        log.info("policy set", metadata: ["vm": "\(name)", "weight": "\(p.weight)", "min": "\(p.guarantee)", "max": "\(p.cap.map(\.description) ?? "none")"])
        return p
    }

    /// `policy reset`: the VM goes back to its configuration's policy, and state.json no
    /// longer overrides it. Refused, changing nothing, when that policy no longer fits (a
    /// guarantee others took meanwhile, reservations above its min).
    public func resetPolicy(vm name: String) async throws -> PolicyEntry {
        guard let vm = vms[name] else { throw PolicyError.noSuchVM(name, known: order) }
        if case .libvirt = vm.config.origin { throw PolicyError.fromLibvirt(name) }
        if persisted.policies[name] != nil || vm.policy != vm.config.policy {
            try await install(vm.config.policy, on: vm, kept: nil)
            log.info("policy reset to the configuration's", metadata: ["vm": "\(name)", "weight": "\(vm.policy.weight)", "min": "\(vm.policy.guarantee)", "max": "\(vm.policy.cap.map(\.description) ?? "none")"])
        }
        return entry(vm)
    }

    /// Puts policy `p` in force on `vm` once it is checked against the link, the other
    /// guarantees and the VM's reservations, and once state.json keeps `kept` for it (nil:
    /// no runtime policy). Nothing changes when any of that fails.
    func install(_ p: VMPolicy, on vm: VM, kept: VMPolicy?) async throws {
        let name = vm.config.name
        let l = link(vm.config.link)
        if let cap = p.cap, cap > l.capacity { throw PolicyError.capAboveLink(cap: cap, link: l.name, capacity: l.capacity) }
        var book = guaranteesInForce(except: name)
        if let problem = book.admit(name: name, link: l.name, group: vm.config.group, guarantee: p.guarantee) {
            throw PolicyError.guaranteesDoNotFit(problem)
        }
        let reserved = vm.reservations.values.reduce(BitRate.zero) { $0 + $1.rate }
        if reserved > p.guarantee && !l.reserveBeyondGuarantee {
            throw PolicyError.belowReserved(min: p.guarantee, reserved: reserved)
        }
        // Saved first: a policy that could not be kept across a restart is not applied
        // either (nothing half done); the admin is told why.
        let before = persisted.policies[name]
        persisted.policies[name] = kept
        guard await writeNow() else {
            // (What else was waiting to be written stays marked for the retry.)
            persisted.policies[name] = before
            throw PolicyError.notSaved(stateProblem.map { String($0.dropFirst(Self.notSavedPrefix.count)) } ?? "unknown error")
        }
        // (A reload may have released the VM while the write was awaited.)
        guard vms[name] === vm else { throw PolicyError.noSuchVM(name, known: order) }
        vm.policy = p
        fairShares = [:]
        // The guest learns its policy in a welcome: send it again (same session).
        welcomeAgain(vm)
    }

    /// `policy show`: each VM's policy in force (one VM's with `vm`), where it comes from,
    /// and the configuration's when a runtime one overrides it.
    public func policies(vm name: String?) throws -> [PolicyEntry] {
        if let name {
            guard let vm = vms[name] else { throw PolicyError.noSuchVM(name, known: order) }
            return [entry(vm)]
        }
        return order.compactMap { vms[$0] }.map(entry)
    }

    func entry(_ vm: VM) -> PolicyEntry {
        let source: PolicyEntry.Source = if case .libvirt = vm.config.origin { .libvirt } else if persisted.policies[vm.config.name] != nil { .runtime } else { .config }
        return PolicyEntry(vm: vm.config.name, link: vm.config.link, group: vm.config.group, policy: PolicyView(vm.policy), source: source,
                           configured: source == .runtime ? PolicyView(vm.config.policy) : nil)
    }

    /// `reservations list`: what the host holds for each VM (one VM's with `vm`), by id.
    public func reservationList(vm name: String?) throws -> [ReservationEntry] {
        var chosen = order.compactMap { vms[$0] }
        if let name {
            guard let vm = vms[name] else { throw PolicyError.noSuchVM(name, known: order) }
            chosen = [vm]
        }
        return chosen.flatMap { vm in vm.reservations.values.sorted { $0.id < $1.id }.map { reservationEntry(vm, $0) } }
    }

    func reservationEntry(_ vm: VM, _ g: GrantedReservation) -> ReservationEntry {
        ReservationEntry(vm: vm.config.name, id: g.id, rate: g.rate.description, bitsPerSecond: g.rate.bitsPerSecond,
                         selector: g.selector.description, confirmed: vm.unconfirmed[g.id] == nil)
    }

    /// `reservations release`: the host drops a reservation it holds for a VM (a guest that
    /// will not release it, an application gone). The agent is sent a refusal of it (and the
    /// VM's next allocation no longer carries it), and for an hour the guest asking for that
    /// id again is refused: an agent that was away does not get it back by re-sending it.
    /// (Kept in memory: a restart of tandem-host forgets it.)
    static let adminReleaseSeconds = 3600.0
    static let adminReleaseReason = "released by the host's administrator (tandem-host reservations release)"

    public func releaseReservation(vm name: String, id: String, now: Double) throws -> ReservationEntry {
        guard let vm = vms[name] else { throw PolicyError.noSuchVM(name, known: order) }
        guard let g = vm.reservations.removeValue(forKey: id) else {
            throw PolicyError.noSuchReservation(vm: name, id: id, held: vm.reservations.keys.sorted())
        }
        vm.unconfirmed[id] = nil
        persistReservations(vm)
        // The agent is told at once (a refusal of that id drops it, and answers the
        // application if it waits); one that was away and asks for it again is refused too.
        vm.releasedByAdmin = vm.releasedByAdmin.filter { now - $0.value < Self.adminReleaseSeconds }
        vm.releasedByAdmin[id] = now
        send(vm, .reservation(ReservationReply(id: id, granted: false, reason: Self.adminReleaseReason)))
        reactAt[vm.config.link] = reactAt[vm.config.link] ?? now
        log.notice("reservation released by the admin", metadata: ["vm": "\(name)", "id": "\(id)", "rate": "\(g.rate)"])
        return reservationEntry(vm, g)
    }

    /// The guarantees in force (a `policy set`'s included), VM by VM in the file's order,
    /// with what does not fit told to `problem`.
    func guaranteesInForce(except: String? = nil, problem: (String, String) -> Void = { _, _ in }) -> GuaranteeBook {
        var book = GuaranteeBook(links: config.links, groups: config.groups)
        for name in order where name != except {
            guard let v = vms[name], let p = book.admit(name: name, link: v.config.link, group: v.config.group, guarantee: v.policy.guarantee) else { continue }
            problem(name, p)
        }
        return book
    }

    public func fairness() -> [LinkFairness] { fairnessSnapshot() }

    func fairnessSnapshot() -> [LinkFairness] {
        config.links.map { l in
            let rows = order.compactMap { vms[$0] }.filter { $0.config.link == l.name }.map { v in
                LinkFairness.Row(vm: v.config.name, weight: v.policy.weight, min: v.policy.guarantee.bitsPerSecond, max: v.policy.cap?.bitsPerSecond,
                                 demand: v.demand.bitsPerSecond, allocation: (v.applied ?? v.limit).bitsPerSecond, measured: v.measured.bitsPerSecond,
                                 share: Double(v.measured.bitsPerSecond) / Double(l.capacity.bitsPerSecond), agent: v.agent.rawValue,
                                 reserved: v.reservations.values.reduce(BitRate.zero) { $0 + $1.rate }.bitsPerSecond, group: v.config.group)
            }
            let active = rows.filter { $0.measured > l.capacity.bitsPerSecond / 100 }
            let jain = Allocator.jainIndex(active.map { (BitRate(bitsPerSecond: $0.measured), $0.weight) })
            let used = rows.reduce(0) { $0 + Double($1.measured) }
            var table = LinkFairness(link: l.name, capacity: l.capacity.bitsPerSecond, utilisation: used / Double(l.capacity.bitsPerSecond), jain: jain, vms: rows)
            table.addGroups(config.groups.filter { $0.link == l.name })
            return table
        }
    }

    public func status(now: Double) -> HostStatus {
        var s = HostStatus(version: TandemVersion.string, uptime: now - started, links: config.links.map { "\($0.name) \($0.capacity)" },
                   vms: order.compactMap { vms[$0] }.map { v in
                       HostStatus.VM(name: v.config.name, link: v.config.link, backend: v.backend.describe, channel: v.config.channel,
                                     agent: v.agent.rawValue, session: v.handshake.session?.rawValue, limit: v.applied?.bitsPerSecond, epoch: v.epoch,
                                     reservations: v.reservations.count, messages: v.messages, violations: v.violations,
                                     disconnects: v.disconnects, lastError: v.lastError, resets: v.resets,
                                     origin: v.config.origin == .file ? "file" : "libvirt", guestError: v.guestError, repairs: v.repairs)
                   })
        s.state = stateProblem
        return s
    }

    /// The VMs that come from libvirt domains, in order.
    public func libvirtVMs() -> [String] {
        order.filter { name in vms[name].map { $0.config.origin != .file } ?? false }
    }

    /// For tests: the sequence of the VM's report in force, and the reports dropped unread.
    func reportState(_ name: String) -> (sequence: UInt64?, superseded: UInt64)? {
        vms[name].map { ($0.report?.sequence, $0.superseded) }
    }

    /// For tests and the admin API: a VM's limit in force and its reservations.
    public func snapshot(_ name: String) -> (limit: BitRate?, demand: BitRate, measured: BitRate, agent: AgentState, reservations: [GrantedReservation])? {
        guard let v = vms[name] else { return nil }
        return (v.applied, v.demand, v.measured, v.agent, v.reservations.values.sorted { $0.id < $1.id })
    }
}
