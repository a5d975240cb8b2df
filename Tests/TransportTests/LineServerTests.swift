import Foundation
import Testing
@testable import TandemTransport
import TandemTestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The line server over a real unix socket, with the line client.
@Suite(.serialized, .exclusive) struct LineServerTests {
    struct Echo: Codable, Equatable { var n: Int }

    func withServer(maxLine: Int = 64, linesPerSecond: Double = 50, _ body: (LineServer, String) async throws -> Void) async throws {
        let path = NSTemporaryDirectory() + "tandem-lines-\(UUID().uuidString.prefix(8)).sock"
        let server = try LineServer(path: path, mode: 0o600, maxLine: maxLine, linesPerSecond: linesPerSecond)
        try server.start()
        defer { server.stop() }
        // Answers every line with the line itself.
        let echo = Task {
            for await e in server.events {
                if case .line(let c, let bytes) = e { server.send(c.id, bytes + [10]) }
                if case .oversize(let c) = e { server.send(c.id, Array("{\"n\":-1}\n".utf8)) }
            }
        }
        defer { echo.cancel() }
        try await body(server, path)
    }

    @Test func requestsAreAnsweredInOrder() async throws {
        try await withServer { _, path in
            let c = try LineClient(path: path, what: "test")
            #expect(try await offPool { try c.call(Echo(n: 7), as: Echo.self, timeout: 3) } == Echo(n: 7))
            #expect(try await offPool { try c.call(Echo(n: 8), as: Echo.self, timeout: 3) } == Echo(n: 8))
        }
    }

    @Test func peerCredentialsAreTheKernels() async throws {
        let path = NSTemporaryDirectory() + "tandem-lines-\(UUID().uuidString.prefix(8)).sock"
        let server = try LineServer(path: path, mode: 0o600)
        try server.start()
        defer { server.stop() }
        let c = try LineClient(path: path, what: "test")
        defer { c.close() }
        var it = server.connections.makeAsyncIterator()
        guard case .opened(let client)? = await it.next() else { Issue.record("no opened event"); return }
        #expect(client.pid == getpid())
        #expect(client.uid == geteuid())
        #expect(client.gid == getegid())
    }

    /// A client that closed, then another's flood of lines that nobody has read yet: the
    /// close is still there to be seen (issue #18, item 5). It went into the same bounded
    /// stream as the lines, and the flood pushed it out.
    @Test func aCloseIsNotPushedOutByAnotherClientsFlood() async throws {
        let path = NSTemporaryDirectory() + "tandem-lines-\(UUID().uuidString.prefix(8)).sock"
        let server = try LineServer(path: path, mode: 0o600, linesPerSecond: 1e9)
        try server.start()
        defer { server.stop() }
        let first = try UnixSocket.connect(path)
        try await Task.sleep(for: .milliseconds(100))
        Glibc.close(first)
        try await Task.sleep(for: .milliseconds(100))
        let flood = try UnixSocket.connect(path)
        defer { Glibc.close(flood) }
        let lines = Array(String(repeating: "{}\n", count: 10_000).utf8)
        // (A non-blocking socket: written as the server reads.)
        try await offPool {
            var rest = lines[...]
            let deadline = Date().addingTimeInterval(10)
            while !rest.isEmpty && Date() < deadline {
                let n = try POSIX.writeSome(flood, rest)
                rest = rest.dropFirst(n)
                if n == 0 { usleep(1000) }
            }
        }
        try await Task.sleep(for: .milliseconds(500))
        let collector = Task { () -> [String] in
            var seen: [String] = []
            for await e in server.connections {
                if case .opened(let c) = e { seen.append("opened \(c.id)") }
                if case .closed(let c) = e { seen.append("closed \(c.id)"); break }
            }
            return seen
        }
        try await Task.sleep(for: .milliseconds(500))
        server.stop()   // (ends the stream if the close is not in it)
        let seen = await collector.value
        #expect(seen == ["opened 1", "opened 2", "closed 1"] || seen == ["opened 1", "closed 1"], "\(seen)")
    }

    @Test func aLineTooLongIsRefusedAndTheNextStillServed() async throws {
        try await withServer(maxLine: 32) { _, path in
            let c = try LineClient(path: path, what: "test")
            struct Long: Codable { var s: String }
            #expect(try await offPool { try c.call(Long(s: String(repeating: "x", count: 100)), as: Echo.self, timeout: 3) } == Echo(n: -1))
            #expect(try await offPool { try c.call(Echo(n: 3), as: Echo.self, timeout: 3) } == Echo(n: 3))
        }
    }

    @Test func theSocketFileGoesWithStop() throws {
        let path = NSTemporaryDirectory() + "tandem-lines-\(UUID().uuidString.prefix(8)).sock"
        let server = try LineServer(path: path, mode: 0o600)
        try server.start()
        #expect(FileManager.default.fileExists(atPath: path))
        server.stop()
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(throws: (any Error).self) { _ = try LineClient(path: path, what: "test") }
    }
}
