import Foundation
import Testing
import HostController
import TandemProtocol
import TandemTestSupport
import HostCore
import TandemLabSupport

/// deploy/: the example configurations parse with the real parser, the systemd units pass
/// `systemd-analyze verify`, the libvirt XML is well-formed, and deploy/install.sh installs
/// into a temporary root and uninstalls exactly what it installed.
///
/// Tests that need a tool (systemd-analyze from Debian's `systemd`, xmllint from
/// `libxml2-utils`) are skipped where it is missing, except with CI=true, where they run
/// and fail.
@Suite(.exclusive) struct DeployTests {
    /// The repository: this file is Tests/DeployTests/DeployTests.swift.
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static func deploy(_ relative: String) -> String { repo.appendingPathComponent("deploy").appendingPathComponent(relative).path }
    static let channelDir = "/var/lib/libvirt/qemu/channel/tandem"

    // MARK: - Example configurations

    @Test func sriovExampleParsesWithTheRealParser() throws {
        let cfg = try HostConfig.load(path: Self.deploy("examples/host-sriov.toml"))
        let tenGbit = try BitRate(parsing: "10gbit"), twoGbit = try BitRate(parsing: "2gbit"), eightGbit = try BitRate(parsing: "8gbit")
        let backends: [HostConfig.Backend] = [
            .sriov(pf: "enp3s0f0", vf: 0, setMin: true),
            .sriov(pf: "enp3s0f0", vf: 1, setMin: false),
            .sriov(pf: "enp3s0f0", vf: 2, setMin: false),
        ]
        #expect(cfg.links.map(\.name) == ["pf0"])
        #expect(cfg.links.first?.capacity == tenGbit)
        #expect(cfg.vms.map(\.name) == ["vm1", "vm2", "vm3"])
        #expect(cfg.vms.map(\.backend) == backends)
        // Each channel is the explicit libvirt path of deploy/libvirt/channel.xml, per VM.
        for vm in cfg.vms { #expect(vm.channel == "\(Self.channelDir)/\(vm.name).sock") }
        #expect(cfg.vms[0].policy.guarantee == twoGbit)
        #expect(cfg.vms[0].policy.cap == eightGbit)
        #expect(cfg.vms[2].policy.cap == nil)
        #expect(cfg.controller.metrics == "127.0.0.1:9465")
    }

    @Test func tapExampleParsesWithTheRealParser() throws {
        let cfg = try HostConfig.load(path: Self.deploy("examples/host-tap.toml"))
        let backends: [HostConfig.Backend] = [.tc(interface: "tdm-vm1"), .tc(interface: "tdm-vm2"), .tc(interface: "tdm-vm3")]
        let channels: [String?] = ["\(Self.channelDir)/vm1.sock", "\(Self.channelDir)/vm2.sock", nil]
        let weights: [Double] = [2, 1, 0.5]
        #expect(cfg.links.map(\.name) == ["uplink"])
        #expect(cfg.vms.map(\.backend) == backends)
        #expect(cfg.vms.map(\.channel) == channels)
        #expect(cfg.vms.map(\.policy.weight) == weights)
    }

    /// The path in channel.xml (for vm1) is the one both examples give vm1.
    @Test func channelXMLAndExamplesNameTheSameSocket() throws {
        let xml = try String(contentsOfFile: Self.deploy("libvirt/channel.xml"), encoding: .utf8)
        let element = try #require(xml.range(of: "-->").map { String(xml[$0.upperBound...]) })
        let start = try #require(element.range(of: "path='"))
        let path = String(element[start.upperBound...].prefix { $0 != "'" })
        #expect(path == "\(Self.channelDir)/vm1.sock")
        for example in ["host-sriov.toml", "host-tap.toml"] {
            let cfg = try HostConfig.load(path: Self.deploy("examples/\(example)"))
            #expect(cfg.vms.first { $0.name == "vm1" }?.channel == path, "\(example)")
        }
    }

    // MARK: - systemd units and udev rule

    /// `key=value` lines of a unit, values of repeated keys joined by a space.
    static func unitSettings(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let t = line.trimmingCharacters(in: .whitespaces)
            guard !t.hasPrefix("#"), !t.hasPrefix("["), let eq = t.firstIndex(of: "=") else { continue }
            let key = String(t[..<eq]), value = String(t[t.index(after: eq)...])
            out[key] = out[key].map { "\($0) \(value)" } ?? value
        }
        return out
    }

