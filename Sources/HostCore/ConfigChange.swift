import TandemProtocol

/// What a reload changes: the VMs to release, to take on, and to keep with a new policy.
/// Pure: `tandem-host` computes it from the configuration in force and the file as it is now,
/// and applies it without touching the VMs it does not name.
public struct ConfigChange: Sendable, Equatable {
    /// VMs gone from the file: released (their limits lifted, their channels closed).
    public var removed: [String] = []
    /// VMs new in the file, in the file's order: set up and limited within a round.
    public var added: [HostConfig.VMConfig] = []
    /// VMs whose backend, link, channel or origin (a `[[vm]]` now a libvirt domain, or back)
    /// changed: their state kept, what changed set up again.
    public var replaced: [HostConfig.VMConfig] = []
    /// VMs whose policy (or group) alone changed: kept as they are, the new policy applied.
    public var repoliced: [HostConfig.VMConfig] = []
    /// Groups new, gone or changed (weight, min, max, link): taken from the next round.
    public var regrouped: [String] = []
    /// Links whose capacity or admission rule changed.
    public var relinked: [HostConfig.LinkConfig] = []
    /// `[controller]` keys that changed: they take effect only at a restart.
    public var needsRestart: [String] = []
    /// `step` or `soft_limit` changed: taken as they are, from the next round.
    public var tuned = false

    public var isEmpty: Bool {
        removed.isEmpty && added.isEmpty && replaced.isEmpty && repoliced.isEmpty && relinked.isEmpty && regrouped.isEmpty && needsRestart.isEmpty && !tuned
    }

    public init(from old: HostConfig, to new: HostConfig) {
        let before = Dictionary(old.vms.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let after = Set(new.vms.map(\.name))
        removed = old.vms.map(\.name).filter { !after.contains($0) }
        for vm in new.vms {
            guard let was = before[vm.name] else { added.append(vm); continue }
            if vm.needsOtherBackend(than: was) || was.link != vm.link || was.channel != vm.channel || was.origin != vm.origin {
                replaced.append(vm)
            } else if was.policy != vm.policy || was.group != vm.group {
                repoliced.append(vm)
            }
        }
        let groupsBefore = Dictionary(old.groups.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let groupsAfter = Dictionary(new.groups.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        regrouped = Set(groupsBefore.keys).union(groupsAfter.keys).filter { groupsBefore[$0] != groupsAfter[$0] }.sorted()
        let links = Dictionary(old.links.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        relinked = new.links.filter { l in links[l.name].map { $0 != l } ?? true }
        let (a, b) = (old.controller, new.controller)
        if a.interval != b.interval { needsRestart.append("interval") }
        if a.adminSocket != b.adminSocket { needsRestart.append("admin_socket") }
        if a.stateDir != b.stateDir { needsRestart.append("state_dir") }
        if a.metrics != b.metrics { needsRestart.append("metrics") }
        tuned = a.step != b.step || a.softFraction != b.softFraction
    }
}
