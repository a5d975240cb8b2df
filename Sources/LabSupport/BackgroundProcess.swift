import Foundation

/// A child process this program started and will stop: by its pid, never by name.
public final class BackgroundProcess: @unchecked Sendable {
    public let process: Process
    public var pid: Int32 { process.processIdentifier }

    /// Starts `argv` (looked up in PATH), its output sent to `log` or discarded.
    public init(_ argv: [String], log: URL? = nil, environment: [String: String]? = nil) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = argv
        if let environment { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        if let log {
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            let h = try FileHandle(forWritingTo: log)
            process.standardOutput = h
            process.standardError = h
        } else {
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
        }
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    public var isRunning: Bool { process.isRunning }

    /// Sends `signal` and waits up to `grace` seconds, then SIGKILL.
    public func stop(signal: Int32 = SIGTERM, grace: Double = 3) {
        guard process.isRunning else { return }
        kill(pid, signal)
        let deadline = Date().addingTimeInterval(grace)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
    }

    /// Waits for the process to exit by itself, at most `timeout` seconds; nil if it did not.
    public func wait(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        return process.isRunning ? nil : process.terminationStatus
    }
}
