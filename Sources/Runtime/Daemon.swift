import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// A logger writing to standard error at the given level.
public func makeLogger(_ label: String, level: String) -> Logger {
    LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
    var log = Logger(label: label)
    log.logLevel = Logger.Level(rawValue: level) ?? .info
    return log
}

/// Runs `body` until SIGTERM or SIGINT, then cancels it and waits for it to finish.
public func runUntilSignalled(_ body: @escaping @Sendable () async throws -> Void) async throws {
    signal(SIGTERM, SIG_IGN)
    signal(SIGINT, SIG_IGN)
    signal(SIGPIPE, SIG_IGN)
    let task = Task { try await body() }
    let sources = [SIGTERM, SIGINT].map { sig -> DispatchSourceSignal in
        let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        s.setEventHandler { task.cancel() }
        s.resume()
        return s
    }
    defer { sources.forEach { $0.cancel() } }
    try await task.value
}

/// A failure message for the command line: printed to stderr, exit status 1.
public struct CommandFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}
