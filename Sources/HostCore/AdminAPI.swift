import Foundation
import TandemProtocol

/// The admin socket's API: one JSON object per line each way.
public struct AdminRequest: Codable, Sendable {
    /// `fairness`, `status`, `policy-set`, `policy-show`, `policy-reset`,
    /// `reservations-list` or `reservations-release`.
    public var op: String
    public var vm: String?
    public var weight: Double?
    /// Rates in tc notation.
    public var min: String?
    public var max: String?
    /// A reservation's id (`reservations-release`).
    public var id: String?
    public init(op: String, vm: String? = nil, weight: Double? = nil, min: String? = nil, max: String? = nil, id: String? = nil) {
        self.op = op; self.vm = vm; self.weight = weight; self.min = min; self.max = max; self.id = id
    }

    /// The operations the socket knows, for its error messages.
    public static let ops = ["fairness", "status", "policy-set", "policy-show", "policy-reset", "reservations-list", "reservations-release"]
}

public struct AdminResponse: Codable, Sendable {
    public var ok: Bool
    public var error: String?
    public var fairness: [LinkFairness]?
    public var status: HostStatus?
    public var policy: PolicyView?
    public var policies: [PolicyEntry]?
    public var reservations: [ReservationEntry]?
    public init(ok: Bool, error: String? = nil, fairness: [LinkFairness]? = nil, status: HostStatus? = nil, policy: PolicyView? = nil,
                policies: [PolicyEntry]? = nil, reservations: [ReservationEntry]? = nil) {
        self.ok = ok; self.error = error; self.fairness = fairness; self.status = status; self.policy = policy
        self.policies = policies; self.reservations = reservations
    }
}

public struct PolicyView: Codable, Sendable, Equatable {
    public var weight: Double
    public var min: String
    public var max: String?
    public init(weight: Double, min: String, max: String?) { self.weight = weight; self.min = min; self.max = max }
    public init(_ p: VMPolicy) { self.init(weight: p.weight, min: p.guarantee.description, max: p.cap?.description) }
}

/// A VM's policy in force (`policy show`) and where it comes from.
public struct PolicyEntry: Codable, Sendable, Equatable {
    public enum Source: String, Codable, Sendable {
        /// host.toml's `[[vm]]`.
        case config
        /// `policy set`, kept in state.json over the configuration's.
        case runtime
        /// The libvirt domain's metadata.
        case libvirt
    }
    public var vm: String
    public var link: String
    public var group: String?
    public var policy: PolicyView
    public var source: Source
    /// The configuration's policy, when a runtime one overrides it (what `policy reset` restores).
    public var configured: PolicyView?
    public init(vm: String, link: String, group: String?, policy: PolicyView, source: Source, configured: PolicyView?) {
        self.vm = vm; self.link = link; self.group = group; self.policy = policy; self.source = source; self.configured = configured
    }
}

/// A reservation the host holds for a VM (`reservations list`).
public struct ReservationEntry: Codable, Sendable, Equatable {
    public var vm: String
    public var id: String
    /// In tc notation, and in bits per second.
    public var rate: String
    public var bitsPerSecond: UInt64
    /// The flows it is for, as the guest asked.
    public var selector: String
    /// False while the guest has not re-sent it since it reconnected (it lapses if it does not).
    public var confirmed: Bool
    public init(vm: String, id: String, rate: String, bitsPerSecond: UInt64, selector: String, confirmed: Bool) {
        self.vm = vm; self.id = id; self.rate = rate; self.bitsPerSecond = bitsPerSecond; self.selector = selector; self.confirmed = confirmed
    }
}

/// One link's fairness table. Rates are bits per second.
public struct LinkFairness: Codable, Sendable {
    public struct Row: Codable, Sendable {
        public var vm: String
        public var weight: Double
        public var min: UInt64
        public var max: UInt64?
        public var demand: UInt64
        /// The limit in force.
        public var allocation: UInt64
        public var measured: UInt64
        /// measured / capacity.
        public var share: Double
        /// `connected`, `handshaking`, `silent`, `absent`, `none` (no channel configured),
        /// `disconnected` (cut off for misbehaving).
        public var agent: String
        public var reserved: UInt64
        /// The VM's `[[group]]`, if any.
        public var group: String?
        public init(vm: String, weight: Double, min: UInt64, max: UInt64?, demand: UInt64, allocation: UInt64, measured: UInt64, share: Double, agent: String, reserved: UInt64, group: String? = nil) {
            self.vm = vm; self.weight = weight; self.min = min; self.max = max; self.demand = demand; self.allocation = allocation; self.measured = measured; self.share = share; self.agent = agent; self.reserved = reserved
            self.group = group
        }
    }

