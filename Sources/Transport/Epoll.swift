import CKernel
#if canImport(Glibc)
import Glibc
#endif

/// An epoll(7) set, level-triggered, readable interest only: who is ready costs one call
/// whatever the number of descriptors in the set (poll(2) asks every one, each time).
/// Each descriptor is registered with a token of the caller's, which is what
/// ``ready(max:timeoutMilliseconds:)`` returns.
final class EpollSet: @unchecked Sendable {
    /// The set's own descriptor; readable (to poll(2)) while a member is ready.
    let fd: Int32

    init() {
        let r = tandem_epoll_create()
        // Without it (EMFILE, ENOMEM) no channel can be served: better to stop here, saying why.
        guard r >= 0 else { fatalError("epoll_create1(): \(String(cString: strerror(-r)))") }
        fd = r
    }

    deinit { close(fd) }

    /// Adds `member` (readable interest) under `token`.
    func add(_ member: Int32, token: UInt64) throws(SystemError) {
        let r = tandem_epoll_add(fd, member, token)
        if r < 0 { throw SystemError("epoll_ctl", "fd \(member)", errno: -r) }
    }

    /// Removes `member` (call before closing it: a closed descriptor leaves the set by
    /// itself only if it was never duplicated).
    func remove(_ member: Int32) { _ = tandem_epoll_remove(fd, member) }

    /// The tokens of the members ready now (or within `timeoutMilliseconds`; -1 waits), at
    /// most `max` (each ready member comes once per call; a pass asks for the set's size).
    func ready(max: Int, timeoutMilliseconds: Int32 = 0) -> [UInt64] {
        let capacity = Swift.min(Swift.max(max, 1), 256)
        return [UInt64](unsafeUninitializedCapacity: capacity) { b, count in
            count = Swift.max(0, Int(tandem_epoll_wait(fd, b.baseAddress, Int32(capacity), timeoutMilliseconds)))
        }
    }
}
