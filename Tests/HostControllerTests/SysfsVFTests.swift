import Foundation
import Testing
import HostCore
@testable import HostController

/// The VF mapping on a sysfs tree laid out as the kernel lays out an Intel 82599's (a fixture
/// made by the test: the PCI devices as folders under devices/, the bus's links to them, each
/// VF's `physfn`, each PF's `virtfnN` and `net/IFACE`). Two ports, PF 03:00.0 (enp3s0f0) and
/// 03:00.1 (enp3s0f1); VF n of port 0 at 03:10.(2n), of port 1 at 03:10.(2n+1).
@Suite struct SysfsVFTests {
    static func fixture() throws -> String {
        let fm = FileManager.default
        let root = NSTemporaryDirectory() + "tandem-sysfs-\(UUID().uuidString.prefix(8))"
        let devices = root + "/devices/pci0000:00/0000:00:02.0"
        let bus = root + "/bus/pci/devices"
        try fm.createDirectory(atPath: bus, withIntermediateDirectories: true)
        func device(_ a: String) throws {
            try fm.createDirectory(atPath: devices + "/" + a, withIntermediateDirectories: true)
            try fm.createSymbolicLink(atPath: bus + "/" + a, withDestinationPath: "../../../devices/pci0000:00/0000:00:02.0/" + a)
        }
        for (port, netdev) in [(0, "enp3s0f0"), (1, "enp3s0f1")] {
            let pf = "0000:03:00.\(port)"
            try device(pf)
            try fm.createDirectory(atPath: devices + "/\(pf)/net/\(netdev)", withIntermediateDirectories: true)
            for n in 0..<4 {
                let vf = "0000:03:10.\(2 * n + port)"
                try device(vf)
                try fm.createSymbolicLink(atPath: devices + "/\(vf)/physfn", withDestinationPath: "../\(pf)")
                try fm.createSymbolicLink(atPath: devices + "/\(pf)/virtfn\(n)", withDestinationPath: "../\(vf)")
            }
        }
        // A device that is no VF (the host bridge's sibling, a NIC without SR-IOV).
        try device("0000:00:1f.6")
        return root
    }

    @Test(arguments: [(UInt8(0), "enp3s0f0", UInt32(0)), (1, "enp3s0f1", 0), (6, "enp3s0f0", 3), (7, "enp3s0f1", 3), (3, "enp3s0f1", 1)])
    func aVFAddressLeadsToItsPFAndIndex(function: UInt8, pf: String, vf: UInt32) throws {
        let root = try Self.fixture()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let m = try SysfsVF.resolve(LibvirtDomain.PCIAddress(domain: 0, bus: 3, slot: 0x10, function: function), sysfs: root)
        #expect(m.pf == pf && m.vf == vf)
    }

    @Test func whatIsNotAVFIsSaidSo() throws {
        let root = try Self.fixture()
        defer { try? FileManager.default.removeItem(atPath: root) }
        #expect(throws: SysfsVFError.notAVF("0000:03:00.0")) { try SysfsVF.resolve(.init(domain: 0, bus: 3, slot: 0, function: 0), sysfs: root) }
        #expect(throws: SysfsVFError.notAVF("0000:00:1f.6")) { try SysfsVF.resolve(.init(domain: 0, bus: 0, slot: 0x1f, function: 6), sysfs: root) }
        #expect(throws: SysfsVFError.noSuchDevice("0000:04:10.0")) { try SysfsVF.resolve(.init(domain: 0, bus: 4, slot: 0x10, function: 0), sysfs: root) }
        try FileManager.default.removeItem(atPath: root + "/devices/pci0000:00/0000:00:02.0/0000:03:00.0/net")
        #expect(throws: SysfsVFError.pfWithoutInterface("0000:03:00.0")) { try SysfsVF.resolve(.init(domain: 0, bus: 3, slot: 0x10, function: 0), sysfs: root) }
    }
}
