import Foundation
import Testing
import TandemLabSupport
import TandemTestSupport
import TandemTransport
import HostController

/// The live fairness page (issue #19) in a real browser: Debian's chromium, headless, in the
/// namespace of a tandem-host whose two VMs (veths) send what the test decides. The page
/// loads from tandem-host alone, plots each VM's series, and its plot moves when the traffic
/// does: asserted from the DOM the page leaves (`data-last` of each line), polled until it
/// shows the change, not after a sleep.
@Suite(.serialized, .exclusive, Privileged.traffic) struct FairnessPageTests {
    static var browser: String? { ["chromium", "chromium-browser", "google-chrome"].first { Shell.has($0) } }

    /// The page's DOM once its script ran (chromium's --dump-dom after a virtual-time budget).
    static func dom(_ ns: Netns, _ url: String, screenshot: String? = nil) throws -> String {
        var argv = ["ip", "netns", "exec", ns.name, browser!, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
                    "--user-data-dir=/tmp/tandem-chromium-\(getpid())", "--virtual-time-budget=4000", "--window-size=1400,1300"]
        argv += screenshot.map { ["--screenshot=\($0)"] } ?? ["--dump-dom"]
        return try Shell.check(argv + [url])
    }

    /// The `data-last` of the line for `vm`'s `series` (bit/s), if the page drew one.
    static func last(_ dom: String, vm: String, series: String) -> Double? {
        guard let r = dom.range(of: "data-vm=\"\(vm)\" data-series=\"\(series)\" data-last=\"") else { return nil }
        return Double(dom[r.upperBound...].prefix { $0 != "\"" })
    }

    static func attribute(_ dom: String, _ name: String) -> String? {
        guard let r = dom.range(of: "\(name)=\"") else { return nil }
        return String(dom[r.upperBound...].prefix { $0 != "\"" })
    }

