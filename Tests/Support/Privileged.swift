import Foundation
import Testing
import TandemLabSupport

/// Gating for tests that need root and network namespaces.
///
/// Where they cannot run (not root, no `ip`), they are skipped on a developer's machine
/// but run, and so fail, when CI=true: CI must never pass by skipping them.
public enum Privileged {
    public static let isCI = ProcessInfo.processInfo.environment["CI"] == "true"
    public static let isRoot = getuid() == 0
    public static let hasTools = Shell.has("ip") && Shell.has("tc")
    public static let canRun = isRoot && hasTools

    /// Enabled where the test can run, and always in CI.
    public static var enabled: ConditionTrait {
        .enabled(if: canRun || isCI, "needs root, ip and tc (runs and fails in CI)")
    }

    /// Enabled where iperf3 is there too, and always in CI.
    public static var traffic: ConditionTrait {
        .enabled(if: (canRun && Shell.has("iperf3")) || isCI, "needs root, ip, tc and iperf3 (runs and fails in CI)")
    }
}

/// Two namespaces joined by a veth pair `t0` (in `a`, 10.99.0.1) and `t1` (in `b`,
/// 10.99.0.2), deleted by ``close()``.
public final class VethPair: Sendable {
    public let a: Netns
    public let b: Netns
    public init(prefix: String = "tdm") throws {
        a = try Netns(prefix: prefix)
        do {
            b = try Netns(prefix: prefix)
            try a.addVeth("t0", peer: b, "t1")
            try a.ip("addr add 10.99.0.1/24 dev t0")
            try b.ip("addr add 10.99.0.2/24 dev t1")
            try a.ip("addr add fd99::1/64 dev t0 nodad")
            try b.ip("addr add fd99::2/64 dev t1 nodad")
        } catch {
            a.delete()
            throw error
        }
    }
    public func close() { a.delete(); b.delete() }
}
