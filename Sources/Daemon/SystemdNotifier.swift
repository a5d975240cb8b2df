import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// sd_notify(3) without libsystemd: state lines sent as one datagram to the unix socket
/// systemd names in `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading
/// `@`). Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.
///
/// A unit with `Type=notify` is started once `READY=1` arrives; with `WatchdogSec=`,
/// systemd sets `WATCHDOG_USEC` and restarts a daemon that sends no `WATCHDOG=1` within it.
public final class SystemdNotifier: @unchecked Sendable {
    /// The socket's address as given; nil outside systemd.
    public let socketPath: String?
    /// Seconds within which systemd wants `WATCHDOG=1`; nil: no watchdog for this process.
    public let watchdogSeconds: Double?
    private let fd: Int32
    private let lock = NSLock()

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        let path = environment["NOTIFY_SOCKET"].flatMap { $0.isEmpty ? nil : $0 }
        socketPath = path
        fd = path == nil ? -1 : socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        // WATCHDOG_PID, when set, names the process the watchdog is for (not a child).
        if let usec = environment["WATCHDOG_USEC"].flatMap(UInt64.init), usec > 0,
           environment["WATCHDOG_PID"].flatMap(Int32.init).map({ $0 == getpid() }) ?? true {
            watchdogSeconds = Double(usec) / 1_000_000
        } else {
            watchdogSeconds = nil
        }
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Sends `state` (lines such as `READY=1`, `STATUS=...`). Returns false when it could not
    /// be sent (no systemd, or the socket refused it); systemd treats a missing message as the
    /// daemon not being ready, which is what such a failure means, so callers need not act.
    @discardableResult
    public func notify(_ state: String) -> Bool {
        guard let path = socketPath, fd >= 0 else { return false }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 }   // abstract namespace
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard bytes.count < capacity else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            raw.copyBytes(from: bytes)
        }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
        let message = Array(state.utf8)
        return lock.withLock {
            let sent = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    message.withUnsafeBytes { sendto(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL), sa, length) }
                }
            }
            return sent == message.count
        }
    }

    /// `READY=1` with a status line.
    public func ready(status: String) { notify("READY=1\nSTATUS=\(status)") }

    /// `RELOADING=1` with the monotonic clock, as `Type=notify-reload` wants it (systemd 253);
    /// older systemd takes it as a status change. `ready(status:)` ends the reload.
    public func reloading() {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        notify("RELOADING=1\nMONOTONIC_USEC=\(UInt64(ts.tv_sec) * 1_000_000 + UInt64(ts.tv_nsec) / 1000)")
    }

    /// `STOPPING=1`.
    public func stopping() { notify("STOPPING=1") }

    /// `WATCHDOG=1`, where systemd asked for it; at most twice per watchdog period is enough,
    /// so callers may call it every round (it sends at most once per quarter period).
    public func watchdog(now: Double) {
        guard let period = watchdogSeconds else { return }
        let due = lock.withLock { () -> Bool in
            if now - lastWatchdog < period / 4 { return false }
            lastWatchdog = now
            return true
        }
        if due { notify("WATCHDOG=1") }
    }
    private var lastWatchdog = -Double.infinity
}
