import TandemProtocol

/// The guarantees promised on each link, kept as VMs are admitted: a group's `min` is held
/// on its link as a whole (whether its VMs want it or not) and its VMs' own `min`s come out
/// of it; a VM in no group holds its `min` on the link itself. Pure; shared by the
/// configuration's check, `policy set` and libvirt's admission, so all three say the same.
public struct GuaranteeBook: Sendable {
    let capacity: [String: BitRate]
    let groups: [String: HostConfig.GroupConfig]
    /// Held on each link: the groups' mins and the ungrouped VMs' admitted so far.
    public private(set) var onLink: [String: BitRate] = [:]
    /// Of each group's min, what its admitted VMs hold.
    public private(set) var inGroup: [String: BitRate] = [:]
    /// Who holds what, by link and by group, for messages.
    var holders: [String: [String]] = [:]
    /// What is wrong with the groups themselves (their mins above their link), if anything.
    public let problem: String?

    public init(links: [HostConfig.LinkConfig], groups: [HostConfig.GroupConfig]) {
        capacity = Dictionary(links.map { ($0.name, $0.capacity) }, uniquingKeysWith: { a, _ in a })
        self.groups = Dictionary(groups.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var problem: String?
        for g in groups {
            onLink[g.link, default: .zero] = onLink[g.link, default: .zero] + g.guarantee
            if g.guarantee > .zero { holders["link " + g.link, default: []].append("group \(g.name) \(g.guarantee)") }
        }
        for (link, held) in onLink.sorted(by: { $0.key < $1.key }) where held > capacity[link] ?? .zero {
            let named = groups.filter { $0.link == link }.map { "\($0.name) \($0.guarantee)" }.joined(separator: ", ")
            problem = problem ?? "the mins of link \(link)'s groups add up to \(held) (\(named)), more than its capacity \(capacity[link] ?? .zero)"
        }
        self.problem = problem
    }

    /// Admits a VM's guarantee, or says why it does not fit (and holds nothing).
    public mutating func admit(_ vm: HostConfig.VMConfig) -> String? {
        admit(name: vm.name, link: vm.link, group: vm.group, guarantee: vm.policy.guarantee)
    }

    public mutating func admit(name: String, link: String, group: String?, guarantee: BitRate) -> String? {
        if let group {
            guard let g = groups[group] else { return "group '\(group)' is not a [[group]]" }
            guard g.link == link else { return "group '\(group)' is on link \(g.link), the VM on \(link)" }
            let held = inGroup[group, default: .zero]
            let who = holders["group " + group, default: []] + ["\(name) \(guarantee)"]
            if held + guarantee > g.guarantee {
                return "min \(guarantee) would bring the mins of group \(group)'s VMs to \(held + guarantee) (\(who.joined(separator: ", "))), more than the group's min \(g.guarantee)"
            }
            inGroup[group] = held + guarantee
            if guarantee > .zero { holders["group " + group] = who }
            return nil
        }
        let cap = capacity[link] ?? .zero
        let held = onLink[link, default: .zero]
        let who = holders["link " + link, default: []] + ["\(name) \(guarantee)"]
        if held + guarantee > cap {
            return "min \(guarantee) would bring link \(link)'s guarantees to \(held + guarantee) (\(who.joined(separator: ", "))), more than its capacity \(cap)"
        }
        onLink[link] = held + guarantee
        if guarantee > .zero { holders["link " + link] = who }
        return nil
    }
}
