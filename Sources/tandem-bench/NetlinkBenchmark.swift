import Foundation
import Netlink
import TandemProtocol
import TandemLabSupport

/// The netlink issue's benchmark: 1,000 HTB classes and 1,000 u32 filters installed,
/// changed, their stats dumped, and deleted, through the Netlink module and through tc,
/// side by side in one namespace.
struct NetlinkBenchmark {
    let count: Int

    struct Row { var name: String; var ours: Double; var theirs: Double; var theirsName: String }

    func run() async throws -> [Row] {
        let ns = try Netns(prefix: "tdm-bench")
        defer { ns.delete() }
        try ns.ip("link add va type veth peer name vb")
        let nl = try RouteSocket(namespace: ns.name)
        let va = try await nl.index(of: "va"), vb = try await nl.index(of: "vb")
        _ = vb
        let root = TCHandle("1:")!, top = TCHandle("1:1")!
        func cls(_ i: Int, _ rate: BitRate) -> HTBClass {
            HTBClass(handle: TCHandle(major: 1, minor: UInt16(0x10 + i)), parent: top, rate: rate, ceil: .gbit(1))
        }
        func filter(_ i: Int) -> U32Filter {
            U32Filter(parent: root, priority: UInt16(10 + i), family: .ipv4,
                      match: FlowSelector(proto: .tcp, destination: IPPrefix("10.1.\(i / 250).\(i % 250 + 1)"), destinationPort: UInt16(5000 + i)),
                      target: .classify(TCHandle(major: 1, minor: UInt16(0x10 + i))))
        }
        func tcClass(_ dev: String, _ verb: String, _ i: Int, _ rate: String) -> String {
            "class \(verb) dev \(dev) parent 1:1 classid 1:\(String(0x10 + i, radix: 16)) htb rate \(rate) ceil 1gbit burst 65536 cburst 65536 quantum 1514"
        }
        func tcFilter(_ dev: String, _ i: Int) -> String {
            "filter add dev \(dev) parent 1: prio \(10 + i) protocol ip u32 match ip protocol 6 0xff match ip dst 10.1.\(i / 250).\(i % 250 + 1)/32 match ip dport \(5000 + i) 0xffff flowid 1:\(String(0x10 + i, radix: 16))"
        }
        func time(_ body: () async throws -> Void) async rethrows -> Double {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try await body()
            return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        }

        // Install: root, parent, N classes, N filters.
        let oursInstall = try await time {
            try await nl.replaceHTBRoot(ifindex: va, handle: root, defaultClass: 0xffff)
            try await nl.setHTBClass(ifindex: va, HTBClass(handle: top, parent: root, rate: .gbit(1)))
            for i in 0..<count { try await nl.setHTBClass(ifindex: va, cls(i, .mbit(1)), mode: .add) }
            for i in 0..<count { try await nl.addU32Filter(ifindex: va, filter(i)) }
        }
        var batch = "qdisc replace dev vb root handle 1: htb default ffff\nclass add dev vb parent 1: classid 1:1 htb rate 1gbit\n"
        for i in 0..<count { batch += tcClass("vb", "add", i, "1mbit") + "\n" }
        for i in 0..<count { batch += tcFilter("vb", i) + "\n" }
        let tcInstall = try await time { try ns.exec(["tc", "-batch", writeTemp(batch)]) }

        // Change every class's rate in place.
        let oursChange = try await time {
            for i in 0..<count { try await nl.setHTBClass(ifindex: va, cls(i, .mbit(2)), mode: .change) }
        }
        var change = ""
        for i in 0..<count { change += tcClass("vb", "change", i, "2mbit") + "\n" }
        let tcChange = try await time { try ns.exec(["tc", "-batch", writeTemp(change)]) }

        // Stats of every class: ours (dump and decode) against `tc -s -j class show` plus
        // parsing what it prints (iproute2 6.1 prints htb classes as text even with -j).
        var oursCount = 0, theirsCount = 0
        let repeats = 5
        let oursStats = try await time {
            for _ in 0..<repeats { oursCount = try await nl.classes(ifindex: va).count }
        } / Double(repeats)
        let tcStats = try await time {
            for _ in 0..<repeats { theirsCount = parseClassCount(try ns.exec(["tc", "-s", "-j", "class", "show", "dev", "vb"])) }
        } / Double(repeats)
        guard oursCount == count + 1, theirsCount == count + 1 else {
            throw Shell.Failure(command: ["stats"], result: .init(status: 1, stdout: "", stderr: "counted \(oursCount) and \(theirsCount) classes, expected \(count + 1)"))
        }

        // One tc process per object, on a sample of 100 changes, scaled to N.
        let sample = min(100, count)
        let perProcess = try await time {
            for i in 0..<sample { try ns.tc(tcClass("vb", "change", i, "3mbit")) }
        } * Double(count) / Double(sample)

        // Delete all.
        let oursDelete = try await time {
            for i in 0..<count { try await nl.deleteFilter(ifindex: va, parent: root, priority: UInt16(10 + i), family: .ipv4) }
            for i in 0..<count { try await nl.deleteClass(ifindex: va, handle: TCHandle(major: 1, minor: UInt16(0x10 + i))) }
        }
        var del = ""
        for i in 0..<count { del += "filter del dev vb parent 1: prio \(10 + i) protocol ip\n" }
        for i in 0..<count { del += "class del dev vb classid 1:\(String(0x10 + i, radix: 16))\n" }
        let tcDelete = try await time { try ns.exec(["tc", "-batch", writeTemp(del)]) }

        return [
            Row(name: "install \(count) classes + \(count) filters", ours: oursInstall, theirs: tcInstall, theirsName: "tc -batch"),
            Row(name: "change \(count) class rates", ours: oursChange, theirs: tcChange, theirsName: "tc -batch"),
            Row(name: "stats of \(count) classes (one dump)", ours: oursStats, theirs: tcStats, theirsName: "tc -s -j class show + parse"),
            Row(name: "change \(count) class rates", ours: oursChange, theirs: perProcess, theirsName: "one tc process each"),
            Row(name: "delete \(count) filters + \(count) classes", ours: oursDelete, theirs: tcDelete, theirsName: "tc -batch"),
        ]
    }

    func parseClassCount(_ text: String) -> Int {
        text.split(separator: "\n").filter { $0.hasPrefix("class ") }.count
    }

    func writeTemp(_ text: String) throws -> String {
        let path = NSTemporaryDirectory() + "tandem-bench-\(getpid())-\(UUID().uuidString).tc"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}
