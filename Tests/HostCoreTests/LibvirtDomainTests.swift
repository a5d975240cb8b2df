import Testing
import TandemProtocol
@testable import HostCore

/// Domain XML written here from libvirt's documented domain format (formatdomain), for the
/// cases a test host cannot start (VFs, another orchestrator's metadata). XML captured from
/// this machine's libvirtd is read in ``LibvirtInventoryTests``.
@Suite struct LibvirtDomainTests {
    static let running = """
        <domain type='kvm' id='3'>
          <name>vm1</name>
          <uuid>6a2c4e1e-2f4b-4a55-9d37-0d3c41f1e9a2</uuid>
          <metadata>
            <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1"><nova:name>web</nova:name></nova:instance>
            <tandem:policy xmlns:tandem="urn:tandem:policy:1" weight="2" min="1gbit" max="8gbit" group="tenant-a"/>
          </metadata>
          <memory unit='KiB'>524288</memory>
          <devices>
            <emulator>/usr/bin/qemu-system-x86_64</emulator>
            <interface type='ethernet'>
              <mac address='52:54:00:12:34:56'/>
              <target dev='vnet3' managed='no'/>
              <model type='virtio'/>
              <alias name='net0'/>
            </interface>
            <interface type='bridge'>
              <mac address='52:54:00:12:34:57'/>
              <source bridge='br0'/>
              <target dev='vnet4'/>
            </interface>
            <interface type='hostdev' managed='yes'>
              <mac address='52:54:00:6d:90:02'/>
              <driver name='vfio'/>
              <source>
                <address type='pci' domain='0x0000' bus='0x03' slot='0x10' function='0x1'/>
              </source>
              <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/>
            </interface>
            <hostdev mode='subsystem' type='pci' managed='yes'>
              <driver name='vfio'/>
              <source>
                <address domain='0x0000' bus='0x03' slot='0x10' function='0x3'/>
              </source>
              <address type='pci' domain='0x0000' bus='0x00' slot='0x06' function='0x0'/>
            </hostdev>
            <channel type='unix'>
              <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-3-vm1/org.qemu.guest_agent.0'/>
              <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/>
            </channel>
            <channel type='unix'>
              <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-3-vm1/org.tandem.agent.0'/>
              <target type='virtio' name='org.tandem.agent.0' state='disconnected'/>
              <alias name='channel1'/>
              <address type='virtio-serial' controller='0' bus='0' port='2'/>
            </channel>
          </devices>
        </domain>
        """

    @Test func aRunningDomainGivesItsChannelTapsVFsAndPolicy() throws {
        let d = try LibvirtDomain.parse(Self.running)
        #expect(d.name == "vm1" && d.id == 3 && d.uuid == "6a2c4e1e-2f4b-4a55-9d37-0d3c41f1e9a2")
        #expect(d.channels == ["/var/lib/libvirt/qemu/channel/target/domain-3-vm1/org.tandem.agent.0"])
        #expect(d.taps == [LibvirtDomain.Tap(type: "ethernet", device: "vnet3", source: nil), LibvirtDomain.Tap(type: "bridge", device: "vnet4", source: "br0")])
        #expect(d.vfs.map(\.description) == ["0000:03:10.1", "0000:03:10.3"], "the VF's address, not the guest's")
        #expect(d.policy == LibvirtDomain.PolicyMetadata(weight: 2, min: .gbit(1), max: .gbit(8), group: "tenant-a"))
        #expect(d.problems.isEmpty, "\(d.problems)")
        #expect(d.isTandem)
    }

    @Test func aDomainWithoutTandemPartsIsNotTandems() throws {
        let d = try LibvirtDomain.parse("<domain type='kvm'><name>plain</name><devices><interface type='network'><source network='default'/></interface></devices></domain>")
        #expect(!d.isTandem && d.id == nil && d.taps.isEmpty, "an inactive domain's interface has no target dev")
    }

    @Test(arguments: [
        (#"weight="0""#, "<tandem:policy weight=\"0\">"),
        (#"min="fast""#, "<tandem:policy min=\"fast\">"),
        (#"min="2gbit" max="1gbit""#, "min is above max"),
        (#"speed="1""#, "<tandem:policy speed=...> is not known"),
        (#"group="a b""#, "<tandem:policy group=\"a b\">"),
    ])
    func badMetadataIsAProblemNamingTheDomainAndTheElement(attributes: String, expected: String) throws {
        let xml = "<domain><name>vm9</name><metadata><tandem:policy xmlns:tandem='urn:tandem:policy:1' \(attributes)/></metadata></domain>"
        let d = try LibvirtDomain.parse(xml)
        #expect(d.problems.count == 1)
        #expect(d.problems.first?.hasPrefix("domain vm9: ") == true, "\(d.problems)")
        #expect(d.problems.first?.contains(expected) == true, "\(d.problems)")
        #expect(d.isTandem, "shown as unmanaged, with the reason")
    }

    @Test func twoTandemChannelsAreAProblem() throws {
        let channel = "<channel type='unix'><source mode='bind' path='/p/%d'/><target type='virtio' name='org.tandem.agent.0'/></channel>"
        let xml = "<domain id='1'><name>dup</name><devices>\(channel.replacingOccurrences(of: "%d", with: "1"))\(channel.replacingOccurrences(of: "%d", with: "2"))</devices></domain>"
        let d = try LibvirtDomain.parse(xml)
        #expect(d.problems == ["domain dup: 2 channels named org.tandem.agent.0 (/p/1, /p/2); one is expected"])
    }

    @Test func aChannelThatIsNotAUnixSocketIsAProblem() throws {
        let xml = "<domain><name>pty</name><devices><channel type='pty'><target type='virtio' name='org.tandem.agent.0'/></channel></devices></domain>"
        let d = try LibvirtDomain.parse(xml)
        #expect(d.channels.isEmpty)
        #expect(d.problems.first?.contains("domain pty: <channel type='pty'>") == true, "\(d.problems)")
    }

    @Test func notADomainOrNotXMLIsAnError() {
        #expect(throws: LibvirtXMLError.notADomain) { try LibvirtDomain.parse("<network><name>default</name></network>") }
        #expect(throws: (any Error).self) { try LibvirtDomain.parse("<domain><name>cut") }
    }
}
