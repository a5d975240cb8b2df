import Foundation
import Testing
import TandemProtocol
@testable import HostCore

/// Domains to VMs. The XML under Fixtures/libvirt was captured from this machine's libvirt
/// 9.0 (`virsh dumpxml` of running QEMU/TCG domains; the VF forms from `virsh dumpxml
/// --inactive` of a defined domain, as no SR-IOV device is here to start one). The host's
/// devices are a fake (``devices``): sysfs's VF mapping has its own tests on a recorded tree.
@Suite struct LibvirtInventoryTests {
    static func fixture(_ name: String) throws -> String {
        let url = try #require(Bundle.module.url(forResource: "Fixtures/libvirt/\(name)", withExtension: "xml"))
        return try String(contentsOf: url, encoding: .utf8)
    }

    /// Fake host devices: VFs of 0000:03:00.0 (PF enp3s0f0) are its functions 0x10.N → vf N-1;
    /// any other PCI address is not a VF. Taps are in the bridges `masters` says.
    static func devices(masters: [String: String] = [:]) -> LibvirtInventory.Devices {
        .init(vf: { a in
            guard a.bus == 3, a.slot == 0x10, a.function >= 1 else { throw SysfsLikeError(text: "PCI device \(a) is not an SR-IOV VF (it has no physfn)") }
            return ("enp3s0f0", UInt32(a.function) - 1)
        }, master: { masters[$0] })
    }
    struct SysfsLikeError: Error, CustomStringConvertible { var text: String; var description: String { text } }

    static func file(_ extra: String = "") throws -> HostConfig {
        try HostConfig.parse("""
            [libvirt]
            uri = "qemu:///system"
            [[link]]
            name = "wire"
            capacity = "1gbit"
            bridge = "tdmbr0"
            pf = "enp3s0f0"
            default_weight = 1
            default_max = "800mbit"
            \(extra)
            """)
    }

    static func entry(_ xml: String, uuid: String? = nil) throws -> LibvirtInventory.Entry {
        let d = try LibvirtDomain.parse(xml)
        return .init(uuid: uuid ?? d.uuid ?? d.name, name: d.name, domain: .success(d))
    }

    static func domain(_ name: String, devices: String, metadata: String = "", channel: Bool = true) -> String {
        """
        <domain type='qemu' id='7'><name>\(name)</name><uuid>00000000-0000-0000-0000-\(String(repeating: "0", count: max(0, 12 - name.count)))\(name.prefix(12))</uuid>
        <metadata>\(metadata)</metadata><devices>\(devices)
        \(channel ? "<channel type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-7-\(name)/org.tandem.agent.0'/><target type='virtio' name='org.tandem.agent.0'/></channel>" : "")
        </devices></domain>
        """
    }
    static func tap(_ dev: String, bridge: String = "tdmbr0") -> String {
        "<interface type='bridge'><source bridge='\(bridge)'/><target dev='\(dev)'/></interface>"
    }
    static func vf(_ function: Int) -> String {
        "<interface type='hostdev' managed='yes'><source><address type='pci' domain='0x0000' bus='0x03' slot='0x10' function='0x\(function)'/></source></interface>"
    }

    @Test func aCapturedRunningDomainOnABridgeBecomesATCVMWithItsChannelAndMetadata() throws {
        let xml = try Self.fixture("running-bridge-tap-channel-metadata")
        let out = LibvirtInventory.build(file: try Self.file(), entries: [try Self.entry(xml)], devices: Self.devices())
        #expect(out.unmanaged.isEmpty)
        let vm = try #require(out.config.vms.first)
        #expect(vm.name == "tdm-probe")
        #expect(vm.link == "wire")
        #expect(vm.backend == .tc(interface: "vnet1"))
        // The path libvirt chose (the XML given to it had none).
        #expect(vm.channel == "/var/lib/libvirt/qemu/channel/target/domain-3-tdm-probe/org.tandem.agent.0")
        // weight and min from the metadata, max from the link's default.
        #expect(vm.policy == VMPolicy(weight: 2, guarantee: .mbit(10), cap: .mbit(800)))
        guard case .libvirt(let uuid) = vm.origin else { Issue.record("origin \(vm.origin)"); return }
        #expect(uuid == LibvirtDomain.parseOrNil(xml)?.uuid)
    }

