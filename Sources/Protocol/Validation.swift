/// A value that came from a peer and must be checked before use.
public protocol Validatable {
    /// Throws the first rule the value breaks.
    func validate() throws(ValidationError)
}

/// A field that breaks a rule; the description names the field and the value.
public struct ValidationError: Error, Equatable, Sendable, CustomStringConvertible {
    public var field: String
    public var problem: String
    public init(field: String, problem: String) { self.field = field; self.problem = problem }
    public var description: String { "\(field): \(problem)" }
}

enum Check {
    static func string(_ s: String, _ field: String, allowEmpty: Bool = true) throws(ValidationError) {
        if s.utf8.count > Limits.maxStringBytes {
            throw ValidationError(field: field, problem: "longer than \(Limits.maxStringBytes) bytes (\(s.utf8.count))")
        }
        if !allowEmpty && s.isEmpty { throw ValidationError(field: field, problem: "empty") }
        if s.unicodeScalars.contains(where: { $0.value < 0x20 || (0x7f...0x9f).contains($0.value) }) {
            throw ValidationError(field: field, problem: "contains control characters")
        }
    }

    static func rate(_ r: BitRate, _ field: String) throws(ValidationError) {
        if r > BitRate.protocolMaximum {
            throw ValidationError(field: field, problem: "\(r.bitsPerSecond) bit/s is above the 10 Tbit/s limit")
        }
    }

    static func reasons(_ r: [WantReason], _ field: String) throws(ValidationError) {
        try count(r.count, max: 8, field)
        for x in r where x.rawValue.isEmpty || x.rawValue.utf8.count > 32 || x.rawValue.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value >= 0x7f }) {
            throw ValidationError(field: field, problem: "reason '\(x.rawValue.prefix(40))' is not 1 to 32 printable ASCII bytes")
        }
    }

    static func count(_ n: Int, max: Int, _ field: String) throws(ValidationError) {
        if n > max { throw ValidationError(field: field, problem: "\(n) entries, at most \(max) allowed") }
    }

    static func reservationID(_ id: String, _ field: String) throws(ValidationError) {
        if id.isEmpty || id.utf8.count > Limits.maxReservationIDBytes
            || !id.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || $0 == 45 || $0 == 95 }) {
            throw ValidationError(field: field, problem: "'\(id.prefix(80))' is not 1 to \(Limits.maxReservationIDBytes) letters, digits, '-' or '_'")
        }
    }

    static func mac(_ m: String, _ field: String) throws(ValidationError) {
        let parts = m.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6, parts.allSatisfy({ $0.count == 2 && $0.utf8.allSatisfy { (48...57).contains($0) || (65...70).contains($0) || (97...102).contains($0) } }) else {
            throw ValidationError(field: field, problem: "'\(m.prefix(80))' is not a MAC address like 52:54:00:12:34:56")
        }
    }
}

extension FlowSelector: Validatable {
    public func validate() throws(ValidationError) {
        if let s = source, let d = destination, s.address.isIPv4 != d.address.isIPv4 {
            throw ValidationError(field: "selector", problem: "source \(s) and destination \(d) are of different address families")
        }
        if sourcePort == 0 { throw ValidationError(field: "selector.sport", problem: "port 0 is not a port") }
        if destinationPort == 0 { throw ValidationError(field: "selector.dport", problem: "port 0 is not a port") }
    }
}

extension FlowKey: Validatable {
    public func validate() throws(ValidationError) {
        if source.isIPv4 != destination.isIPv4 {
            throw ValidationError(field: "flow", problem: "source \(source) and destination \(destination) are of different address families")
        }
        if proto == .any { throw ValidationError(field: "flow.proto", problem: "a flow is tcp or udp") }
    }
}

extension Hello: Validatable {
    public func validate() throws(ValidationError) {
        try Check.string(agentVersion, "hello.agentVersion")
        try Check.string(interface, "hello.interface", allowEmpty: false)
        try Check.mac(mac, "hello.mac")
        try Check.count(capabilities.count, max: Limits.maxCapabilities, "hello.capabilities")
        for c in capabilities { try Check.string(c, "hello.capabilities") }
        if protocolVersions.isEmpty { throw ValidationError(field: "hello.protocolVersions", problem: "empty") }
        try Check.count(protocolVersions.count, max: Limits.maxOfferedVersions, "hello.protocolVersions")
    }
}

extension DemandReport: Validatable {
    public func validate() throws(ValidationError) {
        try validateHead(classCount: classes.count, flowCount: flows.count)
        for c in classes { try c.validate() }
        for f in flows { try f.validate() }
    }

