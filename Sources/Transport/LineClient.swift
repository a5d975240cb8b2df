import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Why a ``LineClient`` call failed, naming the socket.
public struct LineClientError: Error, CustomStringConvertible, Sendable {
    public enum Reason: Sendable, Equatable {
        /// `connect(2)` failed: the daemon named by `what` is not listening there.
        case unreachable(what: String, error: String)
        case timedOutWriting
        case noAnswer(seconds: Int)
        case closed
    }
    public var path: String
    public var reason: Reason
    public var description: String {
        switch reason {
        case .unreachable(let what, let error): "cannot reach \(what) at \(path): \(error)"
        case .timedOutWriting: "timed out writing to \(path)"
        case .noAnswer(let s): "no answer from \(path) within \(s)s"
        case .closed: "\(path) closed the connection"
        }
    }
}

/// A client of a ``LineServer``: one JSON request per line, one answer per line.
public final class LineClient: @unchecked Sendable {
    var fd: Int32
    var buffer: [UInt8] = []
    public let path: String

    /// Connects, or throws naming the socket and what to check (`what` names the daemon).
    public init(path: String, what: String) throws {
        self.path = path
        do { fd = try UnixSocket.connect(path) } catch {
            throw LineClientError(path: path, reason: .unreachable(what: what, error: "\(error)"))
        }
    }

    deinit { close() }

    /// Closes the connection.
    public func close() {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }

    /// Sends one request and waits up to `timeout` seconds for its answer.
    public func call<Request: Encodable, Response: Decodable>(_ request: Request, as: Response.Type, timeout: Double = 10) throws -> Response {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        var data = Array(try enc.encode(request))
        data.append(UInt8(ascii: "\n"))
        var sent = 0
        let deadline = POSIX.now() + timeout
        while sent < data.count {
            sent += try POSIX.writeSome(fd, data[sent...])
            if sent < data.count { _ = POSIX.poll([(fd, Int16(POLLOUT))], timeoutMilliseconds: 100) }
            if POSIX.now() > deadline { throw LineClientError(path: path, reason: .timedOutWriting) }
        }
        while true {
            if let nl = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[..<nl])
                buffer.removeFirst(nl + 1)
                return try JSONDecoder().decode(Response.self, from: Data(line))
            }
            let left = deadline - POSIX.now()
            if left <= 0 { throw LineClientError(path: path, reason: .noAnswer(seconds: Int(timeout))) }
            _ = POSIX.poll([(fd, Int16(POLLIN))], timeoutMilliseconds: Int32(min(left, 1) * 1000))
            switch try POSIX.read(fd) {
            case .data(let b): buffer += b
            case .wouldBlock: continue
            case .end: throw LineClientError(path: path, reason: .closed)
            }
        }
    }

    /// Blocks until the other side closes the connection or `seconds` pass.
    public func waitForClose(seconds: Double) {
        _ = POSIX.poll([(fd, Int16(POLLIN))], timeoutMilliseconds: Int32(min(seconds, 2_000_000) * 1000))
    }
}