    @Test func anEthernetTapFindsItsLinkThroughTheBridgeTheKernelPutItIn() throws {
        let xml = try Self.fixture("running-ethernet-tap-channel")
        let inBridge = LibvirtInventory.build(file: try Self.file(), entries: [try Self.entry(xml)], devices: Self.devices(masters: ["vnet0": "tdmbr0"]))
        #expect(inBridge.config.vms.map(\.backend) == [.tc(interface: "vnet0")])
        // No metadata: the link's defaults.
        #expect(inBridge.config.vms.first?.policy == VMPolicy(weight: 1, guarantee: .zero, cap: .mbit(800)))

        let alone = LibvirtInventory.build(file: try Self.file(), entries: [try Self.entry(xml)], devices: Self.devices())
        #expect(alone.config.vms.isEmpty)
        #expect(alone.unmanaged.first?.reason == "domain tdm-ethernet: <interface type='ethernet'> vnet0 is on no bridge, which no [[link]] names (bridge = ...)")

        // A host with one link that names no bridge and no PF takes every tap on it.
        let simple = try HostConfig.parse("[libvirt]\nuri = \"qemu:///system\"\n[[link]]\nname = \"wire\"\ncapacity = \"1gbit\"\n")
        #expect(LibvirtInventory.build(file: simple, entries: [try Self.entry(xml)], devices: Self.devices()).config.vms.map(\.link) == ["wire"])
    }

    @Test func libvirt9sHostdevFormsAreReadEvenWhenTheDomainIsOnlyDefined() throws {
        let d = try LibvirtDomain.parse(try Self.fixture("defined-interface-hostdev-and-hostdev"))
        #expect(d.vfs.map(\.description) == ["0000:03:10.1", "0000:03:10.3"])
        // Not running: its channel has no socket yet, which names the domain and the element.
        #expect(d.problems == ["domain tdm-vfs: <channel> for org.tandem.agent.0 has no <source path=...> (the live XML of a running domain has one)"])
    }

    @Test func aVFOnANamedPFIsAnSRIOVVMAndOneOnAnotherPFIsUnmanagedWithTheReason() throws {
        let file = try Self.file("set_min_rate = true")
        let good = try Self.entry(Self.domain("vf-vm", devices: Self.vf(2)))
        let elsewhere = try Self.entry(Self.domain("far-vm", devices: "<hostdev mode='subsystem' type='pci'><source><address domain='0x0000' bus='0x05' slot='0x00' function='0x0'/></source></hostdev>"))
        let out = LibvirtInventory.build(file: file, entries: [good, elsewhere], devices: Self.devices())
        #expect(out.config.vms.map(\.name) == ["vf-vm"])
        #expect(out.config.vms[0].backend == .sriov(pf: "enp3s0f0", vf: 1, setMin: true))
        #expect(out.unmanaged.map(\.reason) == ["domain far-vm: <hostdev> VF 0000:05:00.0: PCI device 0000:05:00.0 is not an SR-IOV VF (it has no physfn)"])

        var other = file
        other.links[0].pfs = ["enp4s0"]
        let unnamed = LibvirtInventory.build(file: other, entries: [good], devices: Self.devices())
        #expect(unnamed.unmanaged.map(\.reason) == [#"domain vf-vm: <hostdev> VF 0000:03:10.2 is on PF enp3s0f0, which no [[link]] names (pf = "enp3s0f0")"#])
    }

