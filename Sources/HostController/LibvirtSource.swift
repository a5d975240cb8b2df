import HostCore
import TandemLibvirt

/// What `tandem-host` knows of libvirt's domains: each active domain's live XML (read) in the
/// order the domains were first seen, and the connection's state. ``apply(_:now:)`` takes
/// the watcher's updates; ``LibvirtInventory`` turns the domains into VMs. While libvirtd is
/// unreachable the domains stay as last read (their limits stay in force) until the resync.
struct LibvirtSource {
    let uri: String
    var entries: [String: LibvirtInventory.Entry] = [:]
    var order: [String] = []
    var state = "connecting"
    var error: String?
    var retryAt: Double?
    var resyncs: UInt64 = 0
    var unmanaged: [UnmanagedDomain] = []
    var kept: [UnmanagedDomain] = []

    init(uri: String) { self.uri = uri }

    var ordered: [LibvirtInventory.Entry] { order.compactMap { entries[$0] } }

    /// Takes an update; true when the domains changed (the VMs are to be worked out again).
    mutating func apply(_ update: LibvirtWatcher.Update, now: Double) -> Bool {
        switch update {
        case .resync(let all):
            state = "connected"; error = nil; retryAt = nil
            resyncs += 1
            let before = entries
            let live = Set(all.map(\.uuid))
            order.removeAll { !live.contains($0) }
            entries = entries.filter { live.contains($0.key) }
            for s in all { put(s) }
            return entries != before
        case .domain(let uuid, _, let snapshot, _):
            guard let snapshot else {
                order.removeAll { $0 == uuid }
                return entries.removeValue(forKey: uuid) != nil
            }
            let before = entries[uuid]
            put(snapshot)
            return entries[uuid] != before
        case .unreachable(let why, let retryIn):
            state = "unreachable"; error = why; retryAt = now + retryIn
            return false
        case .readFailed:
            return false
        }
    }

    mutating func put(_ s: LibvirtDomainSnapshot) {
        if entries[s.uuid] == nil { order.append(s.uuid) }
        entries[s.uuid] = LibvirtInventory.Entry(s)
    }

    func status(managed: [String], now: Double) -> LibvirtStatus {
        LibvirtStatus(state: state, uri: uri, error: error, retryIn: retryAt.map { max(0, $0 - now) }, managed: managed, unmanaged: unmanaged, kept: kept, resyncs: resyncs)
    }
}

extension LibvirtInventory.Entry {
    /// A domain as libvirt gave it, its XML read.
    public init(_ s: LibvirtDomainSnapshot) {
        self.init(uuid: s.uuid, name: s.name, domain: Result { () throws(LibvirtXMLError) in try LibvirtDomain.parse(s.xml) })
    }
}
