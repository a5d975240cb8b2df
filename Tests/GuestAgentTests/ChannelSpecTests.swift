import Foundation
import Testing
@testable import GuestAgent

@Suite struct ChannelSpecTests {
    /// A fake sysfs and /dev (named as such): how the agent finds its port without udev.
    static func fakeTree(ports: [String: String], link: Bool = false) throws -> (sysfs: String, dev: String) {
        let root = NSTemporaryDirectory() + "tandem-sysfs-\(UUID().uuidString)"
        let sysfs = root + "/sys/class/virtio-ports", dev = root + "/dev"
        try FileManager.default.createDirectory(atPath: dev, withIntermediateDirectories: true)
        for (port, name) in ports {
            try FileManager.default.createDirectory(atPath: sysfs + "/" + port, withIntermediateDirectories: true)
            try (name + "\n").write(toFile: sysfs + "/\(port)/name", atomically: true, encoding: .utf8)
        }
        if link {
            try FileManager.default.createDirectory(atPath: dev + "/virtio-ports", withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: dev + "/virtio-ports/org.tandem.agent.0", contents: nil)
        }
        return (sysfs, dev)
    }

    @Test func udevLinkWins() throws {
        let t = try Self.fakeTree(ports: ["vport1p1": "org.qemu.guest_agent.0"], link: true)
        #expect(try ChannelSpec.resolve(nil, sysfs: t.sysfs, dev: t.dev) == .device(t.dev + "/virtio-ports/org.tandem.agent.0"))
    }

    @Test func foundByNameInSysfsWithoutUdev() throws {
        let t = try Self.fakeTree(ports: ["vport1p1": "org.qemu.guest_agent.0", "vport1p2": "org.tandem.agent.0"])
        #expect(try ChannelSpec.resolve(nil, sysfs: t.sysfs, dev: t.dev) == .device(t.dev + "/vport1p2"))
    }

    @Test func missingPortIsAClearError() throws {
        let t = try Self.fakeTree(ports: ["vport1p1": "org.qemu.guest_agent.0"])
        #expect(throws: ChannelError.self) { try ChannelSpec.resolve(nil, sysfs: t.sysfs, dev: t.dev) }
        do { _ = try ChannelSpec.resolve(nil, sysfs: t.sysfs, dev: t.dev) } catch { #expect("\(error)".contains("no virtio-serial port named org.tandem.agent.0")) }
    }

    @Test func explicitChannels() throws {
        #expect(try ChannelSpec.resolve("unix:/run/x.sock") == .unix("/run/x.sock"))
        #expect(try ChannelSpec.resolve("/dev/pts/3") == .device("/dev/pts/3"))
        #expect(throws: ChannelError.self) { try ChannelSpec.resolve("unix:") }
    }
}
