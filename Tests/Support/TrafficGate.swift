import Testing
/// Lets one traffic-pushing test run at a time across all suites and test targets: two
/// iperf3 runs on a 2-core machine would measure each other.
public actor TrafficGate {
    public static let shared = TrafficGate()
    /// The gate behind ``Exclusive`` (a gate of its own, taken before ``shared``).
    public static let exclusive = TrafficGate()
    private var busy = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    public func run<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async {
        if !busy { busy = true; return }
        await withCheckedContinuation { waiters.append($0) }
    }

    private func release() {
        if waiters.isEmpty { busy = false } else { waiters.removeFirst().resume() }
    }
}

/// Runs the tests of a suite that has it one at a time with every other such test, across
/// suites and targets. Tests that run child processes, namespaces and blocking socket calls
/// hold a thread of Swift's cooperative pool while they wait, and on a 2-core machine the
/// pool has two: two such tests side by side (as `swift test` runs suites) would leave no
/// thread for the tasks they wait on. One at a time, one thread stays free.
public struct Exclusive: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }
    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        // Suites are scoped too: only the tests themselves take the gate.
        guard testCase != nil else { try await function(); return }
        try await TrafficGate.exclusive.run { try await function() }
    }
}

extension Trait where Self == Exclusive {
    /// See ``Exclusive``.
    public static var exclusive: Exclusive { Exclusive() }
}
