import Foundation
import Logging

/// Log lines on standard error with the syslog priority as a `<N>` prefix, which journald
/// reads from a service's stream (sd-daemon(3)), so `journalctl -p err` finds errors.
/// Used when `JOURNAL_STREAM` says standard error is the journal; elsewhere the daemons
/// write swift-log's usual lines.
public struct JournalLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    let label: String

    public init(label: String) { self.label = label }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// The syslog priority of a level: error 3, warning 4, notice 5, info 6, debug and trace 7.
    public static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .critical: 2
        case .error: 3
        case .warning: 4
        case .notice: 5
        case .info: 6
        case .debug, .trace: 7
        }
    }

    /// One line: `<P>message key=value ...` (journald adds the time and the unit).
    public static func format(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata) -> String {
        var line = "<\(priority(level))>\(message)"
        for (k, v) in metadata.sorted(by: { $0.key < $1.key }) { line += " \(k)=\(v)" }
        // One record a line: a newline inside a value would start a record at priority 6.
        return line.replacingOccurrences(of: "\n", with: "\\n") + "\n"
    }

    public func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        FileHandle.standardError.write(Data(Self.format(level: event.level, message: event.message, metadata: merged).utf8))
    }
}
