import TandemProtocol

/// libvirt's running domains turned into the VMs Tandem manages, beside the file's `[[vm]]`
/// entries. Pure: the file's configuration, the domains (in the order they were first seen)
/// and a way to look devices up on the host in; the configuration in force and the domains
/// left unmanaged (each with a reason naming the domain and the element) out. One domain's
/// problem never touches another VM.
///
/// A domain is Tandem's when it has the agent's channel or Tandem's metadata. Its backend is
/// the one device of it that is on a `[[link]]`: a VF whose PF a link names (`pf`), or a tap
/// whose bridge (or macvtap uplink) a link names (`bridge`; for an `ethernet` tap, the
/// bridge the kernel put it in). A host with a single link that names no `pf` and no
/// `bridge` takes every domain's tap on it. Its policy is its metadata's, the link's
/// defaults for what the metadata leaves out.
public enum LibvirtInventory {
    /// One domain as read from libvirt: its identity and its live XML, read or not.
    public struct Entry: Sendable, Equatable {
        public var uuid: String
        public var name: String
        public var domain: Result<LibvirtDomain, LibvirtXMLError>
        public init(uuid: String, name: String, domain: Result<LibvirtDomain, LibvirtXMLError>) {
            self.uuid = uuid; self.name = name; self.domain = domain
        }
    }

    /// What the host's devices say: a VF's PF and index (sysfs), a tap's bridge.
    public struct Devices: Sendable {
        public var vf: @Sendable (LibvirtDomain.PCIAddress) throws -> (pf: String, vf: UInt32)
        public var master: @Sendable (String) -> String?
        public init(vf: @escaping @Sendable (LibvirtDomain.PCIAddress) throws -> (pf: String, vf: UInt32), master: @escaping @Sendable (String) -> String?) {
            self.vf = vf; self.master = master
        }
    }

    public struct Outcome: Sendable, Equatable {
        /// The file's configuration with the libvirt VMs after its own.
        public var config: HostConfig
        public var unmanaged: [UnmanagedDomain]
        /// Managed VMs whose metadata (or devices) went wrong: their last good policy (or the
        /// device in force) stays, with why.
        public var kept: [UnmanagedDomain] = []
    }

