import Foundation
import Testing
import Netlink
import TandemLabSupport
import TandemTestSupport
import TandemTransport
@testable import HostController
@testable import HostCore

/// `tandem-host check` (issue #19) against a real namespace: taps there or not, a foreign
/// filter on a tap's ingress (what libvirt's <bandwidth> or Neutron would leave), Tandem's own
/// redirect, a PF without SR-IOV, a VF beyond the PF's count (a FAKE sysfs tree, named as
/// such: no SR-IOV NIC here), and channel sockets.
@Suite(.serialized, .exclusive, Privileged.enabled) struct HostCheckTests {
    @Test func findsWhatIsMissingAndWhatElseActsOnATap() async throws {
        let ns = try Netns(prefix: "tdm-check")
        defer { ns.delete() }
        for i in 1...4 { try ns.ip("link add v\(i) type veth peer name v\(i)p"); try ns.ip("link set v\(i) up") }
        // v2: someone else's redirect and classifier on its ingress.
        try ns.tc("qdisc add dev v2 ingress")
        try ns.tc("filter add dev v2 parent ffff: prio 5 protocol all u32 match u32 0 0 action mirred egress redirect dev v4p")
        try ns.tc("filter add dev v2 parent ffff: prio 9 protocol ip u32 match ip dst 10.0.0.1/32 flowid ffff:1")
        let dir = NSTemporaryDirectory() + "tandem-check-\(UUID().uuidString.prefix(8))"
        // A FAKE sysfs: pf0 with 2 VFs (no SR-IOV NIC on this machine).
        try FileManager.default.createDirectory(atPath: dir + "/sys/class/net/v3/device", withIntermediateDirectories: true)
        try "2\n".write(toFile: dir + "/sys/class/net/v3/device/sriov_numvfs", atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let listener = try UnixSocket.listen(dir + "/clean.chan")
        defer { close(listener) }
        let text = """
            [[link]]
            name = "up"
            capacity = "1gbit"
            [[vm]]
            name = "clean"
            interface = "v1"
            channel = "\(dir)/clean.chan"
            [[vm]]
            name = "policed"
            interface = "v2"
            [[vm]]
            name = "stopped"
            interface = "tap-gone"
            channel = "\(dir)/stopped.chan"
            [[vm]]
            name = "notapf"
            backend = "sriov"
            pf = "v4"
            vf = 0
            [[vm]]
            name = "toofar"
            backend = "sriov"
            pf = "v3"
            vf = 5
            """
        let config = try HostConfig.parse(text)
        let netlink = try RouteSocket(namespace: ns.name)
        let found = await HostCheck.run(config, netlink: netlink, sysfs: dir + "/sys")
        func status(_ vm: String, _ check: String) -> HostCheck.Status? { found.first { $0.subject == vm && $0.check == check }?.status }
        func detail(_ vm: String, _ check: String) -> String { found.first { $0.subject == vm && $0.check == check }?.detail ?? "" }
        #expect(status("clean", "interface") == .ok)
        #expect(status("clean", "ingress") == .ok)
        #expect(status("clean", "channel") == .ok, "\(detail("clean", "channel"))")
        #expect(status("policed", "ingress") == .fail)
        #expect(detail("policed", "ingress").contains("prio 5 u32") && detail("policed", "ingress").contains("prio 9 u32"), "\(detail("policed", "ingress"))")
        #expect(status("stopped", "interface") == .fail)
        #expect(detail("stopped", "interface").contains("no interface 'tap-gone'"))
        #expect(status("stopped", "channel") == .warn)
        #expect(status("notapf", "pf") == .fail)
        #expect(detail("notapf", "pf").contains("has no SR-IOV"))
        #expect(status("toofar", "vf") == .fail)
        #expect(detail("toofar", "vf").contains("vf 5, but v3 has 2 VFs"))

        // Once Tandem's own redirect is on the clean tap, it is still clean.
        let backend = TCBackend(vm: "clean", interface: "v1", netlink: netlink)
        try await backend.prepare(initialLimit: .mbit(100))
        let again = await HostCheck.run(config, netlink: netlink, sysfs: dir + "/sys")
        #expect(again.first { $0.subject == "clean" && $0.check == "ingress" }?.status == .ok)
        #expect(again.first { $0.subject == "clean" && $0.check == "ingress" }?.detail.contains("only Tandem's redirect") == true)
        try await backend.teardown()

        // The command: a table, exit 1 when something fails; --json for scripts.
        try text.write(toFile: dir + "/host.toml", atomically: true, encoding: .utf8)
        let table = try Shell.run(["ip", "netns", "exec", ns.name, Binaries.path("tandem-host"), "check", "--config", dir + "/host.toml"])
        #expect(table.status == 1, "\(table.stdout) \(table.stderr)")
        #expect(table.stdout.contains("FAIL") && table.stdout.contains("policed") && table.stdout.contains("failed"), "\(table.stdout)")
        let json = try Shell.run(["ip", "netns", "exec", ns.name, Binaries.path("tandem-host"), "check", "--json", "--config", dir + "/host.toml"])
        let parsed = try JSONDecoder().decode([HostCheck.Finding].self, from: Data(json.stdout.utf8))
        #expect(parsed.contains(HostCheck.Finding("policed", "ingress", .fail, detail("policed", "ingress"))))
        let missing = try Shell.run([Binaries.path("tandem-host"), "check", "--config", dir + "/nope.toml"])
        #expect(missing.status != 0 && missing.stderr.contains("nope.toml"), "\(missing.stderr)")
    }
}
