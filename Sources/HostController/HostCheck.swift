import Foundation
import HostCore
import Netlink
import TandemProtocol
import TandemTransport

/// `tandem-host check`: the host as it is, against the configuration, before (or while)
/// tandem-host runs. What it finds per VM: its device is there; nothing else acts on a tap's
/// ingress (where Tandem limits a tap VM's sending: a policer there, from libvirt's
/// `<bandwidth><outbound>` or Neutron's QoS, acts before Tandem and is silently bypassed or
/// doubled); a PF has the VF; the driver takes a VF rate (written and read back on a VF no VM
/// uses, then put back); the channel's socket is there and answers.
///
/// It changes nothing but the one rate it writes on an unused VF, which it puts back.
public enum HostCheck {
    public enum Status: String, Codable, Sendable, Comparable {
        case ok, skip, warn, fail
        public static func < (a: Status, b: Status) -> Bool { order(a) < order(b) }
        static func order(_ s: Status) -> Int { switch s { case .ok: 0; case .skip: 1; case .warn: 2; case .fail: 3 } }
    }

    public struct Finding: Codable, Sendable, Equatable {
        /// The VM, or the PF for a per-device check; nil for the host as a whole.
        public var subject: String?
        public var check: String
        public var status: Status
        public var detail: String
        public init(_ subject: String?, _ check: String, _ status: Status, _ detail: String) {
            self.subject = subject; self.check = check; self.status = status; self.detail = detail
        }
    }

    /// Every check for `config`'s VMs, in their order; `sysfs` is where the PFs' SR-IOV files are.
    public static func run(_ config: HostConfig, netlink: RouteSocket, sysfs: String = "/sys") async -> [Finding] {
        var out: [Finding] = []
        var rateChecked: Set<String> = []
        for vm in config.vms {
            switch vm.backend {
            case .tc(let interface):
                out += await tap(vm.name, interface: interface, netlink: netlink)
            case .sriov(let pf, let vf, _, let devlink):
                out += await virtualFunction(vm.name, pf: pf, vf: vf, devlink: devlink, netlink: netlink, sysfs: sysfs)
                if !devlink && !rateChecked.contains(pf) && out.last?.status != .fail {
                    rateChecked.insert(pf)
                    let used = Set(config.vms.compactMap { v -> UInt32? in if case .sriov(pf, let n, _, _) = v.backend { n } else { nil } })
                    out.append(await rateWrite(pf: pf, used: used, netlink: netlink, sysfs: sysfs))
                }
            }
            if let channel = vm.channel { out.append(Self.channel(vm.name, path: channel)) }
        }
        if config.libvirt != nil {
            out.append(Finding(nil, "libvirt", .skip, "domains from libvirt are looked at as they start: tandem-host status lists them, with why any is left out"))
        }
        return out
    }

    /// A tap (or veth, macvtap) VM: the interface, and what else is on its ingress.
    static func tap(_ vm: String, interface: String, netlink: RouteSocket) async -> [Finding] {
        let index: Int32
        do { index = try await netlink.index(of: interface) } catch {
            return [Finding(vm, "interface", .fail, "no interface '\(interface)' (\(error)); a VM that is not running has no tap yet")]
        }
        var out = [Finding(vm, "interface", .ok, "\(interface) is there (ifindex \(index))")]
        let ifb = (try? await netlink.index(of: "tdm-" + TCBackend.hash8(vm)))
        let filters: [FilterState]
        do {
            let hasIngress = try await netlink.qdiscs(ifindex: index).contains { $0.parent == .ingressParent }
            filters = hasIngress ? try await netlink.filters(ifindex: index, parent: .ingress) : []
        } catch {
            return out + [Finding(vm, "ingress", .fail, "\(interface)'s ingress not readable: \(error)")]
        }
        // Tandem's own: the u32 redirect to the VM's IFB at its priority (and u32's table
        // entry, which carries no action).
        let foreign = filters.filter { f in
            !(f.priority == HostTree.redirectPriority && f.kind == "u32" && (f.redirectIfindex == nil || f.redirectIfindex == ifb))
        }
        if foreign.isEmpty {
            out.append(Finding(vm, "ingress", .ok, filters.isEmpty ? "nothing on \(interface)'s ingress" : "only Tandem's redirect on \(interface)'s ingress"))
        } else {
            let what = Set(foreign.map { "prio \($0.priority) \($0.kind)" }).sorted().joined(separator: ", ")
            out.append(Finding(vm, "ingress", .fail, "\(interface)'s ingress has filters that are not Tandem's (\(what)): a policer or redirect there (libvirt <bandwidth><outbound>, Neutron QoS) acts on what the VM sends before Tandem's limit, or instead of it. Remove it (libvirt: the domain's <bandwidth>; by hand: tc filter del dev \(interface) ingress prio N)"))
        }
        return out
    }

