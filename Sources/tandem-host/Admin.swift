import ArgumentParser
import Foundation
import HostController
import TandemProtocol
import HostCore
import TandemDaemon
import TandemTransport
import Netlink

/// How the admin commands find the controller's socket.
struct AdminOptions: ParsableArguments {
    @Option(name: .long, help: "The controller's admin socket.")
    var adminSocket: String?

    @Option(name: .long, help: "Read the admin socket's path from this configuration (default: /etc/tandem/host.toml if present, else /run/tandem/host.sock).")
    var config: String?

    func socketPath() throws -> String {
        if let adminSocket { return adminSocket }
        if let config {
            do { return try HostConfig.load(path: config).controller.adminSocket } catch { throw CommandFailure("\(error)") }
        }
        // As `run` does: the default configuration, if there is one, names the socket.
        if let c = try? HostConfig.load(path: "/etc/tandem/host.toml") { return c.controller.adminSocket }
        return HostConfig.Controller().adminSocket
    }

    func call(_ r: AdminRequest) throws -> AdminResponse {
        let path = try socketPath()
        let c: LineClient
        do { c = try LineClient(path: path, what: "tandem-host") } catch {
            throw CommandFailure("\(error). Is tandem-host running? (--admin-socket PATH or --config FILE name another socket)")
        }
        let resp = try c.call(r, as: AdminResponse.self)
        guard resp.ok else { throw CommandFailure(resp.error ?? "failed") }
        return resp
    }
}

func printJSON<T: Encodable>(_ v: T) throws {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try enc.encode(v), as: UTF8.self))
}

/// Compact JSON on one line (for `--watch --json`), flushed at once.
func printJSONLine<T: Encodable>(_ v: T) throws {
    let enc = JSONEncoder()
    enc.outputFormatting = [.sortedKeys]
    print(String(decoding: try enc.encode(v), as: UTF8.self))
    fflush(nil)   // (every stream: stdout is not concurrency-safe to name)
}

/// A line of `fairness --watch --json`.
struct FairnessSample: Encodable {
    /// When it was read, ISO 8601 in UTC.
    var time: String
    var links: [LinkFairness]
}

func renderFairness(_ links: [LinkFairness]) -> String { FairnessTable.render(links) }

func rate(_ bps: UInt64) -> String { BitRate(bitsPerSecond: bps).rounded }

