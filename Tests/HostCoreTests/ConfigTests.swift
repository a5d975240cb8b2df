import Testing
import TandemProtocol
@testable import HostCore

@Suite struct ConfigTests {
    static let good = """
    [controller]
    interval = "100ms"
    admin_socket = "/run/tandem/host.sock"
    state_dir = "/var/lib/tandem"
    metrics = "127.0.0.1:9465"

    [[link]]                 # a shared physical link
    name = "uplink"
    capacity = "1gbit"

    [[vm]]
    name = "vm1"
    link = "uplink"
    backend = "tc"
    interface = "vnet0"
    channel = "/run/tandem/channels/vm1.sock"
    weight = 1
    min = "100mbit"
    max = "1gbit"

    [[vm]]
    name = "vm2"
    link = "uplink"
    backend = "sriov"
    pf = "enp3s0f0"
    vf = 1
    channel = "/var/lib/libvirt/qemu/channel/target/domain-2-vm2/org.tandem.agent.0"
    """

    @Test func theDocumentedExampleParses() throws {
        let c = try HostConfig.parse(Self.good, file: "host.toml")
        #expect(c.controller.interval == 0.1)
        #expect(c.controller.metrics == "127.0.0.1:9465")
        #expect(c.links == [HostConfig.LinkConfig(name: "uplink", capacity: .gbit(1))])
        #expect(c.vms.count == 2)
        #expect(c.vms[0].backend == .tc(interface: "vnet0"))
        #expect(c.vms[0].policy == VMPolicy(weight: 1, guarantee: .mbit(100), cap: .gbit(1)))
        #expect(c.vms[1].backend == .sriov(pf: "enp3s0f0", vf: 1, setMin: false))
        #expect(c.vms[1].policy == VMPolicy(weight: 1, guarantee: .zero, cap: nil))
        #expect(c.vms[1].channel?.hasSuffix("org.tandem.agent.0") == true)
    }