    /// The shipped Prometheus rules are what promtool accepts, and each alert the issue asks
    /// for is there (PrometheusTests loads them in a real Prometheus).
    @Test func prometheusRulesPassPromtool() throws {
        if !Shell.has("promtool") { #expect(!Privileged.isCI, "promtool is needed (scripts/setup.sh installs Debian's prometheus)"); return }
        let path = Self.deploy("prometheus/tandem-rules.yml")
        let r = try Shell.run(["promtool", "check", "rules", path])
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
        #expect(r.stdout.contains("SUCCESS: 7 rules found"), "\(r.stdout)")
        let text = try String(contentsOfFile: path, encoding: .utf8)
        for alert in ["TandemAgentSilent", "TandemVMBelowGuarantee", "TandemLimitNotApplied", "TandemUnfairWhileSaturated"] {
            #expect(text.contains("alert: \(alert)"))
        }
    }

    @Test func hostUnitIsHardenedAsDocumented() throws {
        let s = try Self.unitSettings(String(contentsOfFile: Self.deploy("systemd/tandem-host.service"), encoding: .utf8))
        #expect(s["ExecStart"] == "/usr/local/bin/tandem-host run --config /etc/tandem/host.toml")
        #expect(s["Type"] == "notify")
        #expect(s["NotifyAccess"] == "main")
        #expect(s["ExecReload"] == "/bin/kill -HUP $MAINPID")
        #expect(s["WatchdogSec"] == "30s")
        #expect(s["Restart"] == "on-failure")
        for (key, value) in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                             ("RuntimeDirectory", "tandem"), ("StateDirectory", "tandem"), ("RestrictNamespaces", "yes"),
                             ("ProtectKernelModules", "yes"), ("ProtectControlGroups", "yes"), ("MemoryDenyWriteExecute", "yes"),
                             ("SystemCallArchitectures", "native")] {
            #expect(s[key] == value, "\(key)")
        }
        #expect(s["RestrictAddressFamilies"] == "AF_UNIX AF_NETLINK AF_INET AF_INET6")
        #expect(s["CapabilityBoundingSet"]?.split(separator: " ").contains("CAP_NET_ADMIN") == true)
        #expect(s["AmbientCapabilities"]?.split(separator: " ").contains("CAP_NET_ADMIN") == true)
        // The limits live in the host's network namespace and user namespace.
        #expect(s["PrivateNetwork"] == nil)
        #expect(s["PrivateUsers"] == nil)
        #expect(s["ProcSubset"] == nil)
    }

    @Test func agentUnitIsBoundToThePortAndHardened() throws {
        let s = try Self.unitSettings(String(contentsOfFile: Self.deploy("systemd/tandem-agent.service"), encoding: .utf8))
        let device = #"dev-virtio\x2dports-org.tandem.agent.0.device"#
        #expect(s["BindsTo"] == device)
        #expect(s["After"]?.split(separator: " ").contains(Substring(device)) == true)
        #expect(s["WantedBy"] == device)
        #expect(s["Restart"] == "always")
        #expect(s["Type"] == "notify")
        #expect(s["Environment"] == #""TANDEM_AGENT_ARGS=""#, "no interface named: the agent takes the default route's")
        #expect(s["Wants"] == "network-online.target")
        #expect(s["EnvironmentFile"] == "-/etc/default/tandem-agent")
        #expect(s["ExecStart"] == "/usr/local/bin/tandem-agent run $TANDEM_AGENT_ARGS")
        #expect(s["RuntimeDirectory"] == "tandem")
        #expect(s["CapabilityBoundingSet"] == "CAP_NET_ADMIN")
        #expect(s["RestrictAddressFamilies"] == "AF_UNIX AF_NETLINK")
        #expect(s["NoNewPrivileges"] == "yes")
        #expect(s["ProtectSystem"] == "strict")
        #expect(s["PrivateNetwork"] == nil)
        #expect(s["PrivateDevices"] == nil)   // it would hide /dev/virtio-ports
    }