extension TandemHost {
    struct Fairness: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show each VM's weight, min, max, demand, allocation, measured rate, share of the link, agent state, and Jain's index.",
            discussion: "Jain's index is over the VMs that send (more than 1% of the link), rates divided by weight: 1 is fair.")
        @Flag(name: .long, help: "Refresh every second until interrupted (with --json: one JSON object a line, {\"time\", \"links\"}).") var watch = false
        @Flag(name: .long, help: "Print as JSON.") var json = false
        @OptionGroup var admin: AdminOptions

        func run() async throws {
            repeat {
                let r = try admin.call(AdminRequest(op: "fairness"))
                if json && watch {
                    // One object a line, with its time, for scripts that follow it.
                    try printJSONLine(FairnessSample(time: ISO8601DateFormatter().string(from: Date()), links: r.fairness ?? []))
                } else if json { try printJSON(r.fairness ?? []) } else {
                    if watch { print("\u{1B}[H\u{1B}[2J", terminator: "") }
                    print(renderFairness(r.fairness ?? []), terminator: "")
                }
                if watch { try await Task.sleep(for: .seconds(1)) }
            } while watch
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show links, backends, channels and errors.")
        @Flag(name: .long, help: "Print as JSON.") var json = false
        @OptionGroup var admin: AdminOptions

        func run() async throws {
            guard let s = try admin.call(AdminRequest(op: "status")).status else { throw CommandFailure("no status") }
            if json { try printJSON(s); return }
            print("tandem-host \(s.version), up \(Int(s.uptime))s; links: \(s.links.joined(separator: ", "))")
            if let st = s.state { print("state: \(st)") }
            if let l = s.libvirt {
                var line = "libvirt \(l.uri): \(l.state)"
                if let e = l.error { line += " (\(e))" }
                if let r = l.retryIn { line += ", retrying in \(String(format: "%.1f", r))s; limits in force stay" }
                print(line + "; \(l.managed.count) domains managed, \(l.unmanaged.count) not")
                for u in l.unmanaged { print("    unmanaged: \(u.reason)") }
                for u in l.kept { print("    metadata refused: \(u.reason)") }
            }
            for v in s.vms {
                let from = v.origin == "libvirt" ? " (libvirt)" : ""
                print("\(v.name)\(from): \(v.backend), link \(v.link), limit \(v.limit.map(rate) ?? "not set"), agent \(v.agent)\(v.channel.map { " on \($0)" } ?? "")")
                print("    epoch \(v.epoch), reservations \(v.reservations), messages \(v.messages), disconnects \(v.disconnects), counter resets \(v.resets), repairs \(v.repairs ?? 0)")
                if !v.violations.isEmpty { print("    refused: " + v.violations.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")) }
                if let e = v.lastError { print("    error: \(e)") }
                if let e = v.guestError { print("    guest says: \(e)") }
            }
        }
    }

    struct Policy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show or change VM policy at runtime (kept across restarts).", subcommands: [Show.self, Set.self, Reset.self])

        struct Show: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Show each VM's weight, guarantee (min) and cap (max), and where it comes from.",
                discussion: "SOURCE is config (host.toml), runtime (policy set, kept in state.json over the file's; policy reset goes back) or libvirt (the domain's metadata).")
            @Argument(help: "One VM's name (default: every VM).") var vm: String?
            @Flag(name: .long, help: "Print as JSON.") var json = false
            @OptionGroup var admin: AdminOptions

            func run() async throws {
                let entries = try admin.call(AdminRequest(op: "policy-show", vm: vm)).policies ?? []
                if json { try printJSON(entries); return }
                var rows = [["VM", "LINK", "GROUP", "WEIGHT", "MIN", "MAX", "SOURCE", "CONFIGURED"]]
                for e in entries {
                    rows.append([e.vm, e.link, e.group ?? "-", String(format: "%g", e.policy.weight), e.policy.min, e.policy.max ?? "none", e.source.rawValue,
                                 e.configured.map { "weight \(String(format: "%g", $0.weight)), min \($0.min), max \($0.max ?? "none")" } ?? "-"])
                }
                print(renderTable(rows), terminator: "")
            }
        }

        struct Reset: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Put a VM back on its configuration's policy (drops what policy set kept in state.json).",
                discussion: "Refused, changing nothing, when the configuration's policy no longer fits (a guarantee given to another VM meanwhile, or reservations above its min).")
            @Argument(help: "The VM's name.") var vm: String
            @Flag(name: .long, help: "Print as JSON.") var json = false
            @OptionGroup var admin: AdminOptions

            func run() async throws {
                guard let e = try admin.call(AdminRequest(op: "policy-reset", vm: vm)).policies?.first else { throw CommandFailure("no policy in the answer") }
                if json { try printJSON(e) } else { print("\(e.vm): weight \(String(format: "%g", e.policy.weight)), min \(e.policy.min), max \(e.policy.max ?? "none") (from the configuration)") }
            }
        }

        struct Set: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Set a VM's weight, guarantee (--min) or cap (--max).")
            @Argument(help: "The VM's name.") var vm: String
            @Option(name: .long, help: "Weight, above 0.") var weight: Double?
            @Option(name: .long, help: "Guarantee, e.g. 100mbit.") var min: String?
            @Option(name: .long, help: "Cap, e.g. 1gbit, or none.") var max: String?
            @Flag(name: .long, help: "Print as JSON.") var json = false
            @OptionGroup var admin: AdminOptions

            func validate() throws {
                if weight == nil && min == nil && max == nil { throw ValidationError("give at least one of --weight, --min, --max") }
                if let w = weight, !(w > 0 && w <= 10_000) { throw ValidationError("--weight \(w) must be above 0 and at most 10000") }
                if let m = min { do { _ = try BitRate(parsing: m) } catch { throw ValidationError("--min: \(error)") } }
                if let m = max, m != "none" { do { _ = try BitRate(parsing: m) } catch { throw ValidationError("--max: \(error)") } }
            }

            func run() async throws {
                let r = try admin.call(AdminRequest(op: "policy-set", vm: vm, weight: weight, min: min, max: max))
                guard let p = r.policy else { throw CommandFailure("no policy in the answer") }
                if json { try printJSON(p) } else { print("\(vm): weight \(String(format: "%g", p.weight)), min \(p.min), max \(p.max ?? "none")") }
            }
        }
    }
}

