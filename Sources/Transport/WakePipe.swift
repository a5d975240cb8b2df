#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A pipe that wakes a thread blocked in poll(2) when another thread has work for it.
final class WakePipe: @unchecked Sendable {
    let readFD: Int32
    let writeFD: Int32

    init() {
        var fds: [Int32] = [0, 0]
        // Without a pipe (EMFILE) nothing can wake the loop: better to stop here, saying why.
        guard pipe(&fds) == 0 else { fatalError("pipe(): \(String(cString: strerror(errno)))") }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        readFD = fds[0]
        writeFD = fds[1]
    }

    func wake() { var b: UInt8 = 1; _ = write(writeFD, &b, 1) }

    func drain() {
        var buf = [UInt8](repeating: 0, count: 64)
        while buf.withUnsafeMutableBytes({ read(readFD, $0.baseAddress, 64) }) > 0 {}
    }

    deinit { close(readFD); close(writeFD) }
}
