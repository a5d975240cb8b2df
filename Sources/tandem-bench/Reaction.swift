import Foundation
import HostController
import TandemLab
import TandemProtocol
import TandemLabSupport
import TandemTransport

/// Reaction in the lab: how long from a change of demand to the new limit in the kernel
/// and to the new throughput, over repetitions. Throughput is what leaves each VM's limit
/// (its IFB class's byte counter at the host, sampled every 50 ms over 200 ms windows), which
/// is what reaches the receiver across the shared uplink.
enum Reaction {
    struct Sample { var time: Double; var bytes: UInt64; var ceil: BitRate? }

    static func ifbClass(_ t: Lab.Topology, _ vm: String) -> (bytes: UInt64, ceil: BitRate?) {
        let ifb = "tdm-" + TCBackend.hash8(vm)
        let text = (try? t.host.tc("-s class show dev \(ifb)")) ?? ""
        var bytes: UInt64 = 0, ceil: BitRate? = nil
        for line in text.split(separator: "\n") {
            let w = line.split(separator: " ")
            if w.first == "class", let c = w.firstIndex(of: "ceil"), c + 1 < w.count { ceil = try? BitRate(parsing: String(w[c + 1])) }
            if w.first == "Sent", w.count > 1 { bytes = UInt64(w[1]) ?? 0 }
        }
        return (bytes, ceil)
    }

    /// Waits until `ok` holds for VM `vm` (limit and rate); returns (seconds to limit, seconds to rate).
    static func watch(_ t: Lab.Topology, vm: String, from start: Double, timeout: Double, limitOK: (BitRate) -> Bool, rateOK: (Double) -> Bool) -> (Double?, Double?) {
        var history: [Sample] = []
        var tLimit: Double? = nil, tRate: Double? = nil
        while POSIX.now() - start < timeout && (tLimit == nil || tRate == nil) {
            let now = POSIX.now()
            let (bytes, ceil) = ifbClass(t, vm)
            history.append(Sample(time: now, bytes: bytes, ceil: ceil))
            if tLimit == nil, let c = ceil, limitOK(c) { tLimit = now - start }
            if let old = history.last(where: { now - $0.time >= 0.2 }), tRate == nil {
                let rate = Double(bytes &- old.bytes) * 8 / (now - old.time)
                if rateOK(rate) { tRate = now - start - 0.1 }   // the window's middle
            }
            usleep(50_000)
        }
        return (tLimit, tRate)
    }

    static func run(repetitions: Int) throws -> [Result] {
        var o = Lab.Options(binaries: SystemBench.binaries)
        o.vms = 2
        o.link = .mbit(200)
        let lab = Lab(options: o) { _ in }
        _ = Lab.cleanStale()
        let t = try Lab.Topology()
        defer { t.teardown(keepLogs: false) }
        try lab.build(t)
        try lab.startTandem(t)
        let capacity = Double(o.link.bitsPerSecond)
        var floodLimit: [Double] = [], floodRate: [Double] = [], stopLimit: [Double] = [], stopRate: [Double] = []
        // VM1 runs TCP throughout each repetition; VM2's flood starts, then VM1's TCP stops.
        for rep in 0..<repetitions {
            FileHandle.standardError.write(Data("\rreaction: repetition \(rep + 1)/\(repetitions)".utf8))
            let tcp = try BackgroundProcess(["ip", "netns", "exec", t.vmNS[0].name, "iperf3", "-c", "10.77.0.254", "-p", "5201", "-t", "30"])
            Thread.sleep(forTimeInterval: 2.5)   // VM1 alone: it has most of the link
            let start = POSIX.now()
            let flood = try BackgroundProcess(["ip", "netns", "exec", t.vmNS[1].name, "iperf3", "-c", "10.77.0.254", "-p", "5202", "-u", "-b", "400M", "-l", "1400", "-t", "30"])
            let (l1, r1) = watch(t, vm: "vm2", from: start, timeout: 5,
                                 limitOK: { Double($0.bitsPerSecond) >= 0.45 * capacity && Double($0.bitsPerSecond) <= 0.55 * capacity },
                                 rateOK: { $0 >= 0.9 * 0.5 * capacity })
            if let l1 { floodLimit.append(l1) }; if let r1 { floodRate.append(r1) }
            Thread.sleep(forTimeInterval: 1)
            let stop = POSIX.now()
            tcp.stop(signal: SIGKILL)
            let (l2, r2) = watch(t, vm: "vm2", from: stop, timeout: 5,
                                 limitOK: { Double($0.bitsPerSecond) >= 0.9 * capacity },
                                 rateOK: { $0 >= 0.9 * 0.95 * capacity })
            if let l2 { stopLimit.append(l2) }; if let r2 { stopRate.append(r2) }
            flood.stop(signal: SIGKILL)
            Thread.sleep(forTimeInterval: 1)
        }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        func pct(_ xs: [Double], _ p: Double) -> Double { let s = xs.sorted(); return s.isEmpty ? .nan : s[min(s.count - 1, Int((Double(s.count - 1) * p).rounded()))] }
        var out: [Result] = []
        for (name, xs, target) in [("UDP flood starts: new limit in the kernel", floodLimit, 1.0), ("UDP flood starts: new throughput", floodRate, 2.0),
                                   ("TCP flow stops: new limit in the kernel", stopLimit, 1.0), ("TCP flow stops: new throughput", stopRate, 2.0)] {
            out.append(Result(name: "\(name), p50 (\(xs.count)/\(repetitions) reached)", value: pct(xs, 0.5) * 1000, unit: "ms", target: target * 1000, lowerIsBetter: true))
            out.append(Result(name: "\(name), p99", value: pct(xs, 0.99) * 1000, unit: "ms", target: target * 1000, lowerIsBetter: true))
        }
        return out
    }
}