    /// The checks of the report's own fields and of how many classes and flows it names, in
    /// ``validate()``'s order (before each class's, then each flow's).
    func validateHead(classCount: Int, flowCount: Int) throws(ValidationError) {
        if !Limits.reportIntervalRange.contains(intervalMilliseconds) {
            throw ValidationError(field: "demand.intervalMilliseconds", problem: "\(intervalMilliseconds) is outside \(Limits.reportIntervalRange)")
        }
        try Check.rate(rate, "demand.rate")
        try Check.rate(unmetReservations, "demand.unmetReservations")
        try Check.count(classCount, max: Limits.maxClassesPerReport, "demand.classes")
        try Check.count(flowCount, max: Limits.maxFlowsPerReport, "demand.flows")
    }
}

extension ClassDemand {
    /// The checks ``DemandReport/validate()`` makes of each class.
    func validate() throws(ValidationError) {
        try Check.string(name, "demand.classes.name", allowEmpty: false)
        try Check.rate(rate, "demand.classes.rate")
        try Check.reasons(wantsMore, "demand.classes.wantsMore")
    }
}

extension FlowDemand {
    /// The checks ``DemandReport/validate()`` makes of each flow.
    func validate() throws(ValidationError) {
        try flow.validate()
        try Check.rate(rate, "demand.flows.rate")
        try Check.reasons(wantsMore, "demand.flows.wantsMore")
    }
}

extension ReserveRequest: Validatable {
    public func validate() throws(ValidationError) {
        try Check.reservationID(id, "reserve.id")
        if rate == .zero { throw ValidationError(field: "reserve.rate", problem: "a reservation needs a rate above 0") }
        try Check.rate(rate, "reserve.rate")
        try selector.validate()
    }
}

extension ReleaseRequest: Validatable {
    public func validate() throws(ValidationError) { try Check.reservationID(id, "release.id") }
}

extension Applied: Validatable {
    public func validate() throws(ValidationError) { if let e = error { try Check.string(e, "applied.error") } }
}

extension VMPolicy: Validatable {
    public func validate() throws(ValidationError) { try validate(prefix: "policy.") }

    /// `prefix` names where the policy sits: `welcome.policy.` on the wire, `` in a config.
    public func validate(prefix: String) throws(ValidationError) {
        if !weight.isFinite || weight <= 0 || weight > Limits.maxWeight {
            throw ValidationError(field: prefix + "weight", problem: "\(weight) is not a number above 0 and at most \(Int(Limits.maxWeight))")
        }
        try Check.rate(guarantee, prefix + "guarantee")
        if let cap {
            try Check.rate(cap, prefix + "cap")
            if cap < guarantee { throw ValidationError(field: prefix + "cap", problem: "\(cap) is below the guarantee \(guarantee)") }
        }
    }
}

extension Welcome: Validatable {
    public func validate() throws(ValidationError) {
        if !ProtocolVersion.supported.contains(version) {
            throw ValidationError(field: "welcome.version", problem: "version \(version) is not one this agent speaks (\(ProtocolVersion.supported.map(\.description).joined(separator: ", ")))")
        }
        try Check.string(vm, "welcome.vm", allowEmpty: false)
        try policy.validate(prefix: "welcome.policy.")
        if !Limits.reportIntervalRange.contains(reportIntervalMilliseconds) {
            throw ValidationError(field: "welcome.reportIntervalMilliseconds", problem: "\(reportIntervalMilliseconds) is outside \(Limits.reportIntervalRange)")
        }
    }
}

extension Allocation: Validatable {
    public func validate() throws(ValidationError) {
        try Check.rate(hardLimit, "allocation.hardLimit")
        try Check.rate(softLimit, "allocation.softLimit")
        if softLimit > hardLimit {
            throw ValidationError(field: "allocation.softLimit", problem: "\(softLimit) is above the hard limit \(hardLimit)")
        }
        try Check.count(reservations.count, max: Limits.maxReservationsPerAllocation, "allocation.reservations")
        for r in reservations {
            try Check.reservationID(r.id, "allocation.reservations.id")
            try Check.rate(r.rate, "allocation.reservations.rate")
            if r.rate == .zero { throw ValidationError(field: "allocation.reservations.rate", problem: "a granted reservation needs a rate above 0") }
            try r.selector.validate()
        }
    }
}

extension ReservationReply: Validatable {
    public func validate() throws(ValidationError) {
        try Check.reservationID(id, "reservation.id")
        if let r = reason { try Check.string(r, "reservation.reason") }
    }
}

extension ErrorMessage: Validatable {
    public func validate() throws(ValidationError) {
        try Check.string(message, "error.message")
        try Check.string(code.rawValue, "error.code", allowEmpty: false)
        if code.rawValue.utf8.count > 64 { throw ValidationError(field: "error.code", problem: "longer than 64 bytes") }
    }
}

extension Ping: Validatable {
    public func validate() throws(ValidationError) {}
}
