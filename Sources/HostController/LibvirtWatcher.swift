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

    /// Closes the connection; no more updates.
    public func stop() {
        queue.sync {
            stopped = true
            generation += 1
            connection?.close()
            connection = nil
        }
        sink.finish()
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
            retry("\(error)")
        }
    }

    func changed(_ e: LibvirtDomainEvent, _ gen: Int) {
        guard gen == generation, let c = connection else { return }
        do {
            let now = try c.domain(uuid: e.uuid)
            sink.yield(.domain(uuid: e.uuid, name: e.name, now.flatMap { $0.state.isActive ? $0 : nil }, event: e))
        } catch {
            // A failed read on a live connection (the domain went away mid-read) is the
            // domain's; on a dead one it is the connection's.
            if c.isAlive {
                sink.yield(.domain(uuid: e.uuid, name: e.name, nil, event: e))
            } else {
                lost("\(error)", gen)
            }
        }
    }

    func lost(_ why: String, _ gen: Int) {
        guard gen == generation, !stopped else { return }
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