/// Columns padded to their widest cell, two spaces apart.
func renderTable(_ rows: [[String]]) -> String {
    let widths = rows[0].indices.map { i in rows.map { $0[i].count }.max() ?? 0 }
    return rows.map { row in
        let line = row.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ")
        return String(line.reversed().drop { $0 == " " }.reversed()) + "\n"
    }.joined()
}

extension TandemHost {
    struct Reservations: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List or release the bandwidth reservations the host holds for VMs.", subcommands: [List.self, Release.self])

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "List reservations: VM, id, rate, flows, and whether the guest confirmed it since it reconnected.")
            @Argument(help: "One VM's name (default: every VM).") var vm: String?
            @Flag(name: .long, help: "Print as JSON.") var json = false
            @OptionGroup var admin: AdminOptions

            func run() async throws {
                let list = try admin.call(AdminRequest(op: "reservations-list", vm: vm)).reservations ?? []
                if json { try printJSON(list); return }
                if list.isEmpty { print(vm.map { "\($0) holds no reservation" } ?? "no reservations"); return }
                var rows = [["VM", "ID", "RATE", "FLOWS", "CONFIRMED"]]
                for r in list { rows.append([r.vm, r.id, r.rate, r.selector, r.confirmed ? "yes" : "no (lapses unless the guest re-sends it)"]) }
                print(renderTable(rows), terminator: "")
            }
        }

        struct Release: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Release a reservation the host holds for a VM (one its guest does not release).",
                discussion: "The VM's next allocation no longer carries it; the guest's agent drops it then.")
            @Argument(help: "The VM's name.") var vm: String
            @Argument(help: "The reservation's id (see reservations list).") var id: String
            @Flag(name: .long, help: "Print as JSON.") var json = false
            @OptionGroup var admin: AdminOptions

            func run() async throws {
                guard let r = try admin.call(AdminRequest(op: "reservations-release", vm: vm, id: id)).reservations?.first else { throw CommandFailure("no reservation in the answer") }
                if json { try printJSON(r) } else { print("released \(r.id) on \(r.vm) (\(r.rate), \(r.selector))") }
            }
        }
    }
}

extension TandemHost {
    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Look at the host as it is against the configuration: devices, what else is on a tap's ingress, VFs, whether the driver takes a VF rate, channels.",
            discussion: """
                Per VM: its tap (or veth) is there and nothing but Tandem's redirect is on its ingress (a policer there, \
                from libvirt's <bandwidth><outbound> or Neutron's QoS, acts before Tandem's limit or instead of it); its \
                PF has SR-IOV and the VF; the PF's driver takes a VF rate (written, read back and put back on a VF no VM \
                uses, or skipped saying why); its channel's socket answers. Changes nothing else. Exits 1 if a check \
                fails (warnings, such as a VM that is not running, do not).
                """)
        @Option(name: .long, help: "The TOML configuration (docs/CONFIG.md).") var config: String = "/etc/tandem/host.toml"
        @Flag(name: .long, help: "Print as JSON.") var json = false

        func run() async throws {
            let cfg: HostConfig
            do { cfg = try HostConfig.load(path: config) } catch { throw CommandFailure("\(error)") }
            let netlink: RouteSocket
            do { netlink = try RouteSocket() } catch { throw CommandFailure("netlink: \(error)") }
            let findings = await HostCheck.run(cfg, netlink: netlink)
            if json { try printJSON(findings) } else {
                var rows = [["STATUS", "VM", "CHECK", "DETAIL"]]
                for f in findings { rows.append([f.status.rawValue.uppercased(), f.subject ?? "-", f.check, f.detail]) }
                print(renderTable(rows), terminator: "")
                let failed = findings.filter { $0.status == .fail }.count, warned = findings.filter { $0.status == .warn }.count
                print("\(findings.count) checks: \(failed) failed, \(warned) warnings")
            }
            if findings.contains(where: { $0.status == .fail }) { throw ExitCode(1) }
        }
    }
}
