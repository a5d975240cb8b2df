// Fuzz target: what a guest sends, decoded, driven into a real Controller (fake backends and
// channels, named as such: no kernel) for two VMs on one link, with rounds between frames.
// The input is split into lines; each line is a frame from vm1 (vm2 stays quiet), and every
// third line a round runs, and the reallocations reports ask for in between. Checked after
// every frame: the limits in force within the link. After each input: no crash (and, under the sanitizer, no
// memory error), vm1 never limited above the link or beyond its cap, vm2 untouched by vm1's
// frames beyond its fair share's floor, reservations within their bound.
// Built with -DFUZZING -sanitize=fuzzer,address by scripts/fuzz.sh; otherwise a replayer.
import Foundation
import FuzzSupport
import HostController
import HostCore
import Logging
import TandemProtocol
import TandemTransport

/// A fake backend: no kernel, the limit kept, counters that move with the limit.
final class FakeBackend: HardLimitBackend, @unchecked Sendable {
    let lock = NSLock()
    var limit: BitRate?
    var sent: UInt64 = 0
    var describe: String { "fake" }
    func prepare(initialLimit: BitRate) async throws { lock.withLock { if limit == nil { limit = initialLimit } } }
    func apply(limit: BitRate, guarantee: BitRate) async throws { lock.withLock { self.limit = limit } }
    func currentLimit() async throws -> BitRate? { lock.withLock { limit } }
    func counters() async throws -> (sentBytes: UInt64, drops: UInt64?) {
        lock.withLock { sent += (limit ?? .zero).bitsPerSecond / 80; return (sent, 0) }
    }
    func teardown() async throws { lock.withLock { limit = nil } }
    func isIntact() async -> Bool { true }
    func sameLimit(_ a: BitRate, _ b: BitRate) -> Bool { a == b }
}

/// A fake channel: what the controller sends is dropped (counted).
final class FakeChannel: GuestChannel, @unchecked Sendable {
    let lock = NSLock()
    var frames = 0
    var cutOffs = 0
    func send(_ frame: [UInt8]) { lock.withLock { frames += 1 } }
    func disconnect(for seconds: Double) { lock.withLock { cutOffs += 1 } }
}

/// Built as a value (TOMLKit's parser leaks about 1.6 KB a parse, docs/HARDENING.md, which
/// the leak checker would report as this target's).
let config: HostConfig = {
    var c = HostConfig()
    c.controller.interval = 0.1
    c.links = [HostConfig.LinkConfig(name: "wire", capacity: .mbit(200), reserveBeyondGuarantee: true)]
    c.vms = [
        HostConfig.VMConfig(name: "vm1", link: "wire", backend: .tc(interface: "t1"), channel: "/fuzz/vm1",
                            policy: VMPolicy(weight: 1, guarantee: .mbit(20), cap: .mbit(150))),
        HostConfig.VMConfig(name: "vm2", link: "wire", backend: .tc(interface: "t2"), channel: "/fuzz/vm2",
                            policy: VMPolicy(weight: 1, guarantee: .mbit(50), cap: nil)),
    ]
    return c
}()

/// Runs an async body to completion from the fuzzer's synchronous callback.
func blocking(_ body: @escaping @Sendable () async -> Void) {
    let done = DispatchSemaphore(value: 0)
    Task { await body(); done.signal() }
    done.wait()
}

func fuzzOne(_ bytes: [UInt8]) {
    var log = Logger(label: "fuzz")
    log.logLevel = .critical
    let backends = ["vm1": FakeBackend(), "vm2": FakeBackend()]
    let channels = ["vm1": FakeChannel(), "vm2": FakeChannel()]
    let controller = try! Controller(config: config, backends: backends, channels: channels, store: nil, logger: log, now: 1000)
    var decoder = FrameDecoder(maxFrameBytes: Limits.maxFrameBytes)
    decoder.feed(bytes[...])
    var frames: [[UInt8]] = []
    while let e = decoder.next() { if case .frame(let f) = e { frames.append(f) } }
    let input = frames
    blocking {
        await controller.prepare()
        await controller.receive("vm1", .connected, now: 1000)
        var now = 1000.0
        for (i, f) in input.enumerated() {
            now += 0.01
            await controller.receive("vm1", .frame(f), now: now)
            // What a report that changes the demand asks for between rounds (issue #17).
            await controller.reactDue(now: now)
            if i % 3 == 2 { await controller.tick(now: now) }
            let (l1, l2) = (await controller.snapshot("vm1")?.limit ?? .zero, await controller.snapshot("vm2")?.limit ?? .zero)
            precondition(l1.bitsPerSecond + l2.bitsPerSecond <= 200_000_002, "limits in force above the link: \(l1) + \(l2)")
        }
        await controller.tick(now: now + 0.1)
        let s1 = await controller.snapshot("vm1")!
        precondition((s1.limit ?? .zero) <= .mbit(150), "vm1 above its cap: \(String(describing: s1.limit))")
        precondition(s1.reservations.count <= Controller.maxReservationsPerVM, "too many reservations")
        let s2 = await controller.snapshot("vm2")!
        precondition((s2.limit ?? .zero) >= .mbit(50) || (s2.limit ?? .zero) >= s2.measured, "vm2 pushed below its guarantee by vm1's frames: \(String(describing: s2.limit))")
        let status = await controller.status(now: now)
        _ = await controller.fairness()
        if ProcessInfo.processInfo.environment["FUZZ_VERBOSE"] != nil {
            let v = status.vms[0]
            print("frames \(input.count): vm1 agent \(v.agent), messages \(v.messages), reservations \(s1.reservations.count), refused \(v.violations), limit \(s1.limit.map(\.description) ?? "none")")
        }
    }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzOne(Fuzz.bytes(data, size))
    return 0
}

@_cdecl("fuzz_controller_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    Fuzz.drive(argc, argv, LLVMFuzzerTestOneInput)
}
#else
@main struct Replay {
    static func main() throws { try Fuzz.replay(fuzzOne) }
}
#endif
