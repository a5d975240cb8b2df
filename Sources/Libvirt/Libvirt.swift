import CLibvirt
import Foundation

/// The part of libvirt's C API that Tandem uses, in one place: a connection, its domains'
/// state and live XML, and the domain events (lifecycle, metadata change, device added and
/// removed) with the connection's close callback. Every call blocks on libvirtd's RPC: the
/// caller keeps them off the cooperative pool (``HostController``'s libvirt watcher runs them
/// on a queue of its own). Events arrive on libvirt's event loop thread (``LibvirtEventLoop``).

/// Why a libvirt call failed: the call and libvirt's own message.
public struct LibvirtError: Error, Sendable, Equatable, CustomStringConvertible {
    public var operation: String
    public var message: String
    public init(operation: String, message: String) { self.operation = operation; self.message = message }
    public var description: String { "\(operation): \(message)" }

    /// The thread's last libvirt error, taken for `operation`.
    static func last(_ operation: String) -> LibvirtError {
        let message = virGetLastErrorMessage().map { String(cString: $0) } ?? "unknown error"
        return LibvirtError(operation: operation, message: message)
    }
}

/// libvirt's default event loop, run on a thread of its own for the whole process. It has to
/// be registered before the first connection is opened (libvirt's rule), and is never stopped:
/// ``start()`` may be called any number of times.
public enum LibvirtEventLoop {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var started = false

    public static func start() {
        lock.lock()
        defer { lock.unlock() }
        guard !started else { return }
        started = true
        tandem_virt_silence_errors()
        virEventRegisterDefaultImpl()
        let thread = Thread {
            while true { _ = virEventRunDefaultImpl() }
        }
        thread.name = "libvirt-events"
        thread.start()
    }
}

/// A domain's state as libvirt reports it (`virDomainState`).
public enum LibvirtDomainState: String, Sendable, Equatable {
    case noState = "nostate", running, blocked, paused, shutdown, shutoff, crashed, pmSuspended = "pmsuspended"

    init(raw: Int32) {
        self = switch raw {
        case 1: .running
        case 2: .blocked
        case 3: .paused
        case 4: .shutdown
        case 5: .shutoff
        case 6: .crashed
        case 7: .pmSuspended
        default: .noState
        }
    }

    /// The domain has a QEMU process (and so its devices): running, paused or on its way down.
    public var isActive: Bool { self != .shutoff && self != .crashed && self != .noState }
}

/// One domain as read at one moment: identity, state and live XML.
public struct LibvirtDomainSnapshot: Sendable, Equatable {
    public var uuid: String
    public var name: String
    public var state: LibvirtDomainState
    /// `virDomainGetXMLDesc(0)`: the live XML of an active domain.
    public var xml: String
    public init(uuid: String, name: String, state: LibvirtDomainState, xml: String) {
        self.uuid = uuid; self.name = name; self.state = state; self.xml = xml
    }
}

/// A domain event as libvirt delivered it.
public struct LibvirtDomainEvent: Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// `virDomainEventType` and its detail (e.g. stopped/migrated is 5/3).
        case lifecycle(Lifecycle, detail: Int32)
        case metadataChanged(namespace: String?)
        case deviceAdded(alias: String)
        case deviceRemoved(alias: String)
    }

    public enum Lifecycle: Int32, Sendable {
        case defined = 0, undefined, started, suspended, resumed, stopped, shutdown, pmSuspended, crashed
    }

    public var uuid: String
    public var name: String
    public var kind: Kind
    public init(uuid: String, name: String, kind: Kind) { self.uuid = uuid; self.name = name; self.kind = kind }

    public var description: String {
        switch kind {
        case .lifecycle(let e, let d):
            let detail = e == .stopped && d == 3 || e == .started && d == 1 || e == .resumed && d == 1 ? "migrated" : "\(d)"
            return "\(name): \(e) (\(detail))"
        case .metadataChanged(let ns): return "\(name): metadata changed (\(ns ?? "-"))"
        case .deviceAdded(let a): return "\(name): device \(a) added"
        case .deviceRemoved(let a): return "\(name): device \(a) removed"
        }
    }
}

/// An open connection to libvirtd (or to an in-process driver such as `test:///default`).
/// Its methods block; it may be used from several threads (libvirt's connections are
/// thread-safe).
public final class LibvirtConnection: @unchecked Sendable {
    let conn: OpaquePointer
    public let uri: String
    private let lock = NSLock()
    private var callbackIDs: [Int32] = []
    private var closeRegistered = false
    private var closed = false

    /// What a callback calls. Each registration holds a reference of its own (passed as
    /// `opaque`), which libvirt gives back through ``releaseHandlers`` once it will not call
    /// that callback again: a callback running on the event thread while ``close()``
    /// deregisters it still finds its handlers.
    final class Handlers {
        let event: @Sendable (LibvirtDomainEvent) -> Void
        let lost: @Sendable (String) -> Void
        init(event: @escaping @Sendable (LibvirtDomainEvent) -> Void, lost: @escaping @Sendable (String) -> Void) { self.event = event; self.lost = lost }
    }

