import Foundation
import TandemProtocol
import TandemLabSupport
import TandemTransport

/// A stand-in host for agent tests: it holds the master side of a pseudo-terminal (the
/// agent's "virtio port") and speaks the protocol over it, like the real controller would.
public final class TestHost: @unchecked Sendable {
    public let slavePath: String
    let channel: FrameChannel
    let lock = NSLock()
    var received: [(GuestMessage, SessionID?)] = []
    public var session: SessionID?
    /// While true (after a handshake) the host pings every second, as the controller does.
    public var heartbeat = true
    var collector: Task<Void, Never>?
    var pinger: Task<Void, Never>?

    public init() throws {
        let (master, path) = try PseudoTerminal.open()
        slavePath = path
        let once = OnceFD(master)
        channel = FrameChannel(name: "testhost", endpoint: .closedOnEnd) { try once.take() }
        channel.start()
        collector = Task { [channel, weak self] in
            for await e in channel.events {
                if case .frame(let f) = e, case .message(let m, let s, _) = MessageCodec.decodeGuest(f) {
                    self?.lock.withLock { self?.received.append((m, s)) }
                }
            }
        }
    }

    public func stop() { channel.stop(); collector?.cancel(); pinger?.cancel() }

    public func send(_ m: HostMessage, session: SessionID? = nil) {
        channel.send(MessageCodec.encode(m, session: session ?? self.session))
    }

    /// Everything received so far.
    public var messages: [GuestMessage] { lock.withLock { received.map(\.0) } }

    /// Waits until a received message satisfies `match` (checking what already came), or fails.
    public func waitFor<T>(_ what: String, timeout: Double = 10, _ match: (GuestMessage, SessionID?) -> T?) async throws -> T {
        let deadline = Date().addingTimeInterval(timeout)
        var seen = 0
        while Date() < deadline {
            let batch = lock.withLock { Array(received[seen...]) }
            for (m, s) in batch { if let v = match(m, s) { return v } }
            seen += batch.count
            try await Task.sleep(for: .milliseconds(20))
        }
        throw Shell.Failure("test host", "no \(what) from the agent within \(timeout)s; got: \(messages.map { "\($0)".prefix(60) })")
    }

    /// Grants every reservation the agent asks for, until the returned task is cancelled.
    public func grantAll() -> Task<Void, Never> {
        Task { [weak self] in
            var seen = Set<String>()
            while !Task.isCancelled, let self {
                for m in self.messages {
                    if case .reserve(let r) = m, !seen.contains(r.id) {
                        seen.insert(r.id)
                        self.send(.reservation(ReservationReply(id: r.id, granted: true)))
                    }
                }
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    /// Clears what was received.
    public func forget() { lock.withLock { received.removeAll() } }

    /// Pings like a host that just connected, and answers the hello with a welcome.
    @discardableResult
    public func handshake(vm: String = "vm-test", policy: VMPolicy = VMPolicy(weight: 1, guarantee: .mbit(20), cap: nil), interval: UInt32 = 100) async throws -> Hello {
        send(.ping(Ping(nonce: 1)), session: nil)
        let (hello, s): (Hello, SessionID) = try await waitFor("hello") { m, s in
            if case .hello(let h) = m, let s { return (h, s) }
            return nil
        }
        session = s
        send(.welcome(Welcome(version: .v1, vm: vm, policy: policy, reportIntervalMilliseconds: interval)))
        if pinger == nil {
            pinger = Task { [weak self] in
                var n: UInt64 = 100
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    guard let self, self.heartbeat, self.session != nil else { continue }
                    n += 1
                    self.send(.ping(Ping(nonce: n)))
                }
            }
        }
        return hello
    }
}

final class OnceFD: @unchecked Sendable {
    var fd: Int32?
    let lock = NSLock()
    init(_ fd: Int32) { self.fd = fd }
    func take() throws -> Int32 {
        try lock.withLock {
            guard let f = fd else { throw Shell.Failure("pty", "the test host's pseudo-terminal is gone") }
            fd = nil
            return f
        }
    }
}

/// Where the built executables are: next to the test bundle.
public enum Binaries {
    public static func path(_ name: String) -> String {
        // The test bundle (tandemPackageTests.xctest) sits in the build folder beside them.
        let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        return dir.appendingPathComponent(name).path
    }
}
