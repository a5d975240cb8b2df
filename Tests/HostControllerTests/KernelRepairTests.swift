import Foundation
import Testing
import Netlink
import TandemProtocol
import TandemTestSupport
@testable import HostController
import HostCore
import TandemLabSupport
import TandemTransport

/// The windows of issue #18, item 10, against the real tandem-host: a VM's tap deleted and
/// re-created, and its limit class deleted, while the VM floods. The controller runs with
/// 5-s rounds: what it puts back comes from the kernel's notifications, not the rounds.
/// What got through is counted by the host namespace's IP layer (redirected through the
/// limit or not), over the first second after each fault.
@Suite(.serialized, Privileged.traffic, .exclusive)
struct KernelRepairTests {
    static let limit = 20e6
    static let flood = 200e6

    @Test func aRecreatedTapAndADeletedClassAreLimitedAgainAtOnce() async throws {
        try await TrafficGate.shared.run {
            let pair = try VethPair(prefix: "tdm-rep")
            defer { pair.close() }
            let dir = NSTemporaryDirectory() + "tandem-repair-\(UUID().uuidString.prefix(8))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try """
                [controller]
                interval = "5s"
                admin_socket = "\(dir)/host.sock"
                state_dir = "\(dir)/state"
                metrics = "off"

                [[link]]
                name = "wire"
                capacity = "1gbit"

                [[vm]]
                name = "vm-r"
                link = "wire"
                interface = "t0"
                max = "20mbit"
                """.write(toFile: dir + "/host.toml", atomically: true, encoding: .utf8)
            let host = try BackgroundProcess(["ip", "netns", "exec", pair.a.name, Binaries.path("tandem-host"), "run", "--config", dir + "/host.toml"],
                                             log: URL(fileURLWithPath: dir + "/host.log"))
            defer { host.stop() }
            let ifb = "tdm-" + TCBackend.hash8("vm-r")
            let nl = try RouteSocket(namespace: pair.a.name)
            func classLimit() async -> BitRate? {
                guard let i = try? await nl.index(of: ifb) else { return nil }
                return (try? await nl.classes(ifindex: i))?.first { $0.spec.handle == TCHandle("1:10")! }?.spec.ceil
            }
            func redirected() async -> Bool {
                guard let t0 = try? await nl.index(of: "t0"), let i = try? await nl.index(of: ifb),
                      let f = try? await nl.filters(ifindex: t0, parent: .ingress) else { return false }
                return f.contains { $0.redirectIfindex == i }
            }
            /// Seconds until `ok`, polled every millisecond or so.
            func until(_ what: String, timeout: Double, _ ok: () async -> Bool) async throws -> Double {
                let t0 = POSIX.now()
                while POSIX.now() - t0 < timeout {
                    if await ok() { return POSIX.now() - t0 }
                    try await Task.sleep(for: .milliseconds(1))
                }
                throw Shell.Failure("repair", "\(what) not within \(timeout) s; host log:\n\((try? String(contentsOfFile: dir + "/host.log", encoding: .utf8)) ?? "")")
            }
            _ = try await until("the VM limited at start", timeout: 15) {
                guard await classLimit() != nil else { return false }
                return await redirected()
            }
            let limit = try #require(await classLimit())
            #expect(limit <= .mbit(20))
            /// Bits per second that reached the host over `seconds` of a flood started now.
            func flooded(seconds: Double, during: () async throws -> Void = {}) async throws -> Double {
                let before = try pair.a.inOctets()
                let f = try UDPFlood(from: pair.b, to: "10.99.0.1", port: 5403, bitsPerSecond: Self.flood)
                try await during()
                try await Task.sleep(for: .seconds(seconds))
                f.stop()
                try await Task.sleep(for: .milliseconds(200))   // what HTB still queued
                return Double(try pair.a.inOctets() - before) * 8 / seconds
            }
            try pair.a.pinNeighbour("10.99.0.1", of: "t0", in: pair.b, dev: "t1")

            // 1. The class deleted while the VM floods: dropped, not passed, until put back.
            var back = 0.0
            let duringDelete = try await flooded(seconds: 1) {
                try await Task.sleep(for: .milliseconds(100))
                try pair.a.tc("class del dev \(ifb) classid 1:10")
                back = try await until("the class put back", timeout: 1) { await classLimit() == limit }
            }
            print("repair: class 1:10 deleted under a \(Int(Self.flood / 1e6)) Mbit/s flood: back after \(String(format: "%.1f", back * 1000)) ms; \(String(format: "%.1f", duringDelete / 1e6)) Mbit/s got through (limit \(limit))")
            #expect(duringDelete <= Double(limit.bitsPerSecond) * 1.2 + 1e6, "traffic got past the limit")
            #expect(duringDelete >= Double(limit.bitsPerSecond) * 0.5, "the VM was cut off, not limited")

            // 2. The tap deleted and made again (a VM restart); the flood starts as soon as its
            // addresses are there. A poller beside it sees when the new tap appears and when
            // its redirect does.
            let oldIndex = try await nl.index(of: "t0")
            try pair.a.ip("link del t0")
            let poller = Task { () -> (seen: Double, redirected: Double)? in
                let t0 = POSIX.now()
                var seen: Double?
                while POSIX.now() - t0 < 2 {
                    if seen == nil, let i = try? await nl.index(of: "t0"), i != oldIndex { seen = POSIX.now() }
                    if seen != nil, await redirected() { return (seen!, POSIX.now()) }
                }
                return nil
            }
            try pair.a.addVeth("t0", peer: pair.b, "t1")
            try pair.a.ip("addr add 10.99.0.1/24 dev t0")
            try pair.b.ip("addr add 10.99.0.2/24 dev t1")
            try pair.a.pinNeighbour("10.99.0.1", of: "t0", in: pair.b, dev: "t1")
            let afterRecreate = try await flooded(seconds: 1)
            let times = try #require(await poller.value, "the new tap's redirect within 2 s")
            let redirectBack = times.redirected - times.seen
            print("repair: tap re-created: its redirect \(String(format: "%.1f", redirectBack * 1000)) ms after the new tap was first seen; \(String(format: "%.1f", afterRecreate / 1e6)) Mbit/s of the flood got through in the first second")
            #expect(afterRecreate <= Double(limit.bitsPerSecond) * 1.2 + 1e6, "traffic got past the limit after the re-creation")
            #expect(await classLimit() == limit, "the limit in force kept")
            let status = try LineClient(path: dir + "/host.sock", what: "host").call(AdminRequest(op: "status"), as: AdminResponse.self).status
            #expect((status?.vms.first?.repairs ?? 0) >= 2, "both repairs counted: \(String(describing: status?.vms.first))")
        }
    }
}