    @Test func udevRuleWantsTheAgentForItsPort() throws {
        let rules = try String(contentsOfFile: Self.deploy("udev/99-tandem-agent.rules"), encoding: .utf8)
            .split(separator: "\n").filter { !$0.hasPrefix("#") && !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        #expect(rules.count == 1)
        let rule = String(rules.first ?? "")
        for part in [#"SUBSYSTEM=="virtio-ports""#, #"ATTR{name}=="org.tandem.agent.0""#, #"TAG+="systemd""#, #"ENV{SYSTEMD_WANTS}+="tandem-agent.service""#] {
            #expect(rule.contains(part), "\(part)")
        }
    }

    /// Copies of the units whose ExecStart names an existing program: `systemd-analyze
    /// verify` refuses a unit whose program is missing ("Command … is not executable").
    static func unitsForVerify(in dir: String) throws -> [String] {
        var paths: [String] = []
        for (unit, binary) in [("tandem-host.service", "tandem-host"), ("tandem-agent.service", "tandem-agent")] {
            let text = try String(contentsOfFile: deploy("systemd/\(unit)"), encoding: .utf8)
            let built = Binaries.path(binary)
            let program = FileManager.default.isExecutableFile(atPath: built) ? built : "/bin/true"
            let rewritten = text.replacingOccurrences(of: "ExecStart=/usr/local/bin/\(binary) ", with: "ExecStart=\(program) ")
            #expect(rewritten != text, "\(unit): ExecStart not found")
            let path = "\(dir)/\(unit)"
            try rewritten.write(toFile: path, atomically: true, encoding: .utf8)
            paths.append(path)
        }
        return paths
    }

    @Test(.enabled(if: Shell.has("systemd-analyze") || Privileged.isCI, "needs systemd-analyze (Debian: systemd); runs and fails in CI"))
    func unitsPassSystemdAnalyzeVerify() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        let units = try Self.unitsForVerify(in: dir.path)
        let r = try Shell.run(["SYSTEMD_LOG_COLOR=0", "systemd-analyze", "verify"] + units)
        #expect(r.status == 0, "systemd-analyze verify exited \(r.status): \(r.stderr)")
        // verify exits 0 after warnings (unknown keys, bad values, settings in the wrong
        // section): there must be none about these units.
        let complaints = (r.stdout + r.stderr).split(separator: "\n").filter { $0.contains("tandem-") }
        #expect(complaints.isEmpty, "systemd-analyze verify: \(complaints.joined(separator: "\n"))")
    }

    @Test(.enabled(if: Shell.has("systemd-analyze") || Privileged.isCI, "needs systemd-analyze (Debian: systemd); runs and fails in CI"))
    func unitsRateOKInSystemdAnalyzeSecurity() throws {
        let dir = try TempDir()
        defer { dir.remove() }
        for unit in try Self.unitsForVerify(in: dir.path) {
            let r = try Shell.run(["SYSTEMD_LOG_COLOR=0", "systemd-analyze", "security", "--offline=yes", "--no-pager", unit])
            let text = r.stdout + r.stderr
            // "→ Overall exposure level for tandem-host.service: 2.5 OK 🙂"
            let line = try #require(text.split(separator: "\n").first { $0.contains("Overall exposure level") }, "no exposure level in: \(text)")
            let after = try #require(line.range(of: ": ").map { line[$0.upperBound...] })
            let level = try #require(Double(after.prefix { $0.isNumber || $0 == "." }))
            #expect(level <= 3.0, "\(line)")
        }
        if Shell.has("systemd-escape") {
            let name = try Shell.check(["systemd-escape", "-p", "--suffix=device", "/dev/virtio-ports/org.tandem.agent.0"])
            #expect(name.trimmingCharacters(in: .whitespacesAndNewlines) == #"dev-virtio\x2dports-org.tandem.agent.0.device"#)
        }
    }

    // MARK: - libvirt XML

