import Foundation
import Testing
@testable import TandemTransport
#if canImport(Glibc)
import Glibc
#endif

@Suite struct POSIXTests {
    /// A guest or client that hangs up while we write must give an error, not SIGPIPE: the
    /// test process does not ignore SIGPIPE, so before the fix this killed it (signal 13),
    /// as it did in CI during the hostile-guest test.
    @Test func writingToAPeerThatHungUpIsAnErrorNotASignal() throws {
        var fds: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        defer { close(fds[0]) }
        close(fds[1])
        let previous = signal(SIGPIPE, SIG_DFL)
        defer { signal(SIGPIPE, previous) }
        #expect(throws: SystemError.self) { _ = try POSIX.writeSome(fds[0], Array("hello\n".utf8)[...]) }
    }

    /// Non-sockets (pipes, ptys, character devices) still write.
    @Test func nonSocketsStillWrite() throws {
        var p: [Int32] = [0, 0]
        #expect(pipe(&p) == 0)
        defer { close(p[0]); close(p[1]) }
        #expect(try POSIX.writeSome(p[1], Array("abc".utf8)[...]) == 3)
        if case .data(let d) = try POSIX.read(p[0]) { #expect(d == Array("abc".utf8)) } else { Issue.record("nothing read back") }
    }
}
