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
        var it = server.events.makeAsyncIterator()
        guard case .opened(let client)? = await it.next() else { Issue.record("no opened event"); return }
        #expect(client.pid == getpid())
        #expect(client.uid == geteuid())
        #expect(client.gid == getegid())
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