    @Test(.enabled(if: Shell.has("xmllint") || Privileged.isCI, "needs xmllint (Debian: libxml2-utils); runs and fails in CI"))
    func libvirtChannelXMLIsWellFormedAndNamesThePort() throws {
        let file = Self.deploy("libvirt/channel.xml")
        let lint = try Shell.run(["xmllint", "--noout", file])
        #expect(lint.status == 0, "xmllint: \(lint.stderr)")
        func value(_ xpath: String) throws -> String {
            try Shell.check(["xmllint", "--xpath", "string(\(xpath))", file]).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        #expect(try value("/channel/@type") == "unix")
        #expect(try value("/channel/source/@mode") == "bind")
        #expect(try value("/channel/source/@path") == "\(Self.channelDir)/vm1.sock")
        #expect(try value("/channel/target/@type") == "virtio")
        #expect(try value("/channel/target/@name") == "org.tandem.agent.0")
        #expect(try value("count(/channel/*)") == "2")

        // The automatic-path form shown in the file's comment is well-formed too.
        let text = try String(contentsOfFile: file, encoding: .utf8)
        let comment = try #require(text.range(of: "-->").map { String(text[..<$0.lowerBound]) })
        let start = try #require(comment.range(of: "<channel"))
        let end = try #require(comment.range(of: "</channel>", range: start.upperBound..<comment.endIndex))
        let auto = String(comment[start.lowerBound..<end.upperBound])
        #expect(auto.contains("<source mode='bind'/>"))
        let r = try Shell.run(["xmllint", "--noout", "-"], input: auto)
        #expect(r.status == 0, "the comment's example: \(r.stderr)")
    }

    /// The libvirt example domain and host file: the domain as libvirt runs it (its tap and
    /// channel socket filled in as libvirt fills them) is a VM on the `lan` link with the
    /// example's policy; as written (not running) only its channel's socket is missing.
    @Test func libvirtExampleDomainBecomesAVMWithTheExampleHostFile() throws {
        let cfg = try HostConfig.load(path: Self.deploy("examples/host-libvirt.toml"))
        #expect(cfg.libvirt?.uri == "qemu:///system")
        #expect(cfg.vms.isEmpty)
        #expect(cfg.links.map(\.pfs) == [["enp3s0f0", "enp3s0f1"], []])
        #expect(cfg.links.map(\.bridges) == [[], ["br0"]])
        let xml = try String(contentsOfFile: Self.deploy("libvirt/domain-tandem.xml"), encoding: .utf8)
        let asWritten = try LibvirtDomain.parse(xml)
        #expect(asWritten.problems.count == 1 && asWritten.problems[0].contains("has no <source path=...>"), "\(asWritten.problems)")
        let live = xml.replacingOccurrences(of: "<model type='virtio'/>", with: "<target dev='vnet7'/><model type='virtio'/>")
            .replacingOccurrences(of: "<channel type='unix'>", with: "<channel type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-7-vm1/org.tandem.agent.0'/>")
        let domain = try LibvirtDomain.parse(live)
        let out = LibvirtInventory.build(file: cfg, entries: [.init(uuid: "u1", name: "vm1", domain: .success(domain))],
                                         devices: .init(vf: { _ in throw SysfsVFError.noSuchDevice("-") }, master: { _ in nil }))
        #expect(out.unmanaged.isEmpty, "\(out.unmanaged)")
        let vm = try #require(out.config.vms.first)
        #expect(vm.link == "lan" && vm.backend == .tc(interface: "vnet7"))
        #expect(vm.policy == VMPolicy(weight: 2, guarantee: try BitRate(parsing: "1gbit"), cap: try BitRate(parsing: "8gbit")))
    }

    @Test(.enabled(if: Shell.has("xmllint") || Privileged.isCI, "needs xmllint (Debian: libxml2-utils); runs and fails in CI"))
    func libvirtExampleDomainIsWellFormed() throws {
        let lint = try Shell.run(["xmllint", "--noout", Self.deploy("libvirt/domain-tandem.xml")])
        #expect(lint.status == 0, "xmllint: \(lint.stderr)")
    }

    /// Every ```xml block in deploy/README.md (channel, hostdev and bridge interfaces).
    @Test(.enabled(if: Shell.has("xmllint") || Privileged.isCI, "needs xmllint (Debian: libxml2-utils); runs and fails in CI"))
    func readmeXMLSnippetsAreWellFormed() throws {
        let lines = try String(contentsOfFile: Self.deploy("README.md"), encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        var blocks: [String] = [], current: [Substring]? = nil
        for line in lines {
            let t = line.trimmingCharacters(in: .whitespaces)
            if current == nil, t == "```xml" { current = [] }
            else if current != nil, t == "```" { blocks.append(current!.joined(separator: "\n")); current = nil }
            else if current != nil { current!.append(line) }
        }
        #expect(blocks.count >= 3)
        for b in blocks {
            let r = try Shell.run(["xmllint", "--noout", "-"], input: b)
            #expect(r.status == 0, "README block:\n\(b)\n\(r.stderr)")
        }
    }

    // MARK: - deploy/install.sh

    /// The built binaries (Binaries.path's directory), or stand-ins where they are not
    /// built: the script copies them and looks no further.
    static func binaries(in scratch: TempDir) throws -> String {
        let built = URL(fileURLWithPath: Binaries.path("tandem-host")).deletingLastPathComponent().path
        if ["tandem-host", "tandem-agent"].allSatisfy({ FileManager.default.isExecutableFile(atPath: "\(built)/\($0)") }) { return built }
        let dir = scratch.path + "/bin"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for b in ["tandem-host", "tandem-agent"] {
            try "#!/bin/sh\necho \(b)\n".write(toFile: "\(dir)/\(b)", atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: "\(dir)/\(b)")
        }
        return dir
    }

    /// Regular files under `root`, relative, sorted.
    static func files(under root: String) -> [String] {
        let all = (try? FileManager.default.subpathsOfDirectory(atPath: root)) ?? []
        return all.filter { p in
            var isDir: ObjCBool = false
            return FileManager.default.fileExists(atPath: "\(root)/\(p)", isDirectory: &isDir) && !isDir.boolValue
        }.sorted()
    }

    static func everything(under root: String) -> [String] {
        ((try? FileManager.default.subpathsOfDirectory(atPath: root)) ?? []).sorted()
    }

    @Test(.enabled(if: Shell.has("bash") || Privileged.isCI, "needs bash; runs and fails in CI"))
    func installScriptIsValidBash() throws {
        let r = try Shell.run(["bash", "-n", Self.deploy("install.sh")])
        #expect(r.status == 0, "bash -n: \(r.stderr)")
        let help = try Shell.run(["bash", Self.deploy("install.sh"), "--help"])
        #expect(help.status == 0)
        #expect(help.stdout.contains("--uninstall"))
    }

    @Test(.enabled(if: Shell.has("bash") || Privileged.isCI, "needs bash; runs and fails in CI"))
    func installIntoADestdirThenUninstallLeavesOnlyTheAdminsFile() throws {
        let scratch = try TempDir()
        defer { scratch.remove() }
        let bins = try Self.binaries(in: scratch)
        let root = scratch.path + "/root"
        let script = Self.deploy("install.sh")

        // The admin's own host.toml is there before and must be left alone.
        try FileManager.default.createDirectory(atPath: root + "/etc/tandem", withIntermediateDirectories: true)
        let mine = "# my own configuration\n"
        try mine.write(toFile: root + "/etc/tandem/host.toml", atomically: true, encoding: .utf8)

        let host = try Shell.run(["bash", script, "--bindir-from", bins, "--destdir", root])
        #expect(host.status == 0, "host install: \(host.stderr)")
        let guest = try Shell.run(["bash", script, "--guest", "--bindir-from", bins, "--destdir", root])
        #expect(guest.status == 0, "guest install: \(guest.stderr)")

        let installed = Self.files(under: root)
        print("deploy/install.sh --destdir installed:\n" + installed.map { "  " + $0 }.joined(separator: "\n"))
        #expect(installed == [
            "etc/systemd/system/tandem-agent.service",
            "etc/systemd/system/tandem-host.service",
            "etc/tandem/host.toml",
            "etc/tandem/host.toml.example",
            "etc/udev/rules.d/99-tandem-agent.rules",
            "usr/local/bin/tandem-agent",
            "usr/local/bin/tandem-host",
            "usr/local/share/doc/tandem/README.md",
            "usr/local/share/tandem/examples/host-sriov.toml",
            "usr/local/share/tandem/examples/host-tap.toml",
            "usr/local/share/tandem/install.sh",
            "usr/local/share/tandem/installed-files",
            "usr/local/share/tandem/libvirt/channel.xml",
        ])
        // Said what it did.
        #expect(host.stdout.contains("installed \(root)/usr/local/bin/tandem-host"))
        #expect(guest.stdout.contains("installed \(root)/etc/udev/rules.d/99-tandem-agent.rules"))

        #expect(try String(contentsOfFile: root + "/etc/tandem/host.toml", encoding: .utf8) == mine)
        for b in ["tandem-host", "tandem-agent"] {
            #expect(FileManager.default.isExecutableFile(atPath: "\(root)/usr/local/bin/\(b)"))
            #expect(FileManager.default.contentsEqual(atPath: "\(bins)/\(b)", andPath: "\(root)/usr/local/bin/\(b)"))
        }
        #expect(FileManager.default.contentsEqual(atPath: Self.deploy("systemd/tandem-host.service"), andPath: root + "/etc/systemd/system/tandem-host.service"))
        #expect(FileManager.default.contentsEqual(atPath: Self.deploy("udev/99-tandem-agent.rules"), andPath: root + "/etc/udev/rules.d/99-tandem-agent.rules"))
        _ = try HostConfig.load(path: root + "/etc/tandem/host.toml.example")

        // The manifest lists every installed file but itself and the admin's.
        let manifest = try String(contentsOfFile: root + "/usr/local/share/tandem/installed-files", encoding: .utf8)
        let listed = manifest.split(separator: "\n").filter { $0.hasPrefix("f ") }.map { String($0.dropFirst(3)) }.sorted()
        #expect(listed == installed.filter { $0 != "etc/tandem/host.toml" && $0 != "usr/local/share/tandem/installed-files" })

        // Uninstall with the installed copy of the script, as deploy/README.md says.
        let u = try Shell.run(["bash", root + "/usr/local/share/tandem/install.sh", "--uninstall", "--destdir", root])
        #expect(u.status == 0, "uninstall: \(u.stderr)")
        #expect(u.stdout.contains("removed \(root)/usr/local/bin/tandem-host"))
        #expect(Self.everything(under: root) == ["etc", "etc/tandem", "etc/tandem/host.toml"])
        #expect(try String(contentsOfFile: root + "/etc/tandem/host.toml", encoding: .utf8) == mine)
    }

