import Foundation
import HostCore
import TandemLibvirt
import TandemTransport

/// Follows libvirt's domains for `tandem-host`: connects (read-only), lists every active
/// domain with its live XML (a full resync), then turns each domain event into that domain
/// read again. When libvirtd goes away (stopped, restarted, keepalive lost) it says so and
/// connects again with backoff, and resyncs once back. Every libvirt call runs on a serial
/// queue of its own (they block on libvirtd); what was read comes out of ``updates`` in
/// order. Events that arrive while a resync is read are read after it.
public final class LibvirtWatcher: @unchecked Sendable {
    public enum Update: Sendable {
        /// Connected (again): every active domain as it is now; the ones not in it are gone.
        case resync([LibvirtDomainSnapshot])
        /// One domain changed: as it is now, or nil when it is no longer active (stopped,
        /// crashed, migrated away, undefined).
        case domain(uuid: String, name: String, LibvirtDomainSnapshot?, event: LibvirtDomainEvent)
        /// No connection: why, and the seconds until the next attempt. Nothing is released.
        case unreachable(error: String, retryIn: Double)
        /// A domain could not be read after an event (the connection is up): it stays as
        /// last read.
        case readFailed(uuid: String, name: String, error: String)
    }

    public let uri: String
    public let updates: AsyncStream<Update>
    let sink: AsyncStream<Update>.Continuation
    let queue = DispatchQueue(label: "tandem.libvirt")
    // Touched on `queue` only.
    var connection: LibvirtConnection?
    var backoff: Backoff
    var generation = 0
    var stopped = false

    public init(uri: String, minBackoff: Double = 0.5, maxBackoff: Double = 30) {
        self.uri = uri
        backoff = Backoff(min: minBackoff, max: maxBackoff)
        (updates, sink) = AsyncStream.makeStream(of: Update.self, bufferingPolicy: .unbounded)
    }

    public func start() { queue.async { self.connect() } }

    /// No more updates from now; the connection is closed on the watcher's queue, behind a
    /// call in flight (which may wait for a hung libvirtd: nothing here waits for it).
    public func stop() {
        sink.finish()
        queue.async {
            self.stopped = true
            self.generation += 1
            self.connection?.close()
            self.connection = nil
        }
    }

    func connect() {
        guard !stopped else { return }
        generation += 1
        let gen = generation
        do {
            let c = try LibvirtConnection(uri: uri)
            try c.watch(event: { [weak self] e in
                guard let self else { return }
                self.queue.async { self.changed(e, gen) }
            }, lost: { [weak self] why in
                guard let self else { return }
                self.queue.async { self.lost(why, gen) }
            })
            let all = try c.activeDomains()
            connection = c
            backoff.reset()
            sink.yield(.resync(all))
        } catch {
            // A close callback this attempt caused is queued behind it: it must not start a
            // second retry chain.
            generation += 1
            retry("\(error)")
        }
    }

    func changed(_ e: LibvirtDomainEvent, _ gen: Int, attempt: Int = 1) {
        guard gen == generation, let c = connection else { return }
        do {
            // nil: libvirt has no such domain, or it stopped while being read.
            let now = try c.domain(uuid: e.uuid)
            sink.yield(.domain(uuid: e.uuid, name: e.name, now.flatMap { $0.state.isActive ? $0 : nil }, event: e))
        } catch {
            // Any other failure says nothing about the domain: it stays as last read. On a
            // dead connection the close callback follows (and a resync after it); on a live
            // one the read is tried again, a few times.
            guard c.isAlive else { return }
            if attempt < Self.readAttempts {
                queue.asyncAfter(deadline: .now() + 0.2 * Double(attempt)) { [weak self] in self?.changed(e, gen, attempt: attempt + 1) }
            } else {
                sink.yield(.readFailed(uuid: e.uuid, name: e.name, error: "\(error)"))
            }
        }
    }

    static let readAttempts = 3

    func lost(_ why: String, _ gen: Int) {
        guard gen == generation, connection != nil, !stopped else { return }
        generation += 1
        connection?.close()
        connection = nil
        retry(why)
    }

    func retry(_ why: String) {
        guard !stopped else { return }
        let delay = backoff.next()
        sink.yield(.unreachable(error: why, retryIn: delay))
        queue.asyncAfter(deadline: .now() + delay) { [weak self] in self?.connect() }
    }
}

extension LibvirtInventory.Devices {
    /// The host as it is: VFs through sysfs (``SysfsVF``), a tap's bridge from its `master` link.
    public static func host(sysfs: String = "/sys") -> Self {
        Self(vf: { address in
            let m = try SysfsVF.resolve(address, sysfs: sysfs)
            return (m.pf, m.vf)
        }, master: { iface in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "\(sysfs)/class/net/\(iface)/master")).map { ($0 as NSString).lastPathComponent }
        })
    }
}