    /// `previous`: the libvirt VMs in force, by domain UUID. A VM in force whose metadata
    /// turns bad keeps its policy from there, one whose new policy does not fit keeps its
    /// old one, and one that gets a second device or channel keeps the one in force: an
    /// operator's mistake does not lift a running VM's limit.
    public static func build(file: HostConfig, entries: [Entry], devices: Devices, previous: [String: HostConfig.VMConfig] = [:]) -> Outcome {
        var unmanaged: [UnmanagedDomain] = []
        var kept: [UnmanagedDomain] = []
        let fileNames = Set(file.vms.map(\.name))
        let catchAll = file.links.count == 1 && file.links[0].pfs.isEmpty && file.links[0].bridges.isEmpty ? file.links[0] : nil

        /// A domain that can be managed, before admission of its guarantee.
        struct Candidate {
            var entry: Entry
            var vm: HostConfig.VMConfig
            var what: String
            var earlier: HostConfig.VMConfig?
            /// Why its earlier policy is used (its metadata is wrong), if it is.
            var keptPolicy: String?
        }
        var candidates: [Candidate] = []

        for entry in entries {
            let domain: LibvirtDomain
            switch entry.domain {
            case .failure(let e):
                unmanaged.append(UnmanagedDomain(domain: entry.name, uuid: entry.uuid, reason: "domain \(entry.name): its XML could not be read: \(e)"))
                continue
            case .success(let d): domain = d
            }
            guard domain.isTandem else { continue }
            func skip(_ reason: String) { unmanaged.append(UnmanagedDomain(domain: entry.name, uuid: entry.uuid, reason: reason)) }
            func keep(_ reason: String) { kept.append(UnmanagedDomain(domain: entry.name, uuid: entry.uuid, reason: reason)) }
            let name = domain.name
            let earlier = previous[entry.uuid].flatMap { $0.name == name ? $0 : nil }
            // A second agent channel beside the one in force: that one stays.
            var channel = domain.channels.first
            var problems = domain.problems
            if domain.channels.count > 1, let ch = earlier?.channel, domain.channels.contains(ch) {
                problems.removeAll { $0.hasPrefix("domain \(name): \(domain.channels.count) channels named") }
                keep("domain \(name): \(domain.channels.count) channels named \(LibvirtDomain.portName) (\(domain.channels.joined(separator: ", "))) (the one in force, \(ch), stays)")
                channel = ch
            }
            let policyProblems = problems.filter { $0.contains("<tandem:") }
            let otherProblems = problems.filter { !$0.contains("<tandem:") }
            if !otherProblems.isEmpty || (!policyProblems.isEmpty && earlier == nil) { skip(problems.joined(separator: "; ")); continue }
            guard !name.isEmpty, name.utf8.count <= 64, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
                skip("domain \(name): <name> is not usable as a Tandem VM name (1 to 64 letters, digits, '-', '_' or '.')")
                continue
            }
            if fileNames.contains(name) {
                skip("domain \(name): <name> is also a [[vm]] in the configuration file: remove the [[vm]] or rename the domain")
                continue
            }

            // The devices that are on a link, and why the others are not.
            var found: [(backend: HostConfig.Backend, link: HostConfig.LinkConfig, what: String)] = []
            var missed: [String] = []
            for address in domain.vfs {
                do {
                    let m = try devices.vf(address)
                    if let link = file.links.first(where: { $0.pfs.contains(m.pf) }) {
                        found.append((.sriov(pf: m.pf, vf: m.vf, setMin: link.setMinRate, devlink: link.devlink), link, "VF \(address) (\(m.pf) vf \(m.vf))"))
                    } else {
                        missed.append("<hostdev> VF \(address) is on PF \(m.pf), which no [[link]] names (pf = \"\(m.pf)\")")
                    }
                } catch {
                    missed.append("<hostdev> VF \(address): \(error)")
                }
            }
            for tap in domain.taps {
                let via = tap.source ?? devices.master(tap.device)
                if let via, let link = file.links.first(where: { $0.bridges.contains(via) || $0.pfs.contains(via) }) {
                    found.append((.tc(interface: tap.device), link, "interface \(tap.device) (on \(via))"))
                } else if let link = catchAll {
                    found.append((.tc(interface: tap.device), link, "interface \(tap.device)"))
                } else {
                    missed.append("<interface type='\(tap.type)'> \(tap.device) is \(via.map { "on \($0)" } ?? "on no bridge"), which no [[link]] names (bridge = ...)")
                }
            }
            guard !found.isEmpty else {
                skip("domain \(name): " + (missed.isEmpty ? "no device Tandem can limit (an <interface> with a <target dev=...>, or a VF)" : missed.joined(separator: "; ")))
                continue
            }
            var chosen = found[0]
            if found.count > 1 {
                let why = "domain \(name): \(found.count) devices on Tandem's links (\(found.map(\.what).joined(separator: ", "))): Tandem limits one per VM"
                // A device hot-plugged beside the one in force does not lift its limit.
                guard let earlier, let same = found.first(where: { $0.backend == earlier.backend }) else { skip(why); continue }
                keep(why + " (the one in force, \(same.what), stays)")
                chosen = same
            }
            let link = chosen.link

            var policy = link.defaults
            if let m = domain.policy {
                if let w = m.weight { policy.weight = w }
                if let g = m.min { policy.guarantee = g }
                if let c = m.max { policy.cap = c }
                // A default cap below the metadata's own guarantee gives way to it.
                if m.max == nil, let c = policy.cap, c < policy.guarantee { policy.cap = nil }
            }
            var group = domain.policy?.group
            var keptPolicy: String?
            let groupProblem = group.flatMap { Self.problem(group: $0, name: name, link: link, groups: file.groups) }
            if let why = policyProblems.isEmpty ? (problem(policy, name: name, link: link) ?? groupProblem) : policyProblems.joined(separator: "; ") {
                guard let earlier, earlier.link == link.name, problem(earlier.policy, name: name, link: link) == nil,
                      earlier.group.flatMap({ Self.problem(group: $0, name: name, link: link, groups: file.groups) }) == nil else { skip(why); continue }
                keptPolicy = why
                policy = earlier.policy
                group = earlier.group
            }
            let vm = HostConfig.VMConfig(name: name, link: link.name, backend: chosen.backend, channel: channel, policy: policy, origin: .libvirt(uuid: entry.uuid), group: group)
            candidates.append(Candidate(entry: entry, vm: vm, what: chosen.what, earlier: earlier, keptPolicy: keptPolicy))
        }

