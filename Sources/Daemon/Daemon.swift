import Foundation
import Logging
import ServiceLifecycle
import UnixSignals
#if canImport(Glibc)
import Glibc
#endif

/// A logger at the given level: on standard error, with journald priorities when systemd
/// connected standard error to the journal (`JOURNAL_STREAM`), swift-log's lines elsewhere.
public func makeLogger(_ label: String, level: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> Logger {
    let journal = environment["JOURNAL_STREAM"] != nil
    LoggingSystem.bootstrap { label -> any LogHandler in journal ? JournalLogHandler(label: label) : StreamLogHandler.standardError(label: label) }
    var log = Logger(label: label)
    log.logLevel = Logger.Level(rawValue: level) ?? .info
    return log
}

/// Runs a daemon's services in a `ServiceGroup` until SIGTERM or SIGINT, which shut them
/// down gracefully (in reverse order); a service that ends or fails ends the group.
/// SIGPIPE is ignored: a peer that hangs up is an `EPIPE`, never the end of the daemon.
public func runDaemon(_ services: [any Service], logger: Logger) async throws {
    signal(SIGPIPE, SIG_IGN)
    let group = ServiceGroup(configuration: .init(
        services: services.map { .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup) },
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger))
    try await group.run()
}

/// Runs `body` until SIGTERM or SIGINT, then cancels it and waits for it to finish. For
/// commands that are not daemons (the lab): they stop on Ctrl-C and clean up.
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
