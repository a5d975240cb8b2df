import Foundation
import TandemRuntime
#if canImport(Glibc)
import Glibc
#endif

/// A client of the agent's socket, for the CLI and the tests. One connection: reservations
/// made through it live while it stays open (unless made with a TTL).
public final class AgentClient: @unchecked Sendable {
    var fd: Int32
    var buffer: [UInt8] = []
    public let path: String

    public init(path: String) throws {
        self.path = path
        do { fd = try UnixSocket.connect(path) } catch {
            throw ChannelError("cannot reach the agent at \(path): \(error). Is tandem-agent running? (--socket PATH names another socket)")
        }
    }

    deinit { close() }

    /// Closes the connection: reservations it held without a TTL are released.
    public func close() {
        if fd >= 0 { Glibc.close(fd); fd = -1 }
    }

    /// Sends one request and waits up to `timeout` seconds for its answer.
    public func call(_ request: AgentRequest, timeout: Double = 10) throws -> AgentResponse {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        var data = Array(try enc.encode(request))
        data.append(UInt8(ascii: "\n"))
        var sent = 0
        let deadline = POSIX.now() + timeout
        while sent < data.count {
            sent += try POSIX.writeSome(fd, data[sent...])
            if sent < data.count { _ = POSIX.poll([(fd, Int16(POLLOUT))], timeoutMilliseconds: 100) }
            if POSIX.now() > deadline { throw ChannelError("timed out sending to the agent") }
        }
        while true {
            if let nl = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(buffer[..<nl])
                buffer.removeFirst(nl + 1)
                return try JSONDecoder().decode(AgentResponse.self, from: Data(line))
            }
            let left = deadline - POSIX.now()
            if left <= 0 { throw ChannelError("the agent did not answer within \(Int(timeout))s") }
            _ = POSIX.poll([(fd, Int16(POLLIN))], timeoutMilliseconds: Int32(min(left, 1) * 1000))
            switch try POSIX.read(fd) {
            case .data(let b): buffer += b
            case .wouldBlock: continue
            case .end: throw ChannelError("the agent closed the connection")
            }
        }
    }

    /// Blocks until the agent closes the connection or `seconds` pass.
    public func waitForClose(seconds: Double) {
        _ = POSIX.poll([(fd, Int16(POLLIN))], timeoutMilliseconds: Int32(seconds * 1000))
    }
}
