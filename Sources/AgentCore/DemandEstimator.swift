import Netlink
import TandemProtocol

/// Turns two samples of the agent's class counters and TCP sockets into a demand report.
/// Pure: the samples come from the caller, with the time they were taken.
public struct DemandEstimator: Sendable {
    /// A class's counters at a sample (what ``RouteSocket/classCounters(ifindex:)`` reads).
    public typealias ClassSample = ClassCounters

    public struct FlowSample: Equatable, Sendable {
        public var flow: FlowKey
        /// Identifies the socket across samples (a new socket on the same 5-tuple is new).
        public var inode: UInt32
        public var bytesSent: UInt64
        public var appLimited: Bool
        public init(flow: FlowKey, inode: UInt32, bytesSent: UInt64, appLimited: Bool) {
            self.flow = flow; self.inode = inode; self.bytesSent = bytesSent; self.appLimited = appLimited
        }
    }

    /// Most flows a report names; the heaviest are kept.
    public let maxFlows: Int
    var lastTime: Double?
    var lastClasses: [TCHandle: ClassSample] = [:]
    var lastFlows: [UInt32: FlowSample] = [:]
    var lastFlowTime: Double?
    var lastFlowDemand: [FlowDemand] = []
    public private(set) var sequence: UInt64 = 0

    public init(maxFlows: Int = 32) { self.maxFlows = min(maxFlows, Limits.maxFlowsPerReport) }

    /// A flow that ended (its socket destroyed, see ``SocketClosed``): the demand its last
    /// sample showed no longer counts, so a report says at once that the VM wants no more
    /// for it (sockets are sampled once a second). Returns whether it counted: it sent more
    /// than 100 kbit/s and wanted more.
    /// (The socket sample keeps its entry: the next sample replaces it, and a socket gone by
    /// then counts for nothing.)
    public mutating func forget(_ flow: FlowKey) -> Bool {
        guard let i = lastFlowDemand.firstIndex(where: { $0.flow == flow }) else { return false }
        let counted = Self.claims(lastFlowDemand[i])
        lastFlowDemand.remove(at: i)
        return counted
    }

    /// The flows whose last sample claims more: those whose end matters (``forget(_:)``).
    public var claiming: Set<FlowKey> { Set(lastFlowDemand.filter(Self.claims).map(\.flow)) }

    static func claims(_ f: FlowDemand) -> Bool { !f.wantsMore.isEmpty && f.rate > .kbit(100) }

    /// Starts the rates' interval at `time` (a flow ended: what the VM sends from then on is
    /// what the next report should say), keeping the drop counts of the last report: drops
    /// seen since then still count in the next.
    public mutating func restart(at time: Double, classes: [ClassSample]) {
        guard let t0 = lastTime, time > t0 else { return }
        lastTime = time
        for c in classes {
            var p = lastClasses[c.handle] ?? c
            p.bytes = c.bytes
            lastClasses[c.handle] = p
        }
    }

    /// Forgets the previous sample (after the tree was rebuilt and counters restarted).
    public mutating func reset() { lastTime = nil; lastClasses = [:]; lastFlows = [:]; lastFlowTime = nil; lastFlowDemand = [] }

    /// The report for the interval since the last sample, or nil for the first sample.
    /// - Parameter flows: this interval's socket sample, or nil when flows were not sampled
    ///   this time (they cost more than class counters): the report then names no flows,
    ///   but whether the last sampled flows wanted more still counts.
    public mutating func report(at time: Double, classes: [ClassSample], flows: [FlowSample]?, epoch: UInt64, unmetReservations: BitRate) -> DemandReport? {
        let flowTime0 = lastFlowTime
        defer {
            lastTime = time
            lastClasses = Dictionary(classes.map { ($0.handle, $0) }, uniquingKeysWith: { a, _ in a })
            if let flows {
                lastFlows = Dictionary(flows.map { ($0.inode, $0) }, uniquingKeysWith: { a, _ in a })
                lastFlowTime = time
            }
        }
        guard let t0 = lastTime, time > t0 else { return nil }
        let dt = time - t0
        func rate(_ now: UInt64, _ before: UInt64?) -> BitRate {
            guard let before, now >= before else { return .zero }   // a reset counter gives no rate
            return BitRate(clamping: Double(now - before) * 8 / dt)
        }
        var classDemand: [ClassDemand] = []
        var total = BitRate.zero
        var wants = false
        for c in classes.sorted(by: { $0.handle < $1.handle }) {
            guard let name = ShapingTree.name(of: c.handle) else { continue }
            let prev = lastClasses[c.handle]
            let r = rate(c.bytes, prev?.bytes)
            var reasons: [WantReason] = []
            if let p = prev, c.drops > p.drops { reasons.append(.drops) }
            if c.backlog > 0 { reasons.append(.backlog) }
            if c.handle == ShapingTree.top { total = r } else if !reasons.isEmpty { wants = true }
            classDemand.append(ClassDemand(name: name, bytes: c.bytes, rate: min(r, .protocolMaximum),
                                           drops: prev.map { c.drops >= $0.drops ? c.drops - $0.drops : 0 } ?? 0,
                                           backlog: c.backlog, wantsMore: reasons))
        }
        var flowDemand = lastFlowDemand
        if let flows {
            flowDemand = []
            if let ft0 = flowTime0, time > ft0 {
                let fdt = time - ft0
                for f in flows {
                    guard let before = lastFlows[f.inode]?.bytesSent, f.bytesSent > before else { continue }
                    let r = BitRate(clamping: Double(f.bytesSent - before) * 8 / fdt)
                    flowDemand.append(FlowDemand(flow: f.flow, bytes: f.bytesSent, rate: min(r, .protocolMaximum), wantsMore: f.appLimited ? [] : [.notAppLimited]))
                }
            }
            flowDemand.sort { $0.rate > $1.rate }
            if flowDemand.count > maxFlows { flowDemand.removeLast(flowDemand.count - maxFlows) }
            lastFlowDemand = flowDemand
        }
        // Flows sampled earlier (sockets are sampled once a second) count only while the VM
        // still sends: a TCP flow that stopped must not keep claiming more until the next sample.
        if (flows != nil || total > .kbit(100)) && flowDemand.contains(where: Self.claims) { wants = true }
        if unmetReservations > .zero { wants = true }
        sequence += 1
        return DemandReport(sequence: sequence, intervalMilliseconds: UInt32(clamping: Int((dt * 1000).rounded())).clamped(to: Limits.reportIntervalRange),
                            epoch: epoch, rate: min(total, .protocolMaximum), wantsMore: wants,
                            unmetReservations: min(unmetReservations, .protocolMaximum), classes: classDemand,
                            // Flows are named in the reports that sampled them; in between they
                            // would repeat the same figures (their wanting still counts above).
                            flows: flows == nil ? [] : flowDemand)
    }
}

extension Comparable {
    func clamped(to r: ClosedRange<Self>) -> Self { min(max(self, r.lowerBound), r.upperBound) }
}