        // Admission, VMs in force first: guarantees (and devices, channels) already granted
        // are not taken away by a domain that came later or a policy raised since. Within a
        // group, the order the domains were first seen.
        func rank(_ c: Candidate) -> Int {
            guard let e = c.earlier else { return 2 }
            return e.policy == c.vm.policy && e.link == c.vm.link && e.group == c.vm.group ? 0 : 1
        }
        var book = GuaranteeBook(links: file.links, groups: file.groups)
        for vm in file.vms { _ = book.admit(vm) }
        var admitted: [Int: HostConfig.VMConfig] = [:]
        var taken = file.vms
        let order = candidates.indices.sorted { (rank(candidates[$0]), $0) < (rank(candidates[$1]), $1) }
        for i in order {
            var c = candidates[i]
            func skip(_ reason: String) { unmanaged.append(UnmanagedDomain(domain: c.entry.name, uuid: c.entry.uuid, reason: reason)) }
            if let other = taken.first(where: { $0.backend.sameDevice(as: c.vm.backend) }) { skip("domain \(c.vm.name): \(c.what) is also VM \(other.name)'s"); continue }
            if let ch = c.vm.channel, let other = taken.first(where: { $0.channel == ch }) { skip("domain \(c.vm.name): <channel> \(ch) is also VM \(other.name)'s"); continue }
            if let problem = book.admit(c.vm) {
                let why = "domain \(c.vm.name): <tandem:policy min=\"\(c.vm.policy.guarantee)\"\(c.vm.group.map { " group=\"\($0)\"" } ?? "")>: \(problem)"
                // A VM in force keeps the policy it had, if that still fits.
                guard let e = c.earlier, e.link == c.vm.link, book.admit(name: e.name, link: e.link, group: e.group, guarantee: e.policy.guarantee) == nil else { skip(why); continue }
                c.keptPolicy = why
                c.vm.policy = e.policy
                c.vm.group = e.group
            }
            if let why = c.keptPolicy {
                kept.append(UnmanagedDomain(domain: c.entry.name, uuid: c.entry.uuid, reason: why + " (its last good policy stays in force)"))
            }
            admitted[i] = c.vm
            taken.append(c.vm)
        }
        var cfg = file
        cfg.vms += candidates.indices.compactMap { admitted[$0] }
        return Outcome(config: cfg, unmanaged: unmanaged, kept: kept)
    }

    /// What is wrong with the group a domain's metadata names: none such, or on another link.
    static func problem(group: String, name: String, link: HostConfig.LinkConfig, groups: [HostConfig.GroupConfig]) -> String? {
        guard let g = groups.first(where: { $0.name == group }) else {
            return "domain \(name): <tandem:policy group=\"\(group)\">: no such [[group]]" + (groups.isEmpty ? "" : " (there are: \(groups.map(\.name).joined(separator: ", ")))")
        }
        guard g.link == link.name else { return "domain \(name): <tandem:policy group=\"\(group)\">: the group is on link \(g.link), the domain's device on \(link.name)" }
        return nil
    }

    /// What is wrong with a policy on its own (the guarantees of the link are checked at
    /// admission).
    static func problem(_ p: VMPolicy, name: String, link: HostConfig.LinkConfig) -> String? {
        do { try p.validate(prefix: "") } catch {
            return "domain \(name): <tandem:policy>: \(error.field == "guarantee" ? "min" : error.field == "cap" ? "max" : error.field) \(error.problem)"
        }
        if let c = p.cap, c > link.capacity { return "domain \(name): <tandem:policy max=\"\(c)\"> is above link \(link.name)'s capacity \(link.capacity)" }
        if p.guarantee > link.capacity { return "domain \(name): <tandem:policy min=\"\(p.guarantee)\"> is above link \(link.name)'s capacity \(link.capacity)" }
        return nil
    }
}

extension HostConfig.Backend {
    /// The same tap, or the same VF of the same PF.
    public func sameDevice(as other: HostConfig.Backend) -> Bool {
        switch (self, other) {
        case (.tc(let a), .tc(let b)): a == b
        case (.sriov(let p1, let v1, _, _), .sriov(let p2, let v2, _, _)): p1 == p2 && v1 == v2
        default: false
        }
    }
}

/// A libvirt domain that has Tandem's channel or metadata and is not managed, with why.
public struct UnmanagedDomain: Codable, Sendable, Equatable {
    public var domain: String
    public var uuid: String
    public var reason: String
    public init(domain: String, uuid: String, reason: String) { self.domain = domain; self.uuid = uuid; self.reason = reason }
}

/// `status`'s view of the libvirt source.
public struct LibvirtStatus: Codable, Sendable, Equatable {
    /// `connecting`, `connected` or `unreachable`.
    public var state: String
    public var uri: String
    /// Why the last connection failed or was lost.
    public var error: String?
    /// Seconds until the next attempt, while unreachable.
    public var retryIn: Double?
    /// Libvirt domains managed now (as VMs), and those left alone with why.
    public var managed: [String]
    public var unmanaged: [UnmanagedDomain]
    /// Managed domains whose metadata is wrong now, kept at their last good policy.
    public var kept: [UnmanagedDomain]
    /// Full resyncs done (the first, and one after each reconnection).
    public var resyncs: UInt64
    public init(state: String, uri: String, error: String? = nil, retryIn: Double? = nil, managed: [String] = [], unmanaged: [UnmanagedDomain] = [], kept: [UnmanagedDomain] = [], resyncs: UInt64 = 0) {
        self.state = state; self.uri = uri; self.error = error; self.retryIn = retryIn; self.managed = managed; self.unmanaged = unmanaged; self.kept = kept; self.resyncs = resyncs
    }
}