    @Test(.enabled(if: Shell.has("bash") || Privileged.isCI, "needs bash; runs and fails in CI"))
    func installFollowsThePrefix() throws {
        let scratch = try TempDir()
        defer { scratch.remove() }
        let bins = try Self.binaries(in: scratch)
        let root = scratch.path + "/root"
        let script = Self.deploy("install.sh")
        let r = try Shell.run(["bash", script, "--guest", "--prefix", "/opt/tandem", "--bindir-from", bins, "--destdir", root])
        #expect(r.status == 0, "install: \(r.stderr)")
        let unit = try String(contentsOfFile: root + "/etc/systemd/system/tandem-agent.service", encoding: .utf8)
        #expect(Self.unitSettings(unit)["ExecStart"] == "/opt/tandem/bin/tandem-agent run $TANDEM_AGENT_ARGS")
        #expect(!unit.contains("/usr/local/"))
        #expect(FileManager.default.isExecutableFile(atPath: root + "/opt/tandem/bin/tandem-agent"))
        #expect(!FileManager.default.fileExists(atPath: root + "/opt/tandem/bin/tandem-host"))   // a guest needs no controller

        let wrong = try Shell.run(["bash", script, "--uninstall", "--destdir", root])   // default prefix: no manifest there
        #expect(wrong.status != 0)
        #expect(wrong.stderr.contains("no manifest"))
        let u = try Shell.run(["bash", script, "--uninstall", "--prefix", "/opt/tandem", "--destdir", root])
        #expect(u.status == 0, "uninstall: \(u.stderr)")
        #expect(Self.everything(under: root).isEmpty)
    }

