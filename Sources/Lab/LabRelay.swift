import Foundation
import TandemTransport
#if canImport(Glibc)
import Glibc
#endif

/// The lab's stand-in for QEMU's virtio-serial chardev: a pseudo-terminal the guest agent
/// opens as its character device, relayed to a unix socket the controller connects to.
///
/// Like QEMU with `server=on`: one client at a time; while none is connected the relay does
/// not read the guest's side, so what the guest writes waits (and is delivered, stale, to the
/// next client) until the terminal's buffer is full; a client that connects later gets it.
public final class LabRelay: @unchecked Sendable {
    public let socketPath: String
    public let slavePath: String
    let master: Int32
    let listener: Int32
    let keep: Int32
    private let lock = NSLock()
    private var stopped = false

    public init(socketPath: String) throws {
        self.socketPath = socketPath
        (master, slavePath) = try PseudoTerminal.open()
        // Keep a slave descriptor open ourselves, so the master never sees a hang-up while
        // the agent restarts (a virtio port does not vanish with the agent either).
        keep = open(slavePath, O_RDWR | O_NOCTTY | O_CLOEXEC)
        if keep >= 0 { PseudoTerminal.makeRaw(keep) }
        do { listener = try UnixSocket.listen(socketPath, mode: 0o600) } catch {
            close(master); if keep >= 0 { close(keep) }
            throw error
        }
    }

    public func start() {
        let t = Thread { [self] in loop() }
        t.name = "tandem-lab-relay"
        t.start()
    }

    public func stop() { lock.withLock { stopped = true } }

    /// Drops the connected client, as QEMU does when its socket peer goes; the next client
    /// is accepted as usual.
    public func dropClient() { lock.withLock { dropRequested = true } }
    private var dropRequested = false
    /// Clients accepted so far (the controller connecting, and again after each drop).
    public var accepted: Int { lock.withLock { acceptedCount } }
    private var acceptedCount = 0

    private func loop() {
        var client: Int32 = -1
        var toClient: [UInt8] = [], toGuest: [UInt8] = []
        defer { if client >= 0 { close(client) }; close(listener); close(master); if keep >= 0 { close(keep) }; unlink(socketPath) }
        while !lock.withLock({ stopped }) {
            var fds: [(Int32, Int16)] = [(listener, Int16(POLLIN))]
            if client >= 0 {
                fds.append((master, Int16(POLLIN) | (toGuest.isEmpty ? 0 : Int16(POLLOUT))))
                fds.append((client, Int16(POLLIN) | (toClient.isEmpty ? 0 : Int16(POLLOUT))))
            }
            let r = POSIX.poll(fds, timeoutMilliseconds: 200)
            if r[0] & Int16(POLLIN) != 0, let c = UnixSocket.accept(listener) {
                if client >= 0 { close(c) } else { client = c; toClient = []; toGuest = []; lock.withLock { acceptedCount += 1 } }
            }
            if lock.withLock({ let d = dropRequested; dropRequested = false; return d }), client >= 0 {
                close(client); client = -1; continue
            }
            guard client >= 0, r.count == 3 else { continue }
            if r[1] & Int16(POLLIN) != 0, case .data(let b)? = try? POSIX.read(master) { toClient += b }
            if r[2] & (Int16(POLLIN) | Int16(POLLHUP) | Int16(POLLERR)) != 0 {
                switch try? POSIX.read(client) {
                case .data(let b)?: toGuest += b
                case .wouldBlock?: break
                default: close(client); client = -1; continue
                }
            }
            if !toGuest.isEmpty, let n = try? POSIX.writeSome(master, toGuest[...]) { toGuest.removeFirst(n) }
            if !toClient.isEmpty {
                if let n = try? POSIX.writeSome(client, toClient[...]) { toClient.removeFirst(n) } else { close(client); client = -1 }
            }
        }
    }
}