    /// A `[[group]]` on the link: its policy and its VMs' figures added up.
    public struct GroupRow: Codable, Sendable, Equatable {
        public var group: String
        public var weight: Double
        public var min: UInt64
        public var max: UInt64?
        public var demand: UInt64
        public var allocation: UInt64
        public var measured: UInt64
        public var share: Double
        public var vms: Int
        /// Jain's index among the group's VMs with traffic, by weight; nil if none.
        public var jain: Double?
        public init(group: String, weight: Double, min: UInt64, max: UInt64?, demand: UInt64, allocation: UInt64, measured: UInt64, share: Double, vms: Int, jain: Double?) {
            self.group = group; self.weight = weight; self.min = min; self.max = max; self.demand = demand; self.allocation = allocation
            self.measured = measured; self.share = share; self.vms = vms; self.jain = jain
        }
    }
    public var link: String
    public var capacity: UInt64
    public var utilisation: Double
    /// Jain's index over the VMs with demand, rates normalised by weight; nil if none.
    public var jain: Double?
    public var vms: [Row]
    /// The link's groups (nil when it has none).
    public var groups: [GroupRow]?
    /// Jain's index at the first level: among the groups and the VMs in none that have
    /// traffic, each by its weight; nil without groups.
    public var jainGroups: Double?
    public init(link: String, capacity: UInt64, utilisation: Double, jain: Double?, vms: [Row], groups: [GroupRow]? = nil, jainGroups: Double? = nil) {
        self.link = link; self.capacity = capacity; self.utilisation = utilisation; self.jain = jain; self.vms = vms
        self.groups = groups; self.jainGroups = jainGroups
    }

    /// The group rows and the two levels' Jain indexes, from the VM rows and the link's
    /// groups: what `fairness` shows. A VM has traffic when it sends more than 1% of the link.
    public mutating func addGroups(_ groups: [HostConfig.GroupConfig]) {
        guard !groups.isEmpty else { return }
        let threshold = capacity / 100
        let active = { (r: Row) in r.measured > threshold }
        var rows: [GroupRow] = []
        var parties: [(BitRate, Double)] = []
        for g in groups {
            let members = vms.filter { $0.group == g.name }
            let measured = members.reduce(UInt64(0)) { $0 + $1.measured }
            rows.append(GroupRow(group: g.name, weight: g.weight, min: g.guarantee.bitsPerSecond, max: g.cap?.bitsPerSecond,
                                 demand: members.reduce(0) { $0 + $1.demand }, allocation: members.reduce(0) { $0 + $1.allocation },
                                 measured: measured, share: Double(measured) / Double(capacity), vms: members.count,
                                 jain: Allocator.jainIndex(members.filter(active).map { (BitRate(bitsPerSecond: $0.measured), $0.weight) })))
            if measured > capacity / 100 { parties.append((BitRate(bitsPerSecond: measured), g.weight)) }
        }
        let named = Set(groups.map(\.name))
        for r in vms where (r.group.map { !named.contains($0) } ?? true) && active(r) { parties.append((BitRate(bitsPerSecond: r.measured), r.weight)) }
        self.groups = rows
        jainGroups = Allocator.jainIndex(parties)
    }
}

public struct HostStatus: Codable, Sendable {
    public struct VM: Codable, Sendable {
        public var name: String
        public var link: String
        public var backend: String
        public var channel: String?
        public var agent: String
        public var session: String?
        public var limit: UInt64?
        public var epoch: UInt64
        public var reservations: Int
        public var messages: UInt64
        public var violations: [String: UInt64]
        public var disconnects: UInt64
        public var lastError: String?
        public var resets: UInt64
        /// `file` (a `[[vm]]`) or `libvirt` (a running domain).
        public var origin: String?
        /// What the guest's agent last said it could not apply (its word, apart from
        /// `lastError`, which is the host's own).
        public var guestError: String?
        /// Times the VM's backend was found changed by someone else (a tap re-created, a
        /// class or filter deleted) and put back.
        public var repairs: UInt64?
        public init(name: String, link: String, backend: String, channel: String?, agent: String, session: String?, limit: UInt64?, epoch: UInt64, reservations: Int, messages: UInt64, violations: [String: UInt64], disconnects: UInt64, lastError: String?, resets: UInt64, origin: String? = nil, guestError: String? = nil, repairs: UInt64? = nil) {
            self.name = name; self.link = link; self.backend = backend; self.channel = channel; self.agent = agent; self.session = session; self.limit = limit; self.epoch = epoch; self.reservations = reservations; self.messages = messages; self.violations = violations; self.disconnects = disconnects; self.lastError = lastError; self.resets = resets; self.origin = origin; self.guestError = guestError
            self.repairs = repairs
        }
    }
    public var version: String
    public var uptime: Double
    public var links: [String]
    public var vms: [VM]
    /// The libvirt source, when `[libvirt]` is configured.
    public var libvirt: LibvirtStatus?
    /// What is wrong with state.json, if anything (unreadable at start and moved aside, or
    /// not writable now and retried).
    public var state: String?
    public init(version: String, uptime: Double, links: [String], vms: [VM], libvirt: LibvirtStatus? = nil) {
        self.version = version; self.uptime = uptime; self.links = links; self.vms = vms; self.libvirt = libvirt
    }
}