    /// Opens `uri`. Read-only is all Tandem needs: it reads domains and their events and
    /// writes nothing to libvirt. Starts the event loop first if it is not running.
    public init(uri: String, readOnly: Bool = true) throws(LibvirtError) {
        LibvirtEventLoop.start()
        guard let c = readOnly ? virConnectOpenReadOnly(uri) : virConnectOpen(uri) else { throw .last("connect to \(uri)") }
        conn = c
        self.uri = uri
    }

    deinit { close() }

    /// Deregisters the callbacks and closes the connection. Idempotent.
    public func close() {
        lock.lock()
        defer { lock.unlock() }
        guard !closed else { return }
        closed = true
        for id in callbackIDs { _ = virConnectDomainEventDeregisterAny(conn, id) }
        if closeRegistered { _ = virConnectUnregisterCloseCallback(conn, closeTrampoline) }
        _ = virConnectClose(conn)
    }

    /// Follows every domain's lifecycle, metadata and device events, and the connection's
    /// loss (libvirtd stopped or restarted, or its keepalive unanswered for `keepalive` x 3 s).
    /// `event` and `lost` run on libvirt's event loop thread: they must not block.
    public func watch(keepalive: Int32 = 5, event: @escaping @Sendable (LibvirtDomainEvent) -> Void, lost: @escaping @Sendable (String) -> Void) throws(LibvirtError) {
        lock.lock()
        defer { lock.unlock() }
        precondition(callbackIDs.isEmpty && !closeRegistered, "watch() is called once per connection")
        let handlers = Handlers(event: event, lost: lost)
        func register(_ body: (UnsafeMutableRawPointer) -> Int32) -> Int32 {
            let opaque = Unmanaged.passRetained(handlers).toOpaque()
            let id = body(opaque)
            // Refused: libvirt keeps nothing and will not call the free function.
            if id < 0 { Unmanaged<Handlers>.fromOpaque(opaque).release() }
            return id
        }
        let ids = [
            register { tandem_virt_on_lifecycle(conn, lifecycleTrampoline, $0, releaseHandlers) },
            register { tandem_virt_on_metadata(conn, metadataTrampoline, $0, releaseHandlers) },
            register { tandem_virt_on_device_added(conn, deviceAddedTrampoline, $0, releaseHandlers) },
            register { tandem_virt_on_device_removed(conn, deviceRemovedTrampoline, $0, releaseHandlers) },
        ]
        callbackIDs = ids.filter { $0 >= 0 }
        guard callbackIDs.count == ids.count else { throw .last("register domain events") }
        guard register({ virConnectRegisterCloseCallback(conn, closeTrampoline, $0, releaseHandlers) }) == 0 else { throw .last("register the close callback") }
        closeRegistered = true
        // Local drivers (test://) have no keepalive: -1 there is not an error for Tandem.
        _ = virConnectSetKeepAlive(conn, keepalive, 3)
    }

    /// Every active domain, with its state and live XML. A domain that stops between the
    /// listing and the reading is left out.
    public func activeDomains() throws(LibvirtError) -> [LibvirtDomainSnapshot] {
        var list: UnsafeMutablePointer<virDomainPtr?>?
        let n = virConnectListAllDomains(conn, &list, UInt32(VIR_CONNECT_LIST_DOMAINS_ACTIVE.rawValue))
        guard n >= 0, let list else { throw .last("list the active domains") }
        defer {
            for i in 0..<Int(n) { if let d = list[i] { virDomainFree(d) } }
            free(list)
        }
        var out: [LibvirtDomainSnapshot] = []
        for i in 0..<Int(n) {
            guard let d = list[i] else { continue }
            do { out.append(try snapshot(d)) } catch {
                // Stopped since the listing: left out. Anything else (libvirtd gone
                // mid-read) fails the whole listing, which is then not taken for the truth.
                guard Self.lastErrorIsGoneDomain() else { throw error }
            }
        }
        return out
    }

    /// The domain with this UUID as it is now, or nil if libvirt has no such domain (or it
    /// stopped while being read).
    public func domain(uuid: String) throws(LibvirtError) -> LibvirtDomainSnapshot? {
        guard let d = virDomainLookupByUUIDString(conn, uuid) else {
            if Self.lastErrorIsGoneDomain() { return nil }
            throw .last("look up domain \(uuid)")
        }
        defer { virDomainFree(d) }
        do { return try snapshot(d) } catch {
            if Self.lastErrorIsGoneDomain() { return nil }
            throw error
        }
    }

    /// The thread's last error says the domain does not exist or no longer runs.
    static func lastErrorIsGoneDomain() -> Bool {
        guard let e = virGetLastError() else { return false }
        return e.pointee.code == Int32(VIR_ERR_NO_DOMAIN.rawValue) || e.pointee.code == Int32(VIR_ERR_OPERATION_INVALID.rawValue)
    }