    @Test(arguments: [
        // (change to the good file, expected fragments of the error)
        (#"min = "100mbit""#, #"min = "lots""#, ["host.toml:18", "[[vm]] #1 (vm1): key 'min'", "invalid rate 'lots'"]),
        (#"capacity = "1gbit""#, #"capacity = "-1gbit""#, ["host.toml:9", "key 'capacity'", "negative"]),
        (#"weight = 1"#, #"weight = 0"#, ["[[vm]] #1 (vm1): key 'weight'", "above 0"]),
        (#"max = "1gbit""#, #"max = "10mbit""#, ["key 'max'", "below the guarantee 100mbit"]),
        (#"backend = "tc""#, #"backend = "macvlan""#, ["host.toml:14", "key 'backend'", "'macvlan' is not"]),
        (#"vf = 1"#, #"vf = 300"#, ["host.toml:26", "key 'vf'", "300 is not a VF number"]),
        (#"interface = "vnet0""#, #"interface = "a-very-long-interface-name""#, ["key 'interface'", "not an interface name"]),
        (#"link = "uplink""#, #"link = "downlink""#, ["key 'link'", "'downlink' is not a [[link]]"]),
        (#"interval = "100ms""#, #"interval = "fast""#, ["host.toml:2", "[controller]: key 'interval'", "invalid duration 'fast'"]),
        (#"metrics = "127.0.0.1:9465""#, #"metrics = "everywhere""#, ["key 'metrics'", "not HOST:PORT"]),
        (#"metrics = "127.0.0.1:9465""#, #"metrics = "::1:9465""#, ["key 'metrics'", "not HOST:PORT"]),
        (#"weight = 1"#, "weight = 1\nspeed = \"max\"", ["host.toml:18", "key 'speed'", "unknown key"]),
        (#"name = "vm2""#, #"name = "vm1""#, ["'vm1' is named twice"]),
        (#"[[link]]                 # a shared physical link"#, #"[[link"#, ["host.toml:7", "not a table header"]),
        (#"channel = "/var/lib/libvirt/qemu/channel/target/domain-2-vm2/org.tandem.agent.0""#, #"channel = "/run/tandem/channels/vm1.sock""#, ["(vm2): channel", "also vm1's"]),
    ])
    func badValuesAreNamed(from: String, to: String, fragments: [String]) {
        let text = Self.good.replacingOccurrences(of: from, with: to)
        do {
            _ = try HostConfig.parse(text, file: "host.toml")
            #expect(fragments.isEmpty, "expected an error with \(fragments)")
        } catch {
            for f in fragments { #expect(error.description.contains(f), "'\(error.description)' lacks '\(f)'") }
            #expect(!fragments.isEmpty, "unexpected error: \(error)")
        }
    }

    /// `backend = "devlink"`: an SR-IOV VF limited through its devlink rate leaf; a link's
    /// `vf_backend` says the same for libvirt's VFs on it.
    @Test func devlinkBackendAndTheLinksVFBackend() throws {
        let c = try HostConfig.parse(Self.good.replacingOccurrences(of: #"backend = "sriov""#, with: "backend = \"devlink\"\nset_min_rate = true")
            .replacingOccurrences(of: #"capacity = "1gbit""#, with: "capacity = \"1gbit\"\nvf_backend = \"devlink\""))
        #expect(c.vms[1].backend == .sriov(pf: "enp3s0f0", vf: 1, setMin: true, devlink: true))
        #expect(c.vms[1].backend.groupInHardware && !c.vms[0].backend.groupInHardware)
        #expect(c.links[0].devlink)
        #expect(try !HostConfig.parse(Self.good).links[0].devlink, "sriov by default")
        for (from, to, fragments) in [
            (#"capacity = "1gbit""#, "capacity = \"1gbit\"\nvf_backend = \"ethtool\"", ["key 'vf_backend'", "'ethtool' is not \"sriov\" or \"devlink\""]),
            (#"vf = 1"#, "", ["key 'vf'", "missing: the VF's number for backend \"devlink\""]),
        ] {
            let text = Self.good.replacingOccurrences(of: #"backend = "sriov""#, with: #"backend = "devlink""#).replacingOccurrences(of: from, with: to)
            do { _ = try HostConfig.parse(text, file: "host.toml"); Issue.record("\(to) accepted") } catch {
                for f in fragments { #expect(error.description.contains(f), "'\(error.description)' lacks '\(f)'") }
            }
        }
    }

    @Test func libvirtAndTheLinksDevicesParse() throws {
        let c = try HostConfig.parse("""
            [libvirt]
            uri = "qemu:///system"
            [[link]]
            name = "fabric"
            capacity = "25gbit"
            pf = ["enp3s0f0", "enp3s0f1"]
            set_min_rate = true
            default_weight = 2
            default_min = "100mbit"
            default_max = "10gbit"
            [[link]]
            name = "lan"
            capacity = "1gbit"
            bridge = "br0"
            """)
        #expect(c.libvirt == HostConfig.Libvirt(uri: "qemu:///system"))
        #expect(c.links[0] == HostConfig.LinkConfig(name: "fabric", capacity: .gbit(25), pfs: ["enp3s0f0", "enp3s0f1"], bridges: [],
                                                    defaults: VMPolicy(weight: 2, guarantee: .mbit(100), cap: .gbit(10)), setMinRate: true))
        #expect(c.links[1].bridges == ["br0"])
        #expect(c.links[1].defaults == VMPolicy(weight: 1, guarantee: .zero, cap: nil))
    }

    @Test(arguments: [
        ("[libvirt]\n", ["[libvirt]: key 'uri'", "missing"]),
        ("[libvirt]\nuri = \"system\"\n", ["'system' is not a libvirt URI"]),
        ("[libvirt]\nuri = \"qemu:///system\"\nurl = \"x\"\n", ["key 'url'", "unknown key"]),
        ("[[link]]\nname = \"a\"\ncapacity = \"1gbit\"\npf = 3\n", ["key 'pf'", "a string or an array of strings"]),
        ("[[link]]\nname = \"a\"\ncapacity = \"1gbit\"\nbridge = \"a bridge\"\n", ["key 'bridge'", "not an interface name"]),
        ("[[link]]\nname = \"a\"\ncapacity = \"1gbit\"\ndefault_max = \"2gbit\"\n", ["key 'default_max'", "above the link's capacity"]),
        ("[[link]]\nname = \"a\"\ncapacity = \"1gbit\"\ndefault_weight = 0\n", ["key 'default_weight'", "above 0"]),
        ("[[link]]\nname = \"a\"\ncapacity = \"1gbit\"\npf = \"p0\"\n[[link]]\nname = \"b\"\ncapacity = \"1gbit\"\npf = [\"p1\", \"p0\"]\n", ["(b): key 'pf'", "'p0' is also named by [[link]] a"]),
        ("[[link]]\nname = \"a\"\ncapacity = \"1gbit\"\npf = \"p0\"\n[[link]]\nname = \"b\"\ncapacity = \"1gbit\"\nbridge = \"p0\"\n", ["(b): key 'bridge'", "'p0' is also named by [[link]] a"]),
    ])
    func badLibvirtAndLinkDeviceValuesAreNamed(text: String, fragments: [String]) {
        do {
            _ = try HostConfig.parse(text, file: "host.toml")
            Issue.record("expected an error with \(fragments)")
        } catch {
            for f in fragments { #expect(error.description.contains(f), "'\(error.description)' lacks '\(f)'") }
        }
    }

    @Test func libvirtWithoutALinkIsRefused() {
        do { _ = try HostConfig.parse("[libvirt]\nuri = \"qemu:///system\"\n"); Issue.record("parsed") } catch {
            #expect(error.description.contains("there is no [[link]]"))
        }
    }

    @Test func guaranteesBeyondCapacityAreRefused() {
        let text = Self.good.replacingOccurrences(of: #"min = "100mbit""#, with: #"min = "900mbit""#) + "\nmin = \"200mbit\"\n"
        #expect(throws: ConfigError.self) { try HostConfig.parse(text) }
        do { _ = try HostConfig.parse(text) } catch {
            #expect(error.description.contains("guarantees to 1.1gbit"))
            #expect(error.description.contains("vm1 900mbit, vm2 200mbit"))
        }
    }

    static let grouped = """
        [[link]]
        name = "up"
        capacity = "1gbit"
        [[link]]
        name = "other"
        capacity = "1gbit"
        [[group]]
        name = "tenant-a"
        link = "up"
        weight = 3
        min = "300mbit"
        max = "800mbit"
        [[group]]
        name = "tenant-b"
        link = "up"
        [[vm]]
        name = "a1"
        link = "up"
        interface = "t1"
        group = "tenant-a"
        min = "100mbit"
        [[vm]]
        name = "a2"
        link = "up"
        interface = "t2"
        group = "tenant-a"
        min = "200mbit"
        [[vm]]
        name = "b1"
        link = "up"
        interface = "t3"
        group = "tenant-b"
        [[vm]]
        name = "solo"
        link = "up"
        interface = "t4"
        min = "700mbit"

        """

    @Test func groupsAreReadWithTheirVMs() throws {
        let cfg = try HostConfig.parse(Self.grouped)
        #expect(cfg.groups == [HostConfig.GroupConfig(name: "tenant-a", link: "up", weight: 3, guarantee: .mbit(300), cap: .mbit(800)),
                               HostConfig.GroupConfig(name: "tenant-b", link: "up")])
        #expect(cfg.vms.map(\.group) == ["tenant-a", "tenant-a", "tenant-b", nil])
    }

    @Test(arguments: [
        // A VM's min beyond what its group's min leaves.
        (#"min = "200mbit""#, #"min = "201mbit""#, "min 201mbit would bring the mins of group tenant-a's VMs to 301mbit (a1 100mbit, a2 201mbit), more than the group's min 300mbit"),
        // The group's min counts on the link in full beside the VMs in none.
        (#"min = "700mbit""#, #"min = "701mbit""#, "[[vm]] (solo): min 701mbit would bring link up's guarantees to 1.001gbit (group tenant-a 300mbit, solo 701mbit), more than its capacity 1gbit"),
        (#"group = "tenant-b""#, #"group = "tenant-c""#, "key 'group': 'tenant-c' is not a [[group]] (there are: tenant-a, tenant-b)"),
        (#"name = "b1"\#nlink = "up""#, #"name = "b1"\#nlink = "other""#, "key 'group': group 'tenant-b' is on link up, the VM on other"),
        (#"max = "800mbit""#, #"max = "2gbit""#, "key 'max': 2gbit is above link up's capacity 1gbit"),
        (#"max = "800mbit""#, #"max = "200mbit""#, "[[group]] #1 (tenant-a): key 'max': 200mbit is below the guarantee 300mbit"),
        (#"weight = 3"#, #"weight = 0"#, "weight"),
        (#"name = "tenant-b""#, #"name = "tenant-a""#, "'tenant-a' is named twice"),
    ])
    func groupMistakesAreRefusedSayingWhere(find: String, replace: String, expected: String) {
        let text = Self.grouped.replacingOccurrences(of: find, with: replace)
        #expect(text != Self.grouped, "the case changes the file")
        do { _ = try HostConfig.parse(text); Issue.record("parsed: \(replace)") } catch {
            #expect(error.description.contains(expected), "\(error)")
        }
    }

    @Test func groupsMinsAboveTheLinkAreRefused() {
        let text = Self.grouped.replacingOccurrences(of: "name = \"tenant-b\"\nlink = \"up\"", with: "name = \"tenant-b\"\nlink = \"up\"\nmin = \"800mbit\"")
        do { _ = try HostConfig.parse(text); Issue.record("parsed") } catch {
            #expect(error.description.contains("the mins of link up's groups add up to 1.1gbit (tenant-a 300mbit, tenant-b 800mbit), more than its capacity 1gbit"), "\(error)")
        }
    }

    /// toml++ aborts the process on these (found by fuzzing); the precheck refuses them first.
    @Test(arguments: ["[[,link]]\nname = \"x\"", ",x = 1", "a.,b = 1", "[a.,b]", "[]", "[[vm]",
                      "max = \"1gbit\"\r\n[\u{FFFD}[vm]]", "\u{FEFF}[\u{FFFD}[limol]]", "[\u{FFFD}[link]]x\"\"\"\n\""])
    func malformedKeysAreRefusedNotFatal(text: String) {
        #expect(throws: ConfigError.self) { try HostConfig.parse(text, file: "bad.toml") }
    }

    @Test func missingFileIsNamed() {
        #expect(throws: ConfigError.self) { try HostConfig.load(path: "/nonexistent/host.toml") }
        do { _ = try HostConfig.load(path: "/nonexistent/host.toml") } catch { #expect(error.description.hasPrefix("/nonexistent/host.toml: cannot read")) }
    }

    @Test func defaultsAndSingleLink() throws {
        let c = try HostConfig.parse("""
        [[link]]
        name = "l"
        capacity = "10gbit"
        [[vm]]
        name = "a"
        interface = "tap0"
        """)
        #expect(c.vms[0].link == "l", "with one link, VMs need not name it")
        #expect(c.vms[0].backend == .tc(interface: "tap0"), "tc is the default backend")
        #expect(c.controller.step == 0.01)
        #expect(c.controller.softFraction == 0.97)
        #expect(c.controller.adminSocket == "/run/tandem/host.sock")
    }
}
