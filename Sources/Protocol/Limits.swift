/// The bounds every message is held to. A peer that exceeds them gets its frame refused,
/// never a crash or an unbounded buffer.
public enum Limits {
    /// Largest frame, newline included. Longer input is skipped to the next newline
    /// without being buffered whole.
    public static let maxFrameBytes = 64 * 1024
    public static let maxStringBytes = 255
    public static let maxFlowsPerReport = 1024
    public static let maxClassesPerReport = 1024
    public static let maxReservationsPerAllocation = 1024
    public static let maxCapabilities = 32
    public static let maxOfferedVersions = 16
    public static let maxReservationIDBytes = 64
    public static let maxWeight = 10_000.0
    public static let reportIntervalRange: ClosedRange<UInt32> = 10...60_000
    /// An agent reports when something the host acts on changed (at most once per report
    /// interval) and at least this often; the host holds a report good for 2.5 times this.
    public static let reportKeepaliveSeconds = 1.0
}
