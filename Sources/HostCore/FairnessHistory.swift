import Foundation

/// What the fairness page shows and `/api/v1/fairness` serves: the fairness table as it is
/// now, the reservations the host holds, and the last minutes of each link (each VM's
/// allocation, measured rate and demand, and Jain's index), one sample a second.
public struct FairnessReport: Codable, Sendable {
    public struct LinkHistory: Codable, Sendable {
        public struct VMSeries: Codable, Sendable, Equatable {
            public var vm: String
            /// Bits per second, one value per entry of `times`; nil where the VM was not there.
            public var allocation: [UInt64?]
            public var measured: [UInt64?]
            public var demand: [UInt64?]
        }
        public var link: String
        public var capacity: UInt64
        /// Jain's index at each time; nil while nobody sent.
        public var jain: [Double?]
        public var vms: [VMSeries]
    }
    public var version: String
    /// When this was served, seconds since 1970.
    public var time: Double
    /// The samples' times, seconds since 1970, oldest first.
    public var times: [Double]
    public var links: [LinkFairness]
    public var history: [LinkHistory]
    public var reservations: [ReservationEntry]
}

/// The last ``capacity`` samples of the fairness table (10 minutes at one a second), kept by
/// the controller's once-a-second update and read by the HTTP server's threads.
public final class FairnessHistory: @unchecked Sendable {
    public let capacity: Int
    private let lock = NSLock()
    private var samples: [(time: Double, links: [LinkFairness])] = []
    private var head = 0
    private var reservations: [ReservationEntry] = []

    public init(capacity: Int = 600) { self.capacity = max(1, capacity) }

    /// A sample at `time` (seconds since 1970); the oldest goes once there are `capacity`.
    public func record(time: Double, links: [LinkFairness], reservations: [ReservationEntry]) {
        lock.withLock {
            if samples.count < capacity { samples.append((time, links)) } else {
                samples[head] = (time, links)
                head = (head + 1) % capacity
            }
            self.reservations = reservations
        }
    }

    public var count: Int { lock.withLock { samples.count } }

    /// The report as of now: the latest table, the history in columns (a VM that came or
    /// went has nil where it was not there), the reservations.
    public func report(version: String, now: Double) -> FairnessReport {
        let (ordered, reservations) = lock.withLock { (Array(samples[head...] + samples[..<head]), self.reservations) }
        let latest = ordered.last?.links ?? []
        var links: [String] = []
        for s in ordered { for l in s.links where !links.contains(l.link) { links.append(l.link) } }
        let history = links.map { name -> FairnessReport.LinkHistory in
            var vms: [String] = []
            for s in ordered { for l in s.links where l.link == name { for r in l.vms where !vms.contains(r.vm) { vms.append(r.vm) } } }
            let tables = ordered.map { s in s.links.first { $0.link == name } }
            let series = vms.map { vm -> FairnessReport.LinkHistory.VMSeries in
                let rows = tables.map { t in t?.vms.first { $0.vm == vm } }
                return .init(vm: vm, allocation: rows.map { $0?.allocation }, measured: rows.map { $0?.measured }, demand: rows.map { $0?.demand })
            }
            return .init(link: name, capacity: tables.last { $0 != nil }??.capacity ?? 0, jain: tables.map { $0?.jain }, vms: series)
        }
        return FairnessReport(version: version, time: now, times: ordered.map(\.time), links: latest, history: history, reservations: reservations)
    }
}