    @Test func thePagePlotsEachVMAndMovesWithTheTrafficLoadingNothingFromElsewhere() async throws {
        guard Self.browser != nil else {
            #expect(!Privileged.isCI, "chromium is needed (scripts/setup.sh installs it)")
            return
        }
        defer { try? FileManager.default.removeItem(atPath: "/tmp/tandem-chromium-\(getpid())") }
        let host = try Netns(prefix: "tdm-page"), vm1 = try Netns(prefix: "tdm-pagev"), vm2 = try Netns(prefix: "tdm-pagev")
        defer { host.delete(); vm1.delete(); vm2.delete() }
        try host.ip("link set lo up")
        try host.addVeth("v1", peer: vm1, "eth0"); try host.addVeth("v2", peer: vm2, "eth0")
        try host.ip("addr add 10.63.1.1/24 dev v1"); try vm1.ip("addr add 10.63.1.2/24 dev eth0")
        try host.ip("addr add 10.63.2.1/24 dev v2"); try vm2.ip("addr add 10.63.2.2/24 dev eth0")
        let dir = NSTemporaryDirectory() + "tandem-page-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let port = Int.random(in: 20000..<30000)
        try """
            [controller]
            interval = "100ms"
            admin_socket = "\(dir)/host.sock"
            state_dir = "\(dir)/state"
            metrics = "127.0.0.1:\(port)"
            [[link]]
            name = "uplink"
            capacity = "200mbit"
            [[vm]]
            name = "web"
            interface = "v1"
            min = "20mbit"
            [[vm]]
            name = "batch"
            interface = "v2"
            weight = 2
            """.write(toFile: dir + "/host.toml", atomically: true, encoding: .utf8)
        let controller = try BackgroundProcess(["ip", "netns", "exec", host.name, Binaries.path("tandem-host"), "run", "--config", dir + "/host.toml"],
                                               log: URL(fileURLWithPath: dir + "/host.log"))
        defer { controller.stop() }
        #expect(host.waitForListener(port: port, timeout: 10), "tandem-host serves its page")
        let url = "http://127.0.0.1:\(port)/"

        // Both VMs plotted, nothing sent yet.
        var page = ""
        let drawn = PrometheusTests.eventually(20) {
            page = try Self.dom(host, url)
            return Self.last(page, vm: "web", series: "measured") != nil && Self.last(page, vm: "batch", series: "allocation") != nil
        }
        #expect(drawn, "each VM's series drawn: \(page.prefix(2000))")
        for vm in ["web", "batch"] { for s in ["measured", "allocation", "demand"] { #expect(Self.last(page, vm: vm, series: s) != nil, "\(vm) \(s)") } }
        #expect(Self.last(page, vm: "web", series: "measured") ?? 1e9 < 1e6, "web idle at first")
        #expect(page.contains("Jain's index"), "the Jain plot")
        #expect(Int(Self.attribute(page, "data-updates") ?? "") ?? 0 >= 1, "the script redrew from /api/v1/fairness")
        // Everything the page loaded came from tandem-host.
        let requests = (Self.attribute(page, "data-requests") ?? "").split(separator: " ")
        #expect(requests.contains { $0.hasSuffix("/api/v1/fairness") })
        #expect(requests.allSatisfy { $0.hasPrefix("http://127.0.0.1:\(port)/") }, "\(requests)")
        let absolute = FairnessPageSource.html.replacingOccurrences(of: "\"http://www.w3.org/2000/svg\"", with: "")   // (SVG's namespace: a name, never fetched)
        #expect(!absolute.contains("http://") && !absolute.contains("https://") && !absolute.contains("//cdn"), "no absolute URL in the page")

        // UDP at `rate` from a VM's namespace to an iperf3 server on its host-side address.
        var processes: [BackgroundProcess] = []
        defer { processes.forEach { $0.stop() } }
        func send(from vm: Netns, to address: String, port: Int, rate: String) throws {
            processes.append(try BackgroundProcess(["ip", "netns", "exec", host.name, "iperf3", "-s", "-B", address, "-p", "\(port)"]))
            #expect(host.waitForListener(port: port, timeout: 5))
            processes.append(try BackgroundProcess(["ip", "netns", "exec", vm.name, "iperf3", "-c", address, "-p", "\(port)", "-u", "-b", rate, "-t", "40"]))
        }
        /// Polls the page (a new browser load each time) until `shown` holds of it.
        func pageShows(_ shown: (String) -> Bool) -> Bool {
            PrometheusTests.eventually(30) { page = try Self.dom(host, url); return shown(page) }
        }

        // web starts sending 60 Mbit/s: its measured line rises on the page; batch's does not.
        try send(from: vm1, to: "10.63.1.1", port: 5611, rate: "60M")
        let moved = pageShows { (Self.last($0, vm: "web", series: "measured") ?? 0) > 40e6 }
        #expect(moved, "web's measured line follows its traffic: \(Self.last(page, vm: "web", series: "measured") ?? -1)")
        #expect((Self.last(page, vm: "batch", series: "measured") ?? 1e9) < 1e6, "batch's stays flat")
        #expect(page.contains("<tr data-vm=\"web\">"), "the table row")

        // batch (weight 2) floods 150 Mbit/s: its line rises to about its two thirds of the
        // link, and web's allocation comes down towards its third.
        try send(from: vm2, to: "10.63.2.1", port: 5612, rate: "150M")
        let shared = pageShows { (Self.last($0, vm: "batch", series: "measured") ?? 0) > 100e6 && (Self.last($0, vm: "web", series: "allocation") ?? 1e9) < 90e6 }
        #expect(shared, "batch's line rises, web's allocation comes down: batch \(Self.last(page, vm: "batch", series: "measured") ?? -1), web allocation \(Self.last(page, vm: "web", series: "allocation") ?? -1)")
        #expect((Self.last(page, vm: "web", series: "measured") ?? 0) > 40e6, "web keeps sending within its share")
        if let shot = ProcessInfo.processInfo.environment["TANDEM_PAGE_SCREENSHOT"] {
            _ = try Self.dom(host, url, screenshot: shot)
        }
    }
}