    /// An SR-IOV VM: the PF, and the VF among its VFs.
    static func virtualFunction(_ vm: String, pf: String, vf: UInt32, devlink: Bool, netlink: RouteSocket, sysfs: String) async -> [Finding] {
        do { _ = try await netlink.index(of: pf) } catch {
            return [Finding(vm, "pf", .fail, "no interface '\(pf)' (\(error))")]
        }
        let numvfs = (try? String(contentsOfFile: "\(sysfs)/class/net/\(pf)/device/sriov_numvfs", encoding: .utf8)).flatMap { UInt32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        guard let numvfs else {
            return [Finding(vm, "pf", .fail, "\(pf) has no SR-IOV (\(sysfs)/class/net/\(pf)/device/sriov_numvfs is not there): not a PF, or its driver does not do SR-IOV")]
        }
        guard vf < numvfs else {
            return [Finding(vm, "pf", .ok, "\(pf) is there"), Finding(vm, "vf", .fail, "vf \(vf), but \(pf) has \(numvfs) VFs (echo N > \(sysfs)/class/net/\(pf)/device/sriov_numvfs)")]
        }
        var out = [Finding(vm, "pf", .ok, "\(pf) is there, \(numvfs) VFs")]
        if devlink {
            out.append(Finding(vm, "vf", .ok, "vf \(vf) of \(numvfs); its devlink rate leaf is looked up when tandem-host starts"))
        } else if let v = (try? await netlink.virtualFunctions(of: pf, withStats: false))?.first(where: { $0.index == vf }) {
            out.append(Finding(vm, "vf", .ok, "vf \(vf): max_tx_rate \(v.maxTxRate == .zero ? "none" : v.maxTxRate.description), mac \(v.mac)"))
        } else {
            out.append(Finding(vm, "vf", .fail, "\(pf) does not list vf \(vf) (ip link show \(pf))"))
        }
        return out
    }

    /// Whether the PF's driver takes a VF rate: written on a VF that nothing can be using
    /// (no VM of the configuration names it, it has no rate, and it is bound on the host as a
    /// netdev that is down: a VF given to a guest is bound to vfio-pci and has none), read
    /// back, and put back to none on every path; a put-back that fails is a failure.
    static func rateWrite(pf: String, used: Set<UInt32>, netlink: RouteSocket, sysfs: String) async -> Finding {
        guard let vfs = try? await netlink.virtualFunctions(of: pf, withStats: false) else {
            return Finding(pf, "rate", .skip, "the VFs of \(pf) could not be read")
        }
        func idleOnHost(_ vf: UInt32) -> Bool {
            // (A device with no PCI function per VF, such as netdevsim, cannot give one to a
            // guest through vfio: only the other tests apply.)
            guard FileManager.default.fileExists(atPath: "\(sysfs)/class/net/\(pf)/device/virtfn\(vf)") else { return true }
            let dir = "\(sysfs)/class/net/\(pf)/device/virtfn\(vf)/net"
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir), let name = names.first,
                  let flags = (try? String(contentsOfFile: "\(dir)/\(name)/flags", encoding: .utf8)).flatMap({ UInt32($0.trimmingCharacters(in: .whitespacesAndNewlines).dropFirst(2), radix: 16) })
            else { return false }
            return flags & 1 == 0   // IFF_UP clear
        }
        guard let spare = vfs.first(where: { !used.contains($0.index) && $0.maxTxRate == .zero && $0.minTxRate == .zero && idleOnHost($0.index) }) else {
            return Finding(pf, "rate", .skip, "no VF of \(pf) is free to try a rate on (each is named by a VM, has a rate, or is given to a guest or up on the host); the first limit tandem-host writes tells")
        }
        let probe = BitRate.mbit(100)
        var result: Finding
        do {
            try await netlink.setVFRate(pf: pf, vf: spare.index, max: probe)
            let back = try? await netlink.virtualFunctions(of: pf, withStats: false).first { $0.index == spare.index }?.maxTxRate
            result = back == probe
                ? Finding(pf, "rate", .ok, "the driver takes a VF rate (\(probe) written on idle vf \(spare.index), read back, put back to none)")
                : Finding(pf, "rate", .fail, "vf \(spare.index): wrote max_tx_rate \(probe), read back \(back.map { $0.description } ?? "nothing"): the driver does not keep VF rates")
        } catch {
            return Finding(pf, "rate", .fail, "vf \(spare.index): max_tx_rate refused: \(error) (in switchdev mode use backend = \"devlink\")")
        }
        do { try await netlink.setVFRate(pf: pf, vf: spare.index, max: .zero) } catch {
            result = Finding(pf, "rate", .fail, "vf \(spare.index): the rate tried (\(probe)) could not be put back to none: \(error); ip link set \(pf) vf \(spare.index) max_tx_rate 0")
        }
        return result
    }

    /// The channel's socket: there, a socket, and taking connections (QEMU serves it while the
    /// VM runs). Connected without blocking: QEMU listens with a backlog of one, and while
    /// tandem-host holds the channel a connection waits; that is said, not waited on.
    static func channel(_ vm: String, path: String) -> Finding {
        var st = stat()
        guard lstat(path, &st) == 0 else {
            return Finding(vm, "channel", .warn, "\(path) is not there: QEMU makes it when the VM starts with the channel (deploy/libvirt/); until then the VM has no agent")
        }
        guard (st.st_mode & S_IFMT) == S_IFSOCK else { return Finding(vm, "channel", .fail, "\(path) is not a socket") }
        switch UnixSocket.probe(path) {
        case 0: return Finding(vm, "channel", .ok, "\(path) takes connections")
        case EAGAIN: return Finding(vm, "channel", .ok, "\(path) is there, and another client holds it (tandem-host, if it runs)")
        case let e: return Finding(vm, "channel", .warn, "\(path) does not answer (\(String(cString: strerror(e)))): the VM is not running")
        }
    }
}
