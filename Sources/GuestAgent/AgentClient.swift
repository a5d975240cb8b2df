import AgentCore
import TandemDaemon
import TandemTransport

/// A client of the agent's socket, for the CLI and the tests. One connection: reservations
/// made through it live while it stays open (unless made with a TTL).
public final class AgentClient: @unchecked Sendable {
    let line: LineClient
    public var path: String { line.path }

    public init(path: String) throws {
        do { line = try LineClient(path: path, what: "the agent") } catch {
            throw CommandFailure("\(error). Is tandem-agent running? (--socket PATH names another socket)")
        }
    }

    public func call(_ request: AgentRequest, timeout: Double = 10) throws -> AgentResponse {
        try line.call(request, as: AgentResponse.self, timeout: timeout)
    }

    /// Closes the connection: reservations it held without a TTL are released.
    public func close() { line.close() }

    public func waitForClose(seconds: Double) { line.waitForClose(seconds: seconds) }
}
