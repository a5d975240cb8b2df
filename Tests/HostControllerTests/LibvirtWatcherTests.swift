import Foundation
import Testing
import HostCore
@testable import HostController
import TandemLibvirt

/// The watcher against libvirt's own test driver (`test:///default`, in this process, shared
/// by its connections): real libvirt calls, events and event loop, no libvirtd and no root.
/// The suite against a real libvirtd and QEMU domains is ``LibvirtDomainTests`` in VMTests.
@Suite(.serialized) struct LibvirtWatcherTests {
    static func domainXML(_ name: String, tap: String) -> String {
        """
        <domain type='test'>
          <name>\(name)</name>
          <memory>65536</memory>
          <os><type>hvm</type></os>
          <devices>
            <interface type='ethernet'><target dev='\(tap)'/></interface>
            <channel type='unix'>
              <source mode='bind' path='/run/tandem-test/\(name).sock'/>
              <target type='virtio' name='org.tandem.agent.0'/>
            </channel>
          </devices>
        </domain>
        """
    }

    /// What the watcher said, in order.
    final class Seen: @unchecked Sendable {
        private let lock = NSLock()
        private var updates: [LibvirtWatcher.Update] = []
        func add(_ u: LibvirtWatcher.Update) { lock.lock(); updates.append(u); lock.unlock() }
        var all: [LibvirtWatcher.Update] { lock.lock(); defer { lock.unlock() }; return updates }

        /// The first update after `index` that `match` accepts, within `timeout` seconds.
        func wait<T>(after index: Int = 0, timeout: Double = 5, _ what: String, _ match: (LibvirtWatcher.Update) -> T?) async throws -> (T, Int) {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                let list = all
                for i in index..<list.count { if let v = match(list[i]) { return (v, i + 1) } }
                try await Task.sleep(for: .milliseconds(10))
            }
            throw WatchTimeout(what: what, seen: all.map { "\($0)" })
        }
    }
    struct WatchTimeout: Error, CustomStringConvertible {
        var what: String; var seen: [String]
        var description: String { "\(what) not seen within the time; seen: \(seen)" }
    }

    static func watch(_ w: LibvirtWatcher) -> (Seen, Task<Void, Never>) {
        let seen = Seen()
        let task = Task { for await u in w.updates { seen.add(u) } }
        return (seen, task)
    }

    @Test func aResyncThenEachDomainsStartMetadataChangeAndStopInOrder() async throws {
        let admin = try LibvirtConnection(uri: "test:///default", readOnly: false)
        defer { admin.close() }
        let watcher = LibvirtWatcher(uri: "test:///default")
        let (seen, task) = Self.watch(watcher)
        watcher.start()
        defer { watcher.stop(); task.cancel() }

        // The test driver's own running domain ("test") is in the resync; it is not Tandem's.
        let (first, i0) = try await seen.wait("the first resync") { u -> [LibvirtDomainSnapshot]? in if case .resync(let a) = u { a } else { nil } }
        #expect(first.contains { $0.name == "test" && $0.state == .running })

        let name = "tandem-\(getpid())"
        let uuid = try admin.createDomain(xml: Self.domainXML(name, tap: "vnet-\(getpid() % 10000)"))
        let (started, i1) = try await seen.wait(after: i0, "the started domain") { u -> LibvirtDomainSnapshot? in
            if case .domain(let id, _, let s, _) = u, id == uuid { s } else { nil }
        }
        let parsed = try LibvirtDomain.parse(started.xml)
        #expect(parsed.name == name)
        #expect(parsed.channels == ["/run/tandem-test/\(name).sock"])

        try admin.setMetadata(uuid: uuid, xml: #"<policy weight="3" min="10mbit"/>"#, key: "tandem", uri: LibvirtDomain.metadataNamespace)
        let (changed, i2) = try await seen.wait(after: i1, "the metadata change") { u -> LibvirtDomain? in
            guard case .domain(let id, _, let s?, let e) = u, id == uuid, case .metadataChanged = e.kind else { return nil }
            return try? LibvirtDomain.parse(s.xml)
        }
        #expect(changed.policy?.weight == 3)
        #expect(changed.policy?.min == .mbit(10))

        try admin.destroyDomain(uuid: uuid)
        let (gone, _) = try await seen.wait(after: i2, "the stopped domain") { u -> LibvirtDomainEvent? in
            if case .domain(let id, _, nil, let e) = u, id == uuid { e } else { nil }
        }
        #expect(gone.name == name)
    }

    @Test func aSourceFollowsTheUpdatesAndKeepsItsDomainsWhileUnreachable() throws {
        var source = LibvirtSource(uri: "qemu:///system")
        let a = LibvirtDomainSnapshot(uuid: "u-a", name: "a", state: .running, xml: "<domain><name>a</name></domain>")
        let b = LibvirtDomainSnapshot(uuid: "u-b", name: "b", state: .paused, xml: "<domain><name>b</name></domain>")
        let event = LibvirtDomainEvent(uuid: "u-a", name: "a", kind: .lifecycle(.stopped, detail: 1))
        var changed = source.apply(.resync([a, b]), now: 0)
        #expect(changed)
        #expect(source.ordered.map(\.name) == ["a", "b"])
        changed = source.apply(.resync([a, b]), now: 1)
        #expect(!changed, "the same domains again change nothing")
        // libvirtd goes away: nothing is dropped, the status says so.
        changed = source.apply(.unreachable(error: "libvirtd closed the connection", retryIn: 2), now: 10)
        #expect(!changed)
        #expect(source.ordered.count == 2)
        let st = source.status(managed: ["a", "b"], now: 11)
        #expect(st.state == "unreachable" && st.retryIn == 1 && st.error == "libvirtd closed the connection")
        // Back: a domain that stopped meanwhile is gone after the resync; b keeps its place.
        let c = LibvirtDomainSnapshot(uuid: "u-c", name: "c", state: .running, xml: "<domain><name>c</name></domain>")
        changed = source.apply(.resync([c, b]), now: 12)
        #expect(changed)
        #expect(source.ordered.map(\.name) == ["b", "c"])
        #expect(source.status(managed: [], now: 12).state == "connected")
        #expect(source.resyncs == 3)
        changed = source.apply(.domain(uuid: "u-b", name: "b", nil, event: event), now: 13)
        #expect(changed)
        #expect(source.ordered.map(\.name) == ["c"])
    }

    @Test func anUnreachableLibvirtIsSaidAndRetriedWithBackoff() async throws {
        let watcher = LibvirtWatcher(uri: "qemu+unix:///system?socket=/nonexistent/tandem-\(getpid()).sock", minBackoff: 0.05, maxBackoff: 0.2)
        let (seen, task) = Self.watch(watcher)
        watcher.start()
        defer { watcher.stop(); task.cancel() }
        var delays: [Double] = []
        var index = 0
        for _ in 0..<4 {
            let ((error, delay), next) = try await seen.wait(after: index, "an unreachable update") { u -> (String, Double)? in
                if case .unreachable(let e, let d) = u { (e, d) } else { nil }
            }
            #expect(error.contains("/nonexistent/tandem-"), "the error names the socket: \(error)")
            delays.append(delay)
            index = next
        }
        #expect(delays == [0.05, 0.1, 0.2, 0.2])
    }
}