    @Test(.enabled(if: Shell.has("bash") || Privileged.isCI, "needs bash; runs and fails in CI"))
    func installRefusesWhatItCannotDo() throws {
        let scratch = try TempDir()
        defer { scratch.remove() }
        let script = Self.deploy("install.sh")
        let unknown = try Shell.run(["bash", script, "--bogus"])
        #expect(unknown.status != 0)
        #expect(unknown.stderr.contains("unknown argument '--bogus'"))
        let relative = try Shell.run(["bash", script, "--prefix", "usr", "--destdir", scratch.path + "/a"])
        #expect(relative.status != 0)
        #expect(relative.stderr.contains("must be an absolute path"))
        let noBins = try Shell.run(["bash", script, "--bindir-from", scratch.path + "/none", "--destdir", scratch.path + "/b"])
        #expect(noBins.status != 0)
        #expect(noBins.stderr.contains("is not a directory"))
        try FileManager.default.createDirectory(atPath: scratch.path + "/empty", withIntermediateDirectories: true)
        let missing = try Shell.run(["bash", script, "--bindir-from", scratch.path + "/empty", "--destdir", scratch.path + "/c"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("no executable"))
        #expect(Self.files(under: scratch.path + "/c").isEmpty)
    }
}

/// A directory under the temporary directory, removed by ``remove()``.
struct TempDir {
    let path: String
    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("tdm-deploy-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}