    /// A link with `vf_backend = "devlink"` gives its VFs the devlink backend; a tap on the
    /// same link stays on tc.
    @Test func aLinksVFBackendChoosesDevlinkForItsVFs() throws {
        let out = LibvirtInventory.build(file: try Self.file(#"vf_backend = "devlink""#),
                                         entries: [try Self.entry(Self.domain("vf-vm", devices: Self.vf(2))), try Self.entry(Self.domain("tap-vm", devices: Self.tap("vnet9")))],
                                         devices: Self.devices())
        let vms = Dictionary(uniqueKeysWithValues: out.config.vms.map { ($0.name, $0.backend) })
        #expect(vms["vf-vm"] == .sriov(pf: "enp3s0f0", vf: 1, setMin: false, devlink: true))
        #expect(vms["tap-vm"] == .tc(interface: "vnet9"))
    }

    @Test func oneBadDomainIsUnmanagedAndTheOthersAreUntouched() throws {
        let file = try Self.file("""
            [[vm]]
            name = "static"
            interface = "tap9"
            min = "300mbit"
            """)
        let entries = try [
            Self.entry(Self.domain("a", devices: Self.tap("vnet1"))),
            Self.entry(Self.domain("bad-meta", devices: Self.tap("vnet2"), metadata: #"<tandem:policy xmlns:tandem="urn:tandem:policy:1" weight="-1"/>"#)),
            Self.entry(Self.domain("static", devices: Self.tap("vnet3"))),
            Self.entry(Self.domain("two", devices: Self.tap("vnet4") + Self.vf(1))),
            Self.entry(Self.domain("greedy", devices: Self.tap("vnet5"), metadata: #"<tandem:policy xmlns:tandem="urn:tandem:policy:1" min="800mbit"/>"#)),
            Self.entry(Self.domain("same-tap", devices: Self.tap("vnet1"))),
            Self.entry(Self.domain("plain", devices: Self.tap("vnet6"), channel: false)),
            Self.entry(Self.domain("b", devices: Self.tap("vnet7"), metadata: #"<tandem:policy xmlns:tandem="urn:tandem:policy:1" weight="3" min="100mbit" max="1gbit"/>"#)),
            .init(uuid: "u-broken", name: "broken", domain: .failure(.notXML("the text ends before </domain>"))),
        ]
        let out = LibvirtInventory.build(file: file, entries: entries, devices: Self.devices())
        #expect(out.config.vms.map(\.name) == ["static", "a", "b"])
        #expect(out.config.vms.last?.policy == VMPolicy(weight: 3, guarantee: .mbit(100), cap: .gbit(1)))
        let reasons = Dictionary(uniqueKeysWithValues: out.unmanaged.map { ($0.domain, $0.reason) })
        #expect(reasons["bad-meta"] == #"domain bad-meta: <tandem:policy weight="-1">: a weight is a number above 0 and at most 10000"#)
        #expect(reasons["static"] == "domain static: <name> is also a [[vm]] in the configuration file: remove the [[vm]] or rename the domain")
        #expect(reasons["two"] == "domain two: 2 devices on Tandem's links (VF 0000:03:10.1 (enp3s0f0 vf 0), interface vnet4 (on tdmbr0)): Tandem limits one per VM")
        #expect(reasons["greedy"] == #"domain greedy: <tandem:policy min="800mbit">: min 800mbit would bring link wire's guarantees to 1.1gbit (static 300mbit, greedy 800mbit), more than its capacity 1gbit"#)
        #expect(reasons["same-tap"] == "domain same-tap: interface vnet1 (on tdmbr0) is also VM a's")
        #expect(reasons["broken"] == "domain broken: its XML could not be read: not XML: the text ends before </domain>")
        // A domain with neither Tandem's channel nor its metadata is not Tandem's: not listed.
        #expect(reasons["plain"] == nil)
        #expect(out.unmanaged.count == 6)
    }

    @Test func aManagedVMWhoseMetadataTurnsBadKeepsItsLastGoodPolicy() throws {
        let file = try Self.file()
        let good = try Self.entry(Self.domain("a", devices: Self.tap("vnet1"), metadata: #"<tandem:policy xmlns:tandem="urn:tandem:policy:1" weight="4"/>"#))
        let first = LibvirtInventory.build(file: file, entries: [good], devices: Self.devices())
        let previous = Dictionary(uniqueKeysWithValues: first.config.vms.compactMap { vm -> (String, HostConfig.VMConfig)? in
            if case .libvirt(let u) = vm.origin { (u, vm) } else { nil }
        })
        for bad in [#"weight="heavy""#, #"min="900mbit" max="100mbit""#, #"min="2gbit""#] {
            let typo = try Self.entry(Self.domain("a", devices: Self.tap("vnet1"), metadata: "<tandem:policy xmlns:tandem=\"urn:tandem:policy:1\" \(bad)/>"))
            let after = LibvirtInventory.build(file: file, entries: [typo], devices: Self.devices(), previous: previous)
            #expect(after.config.vms.map(\.policy.weight) == [4], "\(bad)")
            #expect(after.unmanaged.isEmpty)
            #expect(after.kept.count == 1 && after.kept[0].reason.hasSuffix("(its last good policy stays in force)"), "\(after.kept)")
            // A domain first seen with it is not managed.
            let fresh = LibvirtInventory.build(file: file, entries: [typo], devices: Self.devices())
            #expect(fresh.config.vms.isEmpty && fresh.unmanaged.count == 1, "\(bad)")
        }
    }

    @Test func aSecondDeviceHotPluggedBesideTheOneInForceDoesNotLiftItsLimit() throws {
        let file = try Self.file()
        let first = LibvirtInventory.build(file: file, entries: [try Self.entry(Self.domain("a", devices: Self.tap("vnet1")))], devices: Self.devices())
        let vm = try #require(first.config.vms.first)
        let plugged = try Self.entry(Self.domain("a", devices: Self.tap("vnet1") + Self.vf(1)))
        guard case .libvirt(let uuid) = vm.origin else { Issue.record("origin"); return }
        let after = LibvirtInventory.build(file: file, entries: [plugged], devices: Self.devices(), previous: [uuid: vm])
        #expect(after.config.vms.map(\.backend) == [.tc(interface: "vnet1")])
        #expect(after.kept.map(\.reason) == ["domain a: 2 devices on Tandem's links (VF 0000:03:10.1 (enp3s0f0 vf 0), interface vnet1 (on tdmbr0)): Tandem limits one per VM (the one in force, interface vnet1 (on tdmbr0), stays)"])
        // First seen with two: not managed.
        #expect(LibvirtInventory.build(file: file, entries: [plugged], devices: Self.devices()).unmanaged.count == 1)
    }

    /// `<tandem:policy group="...">` puts a domain in a `[[group]]` of its link; its min comes
    /// out of the group's. A group that is not there, or a min the group's does not cover,
    /// leaves the domain unmanaged, or a VM in force on its last good policy and group.
    @Test func aDomainsMetadataPutsItInAGroup() throws {
        let file = try Self.file("""
            [[group]]
            name = "tenant-a"
            link = "wire"
            weight = 2
            min = "200mbit"
            """)
        func meta(_ attrs: String) -> String { #"<tandem:policy xmlns:tandem="urn:tandem:policy:1" "# + attrs + "/>" }
        let entries = try [
            Self.entry(Self.domain("a1", devices: Self.tap("vnet1"), metadata: meta(#"group="tenant-a" min="150mbit""#))),
            Self.entry(Self.domain("a2", devices: Self.tap("vnet2"), metadata: meta(#"group="tenant-a" min="100mbit""#))),
            Self.entry(Self.domain("lost", devices: Self.tap("vnet3"), metadata: meta(#"group="tenant-z""#))),
            Self.entry(Self.domain("solo", devices: Self.tap("vnet4"))),
        ]
        let out = LibvirtInventory.build(file: file, entries: entries, devices: Self.devices())
        #expect(out.config.vms.map(\.name) == ["a1", "solo"])
        let byName = Dictionary(uniqueKeysWithValues: out.config.vms.map { ($0.name, $0) })
        #expect(byName["a1"]?.group == "tenant-a" && byName["solo"]?.group == nil)
        let reasons = Dictionary(uniqueKeysWithValues: out.unmanaged.map { ($0.domain, $0.reason) })
        #expect(reasons["a2"] == #"domain a2: <tandem:policy min="100mbit" group="tenant-a">: min 100mbit would bring the mins of group tenant-a's VMs to 250mbit (a1 150mbit, a2 100mbit), more than the group's min 200mbit"#)
        #expect(reasons["lost"] == #"domain lost: <tandem:policy group="tenant-z">: no such [[group]] (there are: tenant-a)"#)
        // a1 in force moves to a group that is not there: kept in its old one.
        let moved = try [Self.entry(Self.domain("a1", devices: Self.tap("vnet1"), metadata: meta(#"group="tenant-z" min="150mbit""#)))]
        let again = LibvirtInventory.build(file: file, entries: moved, devices: Self.devices(), previous: Self.inForce(out).filter { $0.value.name == "a1" })
        #expect(again.config.vms.first?.group == "tenant-a", "\(again)")
        #expect(again.kept.first?.reason.contains("no such [[group]]") == true)
    }

    /// A VM in force whose metadata moves it into another group is admitted after the VMs
    /// that kept theirs: it cannot take the room of a VM already in that group (which became
    /// unmanaged when the mover came first).
    @Test func aVMMovingGroupsDoesNotPushOutOneAlreadyThere() throws {
        let file = try Self.file("""
            [[group]]
            name = "g"
            min = "100mbit"
            [[group]]
            name = "h"
            min = "100mbit"
            """)
        func meta(_ attrs: String) -> String { #"<tandem:policy xmlns:tandem="urn:tandem:policy:1" "# + attrs + "/>" }
        let before = try [
            Self.entry(Self.domain("y", devices: Self.tap("vnet2"), metadata: meta(#"group="h" min="60mbit""#))),
            Self.entry(Self.domain("x", devices: Self.tap("vnet1"), metadata: meta(#"group="g" min="60mbit""#))),
        ]
        let first = LibvirtInventory.build(file: file, entries: before, devices: Self.devices())
        #expect(first.config.vms.map(\.name) == ["y", "x"])
        let moved = try [
            Self.entry(Self.domain("y", devices: Self.tap("vnet2"), metadata: meta(#"group="g" min="60mbit""#))),
            Self.entry(Self.domain("x", devices: Self.tap("vnet1"), metadata: meta(#"group="g" min="60mbit""#))),
        ]
        let out = LibvirtInventory.build(file: file, entries: moved, devices: Self.devices(), previous: Self.inForce(first))
        let byName = Dictionary(uniqueKeysWithValues: out.config.vms.map { ($0.name, $0) })
        #expect(byName["x"]?.group == "g", "x keeps its place in g")
        #expect(byName["y"]?.group == "h", "y stays in h, on its last good policy")
        #expect(out.unmanaged.isEmpty, "\(out.unmanaged)")
        #expect(out.kept.first?.reason.contains("more than the group's min 100mbit") == true, "\(out.kept)")
    }

    static func inForce(_ out: LibvirtInventory.Outcome) -> [String: HostConfig.VMConfig] {
        Dictionary(uniqueKeysWithValues: out.config.vms.compactMap { vm -> (String, HostConfig.VMConfig)? in
            if case .libvirt(let u) = vm.origin { (u, vm) } else { nil }
        })
    }

    /// Raising one VM's guarantee past what the link has left does not push out another VM
    /// in force (it was seen later): the raise is refused, the old guarantee stays.
    @Test func aRaisedGuaranteeThatDoesNotFitKeepsTheOldOneAndReleasesNoOther() throws {
        let file = try Self.file()
        func meta(_ min: String) -> String { "<tandem:policy xmlns:tandem=\"urn:tandem:policy:1\" min=\"\(min)\"/>" }
        let a = try Self.entry(Self.domain("a", devices: Self.tap("vnet1"), metadata: meta("500mbit")))
        let b = try Self.entry(Self.domain("b", devices: Self.tap("vnet2"), metadata: meta("400mbit")))
        let first = LibvirtInventory.build(file: file, entries: [a, b], devices: Self.devices())
        #expect(first.config.vms.map(\.name) == ["a", "b"])
        let raised = try Self.entry(Self.domain("a", devices: Self.tap("vnet1"), metadata: meta("800mbit")))
        let after = LibvirtInventory.build(file: file, entries: [raised, b], devices: Self.devices(), previous: Self.inForce(first))
        #expect(after.config.vms.map(\.name) == ["a", "b"])
        #expect(after.config.vms.map(\.policy.guarantee) == [.mbit(500), .mbit(400)])
        #expect(after.unmanaged.isEmpty)
        #expect(after.kept.map(\.domain) == ["a"])
        #expect(after.kept.first?.reason.contains("would bring link wire's guarantees to 1.2gbit") == true, "\(after.kept)")
        // A raise that fits is taken.
        let fits = try Self.entry(Self.domain("a", devices: Self.tap("vnet1"), metadata: meta("600mbit")))
        #expect(LibvirtInventory.build(file: file, entries: [fits, b], devices: Self.devices(), previous: Self.inForce(first)).config.vms.map(\.policy.guarantee) == [.mbit(600), .mbit(400)])
    }

    @Test func aSecondChannelHotPluggedBesideTheOneInForceKeepsIt() throws {
        let file = try Self.file()
        let one = try Self.entry(Self.domain("a", devices: Self.tap("vnet1")))
        let first = LibvirtInventory.build(file: file, entries: [one], devices: Self.devices())
        let ch = try #require(first.config.vms.first?.channel)
        let second = "<channel type='unix'><source mode='bind' path='/run/extra.sock'/><target type='virtio' name='org.tandem.agent.0'/></channel>"
        let two = try Self.entry(Self.domain("a", devices: second + Self.tap("vnet1")))
        let after = LibvirtInventory.build(file: file, entries: [two], devices: Self.devices(), previous: Self.inForce(first))
        #expect(after.config.vms.map(\.channel) == [ch])
        #expect(after.kept.count == 1 && after.kept[0].reason.contains("(the one in force, \(ch), stays)"), "\(after.kept)")
        #expect(LibvirtInventory.build(file: file, entries: [two], devices: Self.devices()).unmanaged.count == 1)
    }

    @Test func theFilesVMsAndSettingsAreKeptAsTheyAre() throws {
        let file = try Self.file("[[vm]]\nname = \"static\"\ninterface = \"tap9\"\n")
        let out = LibvirtInventory.build(file: file, entries: [try Self.entry(Self.domain("a", devices: Self.tap("vnet1")))], devices: Self.devices())
        var expected = file
        expected.vms.append(out.config.vms[1])
        #expect(out.config == expected)
        #expect(out.config.vms[0].origin == .file)
    }
}

extension LibvirtDomain {
    static func parseOrNil(_ xml: String) -> LibvirtDomain? { try? parse(xml) }
}
