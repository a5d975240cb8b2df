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
    /// Pings from a thread of its own: a test body that blocks the cooperative pool (a
    /// blocking socket call, a child process) must not silence the host.
    var pinger: Thread?
    var pingerStopped = false

    public init() throws {
        let (master, path) = try PseudoTerminal.open()
        slavePath = path
        let once = OnceFD(master)
        let box = WeakHost()
        // Frames are recorded on the channel's own thread: a test body that blocks the
        // cooperative pool (a blocking socket call, a child process) does not stop the host
        // from hearing the agent.
        channel = FrameChannel(name: "testhost", endpoint: .closedOnEnd, observer: { e in
            if case .frame(let f) = e, case .message(let m, let s, _) = MessageCodec.decodeGuest(f), let host = box.host {
                host.lock.withLock { host.received.append((m, s)) }
            }
        }) { try once.take() }
        box.host = self
        channel.start()
    }

    public func stop() { channel.stop(); lock.withLock { pingerStopped = true } }

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

    /// Grants every reservation the agent asks for, until the returned granter is cancelled
    /// (from a thread of its own, like the pings).
    public func grantAll() -> Granter {
        let g = Granter()
        let t = Thread { [weak self] in
            var seen = Set<String>()
            while !g.isCancelled, let self {
                for m in self.messages {
                    if case .reserve(let r) = m, !seen.contains(r.id) {
                        seen.insert(r.id)
                        self.send(.reservation(ReservationReply(id: r.id, granted: true)))
                    }
                }
                Thread.sleep(forTimeInterval: 0.02)
            }
        }
        t.name = "test-host-granter"
        t.start()
        return g
    }

    public final class Granter: @unchecked Sendable {
        private let lock = NSLock()
        private var cancelled = false
        var isCancelled: Bool { lock.withLock { cancelled } }
        public func cancel() { lock.withLock { cancelled = true } }
    }

    /// Clears what was received.
    public func forget() { lock.withLock { received.removeAll() } }

    /// Pings like a host that just connected, and answers the hello with a welcome.
    @discardableResult
    public func handshake(vm: String = "vm-test", policy: VMPolicy = VMPolicy(weight: 1, guarantee: .mbit(20), cap: nil), interval: UInt32 = 100) async throws -> Hello {
        // (A debug agent starting while a parallel `swift test` loads both cores can take
        // more than 10 s to say hello: seen once.) The "who is there" is asked again every
        // second until a hello comes, as the controller pings a quiet guest every second: a
        // first ping written before the agent has the port open was twice seen to get no
        // answer in 30 s (2026-12-07; the agent logged nothing from its channel), and a
        // real host would have asked again.
        let deadline = Date().addingTimeInterval(30)
        var found: (Hello, SessionID)?
        while found == nil {
            send(.ping(Ping(nonce: 1)), session: nil)
            do {
                found = try await waitFor("hello", timeout: 1) { m, s in
                    if case .hello(let h) = m, let s { return (h, s) }
                    return nil
                }
            } catch where Date() < deadline {
                continue
            }
        }
        let (hello, s) = found!
        session = s
        send(.welcome(Welcome(version: .v1, vm: vm, policy: policy, reportIntervalMilliseconds: interval)))
        if pinger == nil {
            let t = Thread { [weak self] in
                var n: UInt64 = 100
                while true {
                    Thread.sleep(forTimeInterval: 1)
                    guard let self, !self.lock.withLock({ self.pingerStopped }) else { return }
                    guard self.heartbeat, self.session != nil else { continue }
                    n += 1
                    self.send(.ping(Ping(nonce: n)))
                }
            }
            t.name = "test-host-pinger"
            t.start()
            pinger = t
        }
        return hello
    }
}

final class WeakHost: @unchecked Sendable {
    weak var host: TestHost?
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

/// Runs a blocking call (a socket client, a child process) on a thread of its own, so that
/// it does not hold one of the few threads of the cooperative pool that the code under test
/// (in this process) needs to answer it.
public func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { (k: CheckedContinuation<T, Error>) in
        let t = Thread { k.resume(with: Result { try body() }) }
        t.start()
    }
}