    /// Starts a transient domain from its XML (`virsh create`); returns its UUID. Needs a
    /// read-write connection. For the tests and the benchmark: Tandem itself writes nothing.
    public func createDomain(xml: String) throws(LibvirtError) -> String {
        guard let d = virDomainCreateXML(conn, xml, 0) else { throw .last("create a domain") }
        defer { virDomainFree(d) }
        return Self.identity(d).uuid
    }

    /// Stops a domain at once (`virsh destroy`).
    public func destroyDomain(uuid: String) throws(LibvirtError) {
        guard let d = virDomainLookupByUUIDString(conn, uuid) else { throw .last("look up domain \(uuid)") }
        defer { virDomainFree(d) }
        guard virDomainDestroy(d) == 0 else { throw .last("destroy domain \(uuid)") }
    }

    /// Sets (or with nil removes) a domain's metadata element in namespace `uri` under
    /// prefix `key`, on the running domain (`virsh metadata --live`).
    public func setMetadata(uuid: String, xml: String?, key: String, uri namespace: String) throws(LibvirtError) {
        guard let d = virDomainLookupByUUIDString(conn, uuid) else { throw .last("look up domain \(uuid)") }
        defer { virDomainFree(d) }
        guard virDomainSetMetadata(d, Int32(VIR_DOMAIN_METADATA_ELEMENT.rawValue), xml, key, namespace, UInt32(VIR_DOMAIN_AFFECT_LIVE.rawValue)) == 0 else {
            throw .last("set the metadata of domain \(uuid)")
        }
    }

    /// Whether the connection still answers (`virConnectIsAlive`).
    public var isAlive: Bool { virConnectIsAlive(conn) == 1 }

    func snapshot(_ d: virDomainPtr) throws(LibvirtError) -> LibvirtDomainSnapshot {
        let (uuid, name) = Self.identity(d)
        var state: Int32 = 0, reason: Int32 = 0
        guard virDomainGetState(d, &state, &reason, 0) == 0 else { throw .last("read the state of domain \(name)") }
        guard let x = virDomainGetXMLDesc(d, 0) else { throw .last("read the XML of domain \(name)") }
        defer { free(x) }
        return LibvirtDomainSnapshot(uuid: uuid, name: name, state: LibvirtDomainState(raw: state), xml: String(cString: x))
    }

    static func identity(_ d: virDomainPtr?) -> (uuid: String, name: String) {
        guard let d else { return ("", "") }
        var buf = [CChar](repeating: 0, count: Int(VIR_UUID_STRING_BUFLEN))
        let uuid = virDomainGetUUIDString(d, &buf) == 0 ? String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        let name = virDomainGetName(d).map { String(cString: $0) } ?? ""
        return (uuid, name)
    }

    static func deliver(_ opaque: UnsafeMutableRawPointer?, _ d: virDomainPtr?, _ kind: LibvirtDomainEvent.Kind) {
        guard let opaque else { return }
        let h = Unmanaged<Handlers>.fromOpaque(opaque).takeUnretainedValue()
        let (uuid, name) = identity(d)
        h.event(LibvirtDomainEvent(uuid: uuid, name: name, kind: kind))
    }
}

// The C callbacks: plain functions (no captures) that find the handlers through `opaque`.

private let lifecycleTrampoline: virConnectDomainEventCallback = { _, dom, event, detail, opaque in
    if let e = LibvirtDomainEvent.Lifecycle(rawValue: event) { LibvirtConnection.deliver(opaque, dom, .lifecycle(e, detail: detail)) }
    return 0
}

private let metadataTrampoline: virConnectDomainEventMetadataChangeCallback = { _, dom, _, ns, opaque in
    LibvirtConnection.deliver(opaque, dom, .metadataChanged(namespace: ns.map { String(cString: $0) }))
}

private let deviceAddedTrampoline: virConnectDomainEventDeviceAddedCallback = { _, dom, alias, opaque in
    LibvirtConnection.deliver(opaque, dom, .deviceAdded(alias: alias.map { String(cString: $0) } ?? ""))
}

private let deviceRemovedTrampoline: virConnectDomainEventDeviceRemovedCallback = { _, dom, alias, opaque in
    LibvirtConnection.deliver(opaque, dom, .deviceRemoved(alias: alias.map { String(cString: $0) } ?? ""))
}

private let releaseHandlers: virFreeCallback = { opaque in
    if let opaque { Unmanaged<LibvirtConnection.Handlers>.fromOpaque(opaque).release() }
}

private let closeTrampoline: virConnectCloseFunc = { _, reason, opaque in
    guard let opaque else { return }
    let why = switch reason {
    case 0: "connection error"
    case 1: "libvirtd closed the connection"
    case 2: "keepalive timed out"
    default: "closed"
    }
    Unmanaged<LibvirtConnection.Handlers>.fromOpaque(opaque).takeUnretainedValue().lost(why)
}
