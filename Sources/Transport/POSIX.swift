import CKernel
#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: its name, the object it was about, and errno.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public var call: String
    public var object: String
    public var errno: Int32
    public init(_ call: String, _ object: String, errno: Int32) { self.call = call; self.object = object; self.errno = errno }
    public var description: String {
        "\(call)(\(object)): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// Thin wrappers that retry EINTR and throw ``SystemError``.
public enum POSIX {
    public static func retrying<T: BinaryInteger>(_ call: String, _ object: @autoclosure () -> String, _ body: () -> T) throws(SystemError) -> T {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = Glibc.errno
            if e == EINTR { continue }
            throw SystemError(call, object(), errno: e)
        }
    }

    public static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }

    /// Reads what is there. `.data` with bytes, `.wouldBlock`, `.end` (read returned 0),
    /// or throws for other errors.
    public enum ReadResult: Sendable { case data([UInt8]), wouldBlock, end }

    public static func read(_ fd: Int32, max: Int = 65536) throws(SystemError) -> ReadResult {
        while true {
            // Read straight into the array that is returned: no zeroing, no copy.
            var n = 0
            let buf = [UInt8](unsafeUninitializedCapacity: max) { b, count in
                n = Glibc.read(fd, b.baseAddress, max)
                count = Swift.max(n, 0)
            }
            if n > 0 { return .data(buf) }
            if n == 0 { return .end }
            let e = Glibc.errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            throw SystemError("read", "fd \(fd)", errno: e)
        }
    }

    /// Reads what is there into `buffer` (the caller's, reused): the count read, 0 for the
    /// end (read returned 0), nil when it would block; throws for other errors.
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> Int? {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n >= 0 { return n }
            let e = Glibc.errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw SystemError("read", "fd \(fd)", errno: e)
        }
    }

    /// Writes as much as the descriptor takes now; returns the count written (0 if it
    /// would block). Never blocks on a non-blocking descriptor. On a socket whose peer has
    /// gone this is EPIPE, never SIGPIPE (send with MSG_NOSIGNAL), so a process using this
    /// library is not killed by a guest or client hanging up, whatever its signal setup.
    public static func writeSome(_ fd: Int32, _ bytes: ArraySlice<UInt8>) throws(SystemError) -> Int {
        if bytes.isEmpty { return 0 }
        var socket = true
        while true {
            let n = bytes.withUnsafeBytes {
                socket ? Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) : Glibc.write(fd, $0.baseAddress, $0.count)
            }
            if n >= 0 { return n }
            let e = Glibc.errno
            if e == ENOTSOCK && socket { socket = false; continue }
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return 0 }
            throw SystemError("write", "fd \(fd)", errno: e)
        }
    }

    /// poll(2) on a set of descriptors; returns revents per descriptor.
    public static func poll(_ fds: [(Int32, Int16)], timeoutMilliseconds: Int32) -> [Int16] {
        var p = fds.map { pollfd(fd: $0.0, events: $0.1, revents: 0) }
        while true {
            let r = p.withUnsafeMutableBufferPointer { Glibc.poll($0.baseAddress, nfds_t($0.count), timeoutMilliseconds) }
            if r >= 0 || Glibc.errno != EINTR { break }
        }
        return p.map(\.revents)
    }

    /// Monotonic seconds.
    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}

/// Unix-domain stream sockets.
public enum UnixSocket {
    static func address(_ path: String) throws(SystemError) -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw SystemError("socket", path, errno: ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        return addr
    }

    /// Listens at `path`, replacing a stale socket file, with the given mode.
    public static func listen(_ path: String, mode: mode_t = 0o660) throws(SystemError) -> Int32 {
        var addr = try address(path)
        let fd = try POSIX.retrying("socket", path) { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        var st = stat()
        if lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK {
            // A socket file left by a process that is gone is replaced; one that answers is
            // another instance's, and is not taken over.
            if let live = try? connect(path) { close(live); close(fd); throw SystemError("bind", "\(path) (in use by another process)", errno: EADDRINUSE) }
            unlink(path)
        }
        // Bound under a umask that lets nobody else in, then opened to `mode`: no window in
        // which any local user could connect.
        let old = umask(0o077)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        let bindErrno = errno
        umask(old)
        if rc < 0 { close(fd); throw SystemError("bind", path, errno: bindErrno) }
        chmod(path, mode)
        if Glibc.listen(fd, 64) < 0 { let e = errno; close(fd); throw SystemError("listen", path, errno: e) }
        POSIX.setNonBlocking(fd)
        return fd
    }

    /// Connects to `path`; returns a non-blocking descriptor.
    public static func connect(_ path: String) throws(SystemError) -> Int32 {
        var addr = try address(path)
        let fd = try POSIX.retrying("socket", path) { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        if rc < 0 { let e = errno; close(fd); throw SystemError("connect", path, errno: e) }
        POSIX.setNonBlocking(fd)
        return fd
    }

    /// Whether `path` takes a connection, without waiting: 0 (connected, and closed again),
    /// EAGAIN (the listener's backlog is full: someone else holds it and it is not accepting),
    /// or the errno that refused it.
    public static func probe(_ path: String) -> Int32 {
        guard var addr = try? address(path) else { return ENAMETOOLONG }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        return rc == 0 ? 0 : errno
    }

    /// Accepts one pending connection, or nil if none.
    public static func accept(_ listener: Int32) -> Int32? {
        let fd = tandem_accept(listener)
        return fd >= 0 ? fd : nil
    }
}

/// Pseudo-terminals: the lab's and the tests' stand-in for a virtio-serial port.
public enum PseudoTerminal {
    /// Opens a new master and returns it with the slave's path. The slave is put in raw
    /// mode so bytes pass unchanged.
    public static func open() throws(SystemError) -> (master: Int32, slavePath: String) {
        var name = [CChar](repeating: 0, count: 128)
        let m = tandem_open_pty(&name, 128)
        guard m >= 0 else { throw SystemError("posix_openpt", "/dev/ptmx", errno: -m) }
        return (m, String(decoding: name.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    /// Puts a terminal descriptor in raw mode (no echo, no line editing, 8-bit clean).
    public static func makeRaw(_ fd: Int32) {
        var t = termios()
        if tcgetattr(fd, &t) == 0 { cfmakeraw(&t); tcsetattr(fd, TCSANOW, &t) }
    }
}
