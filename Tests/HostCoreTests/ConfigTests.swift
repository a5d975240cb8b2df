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

    @Test func guaranteesBeyondCapacityAreRefused() {
        let text = Self.good.replacingOccurrences(of: #"min = "100mbit""#, with: #"min = "900mbit""#) + "\nmin = \"200mbit\"\n"
        #expect(throws: ConfigError.self) { try HostConfig.parse(text) }
        do { _ = try HostConfig.parse(text) } catch {
            #expect(error.description.contains("add up to 1.1gbit"))
            #expect(error.description.contains("vm1 900mbit, vm2 200mbit"))
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
