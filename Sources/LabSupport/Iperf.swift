import Foundation

/// iperf3 runs for the lab and the traffic tests: a one-off server in one namespace, a
/// client in another, and the rate the receiver saw.
public enum Iperf {
    /// A running `iperf3 -s`; stop it with ``stop()``.
    public final class Server: @unchecked Sendable {
        public let process: Process
        public let port: Int
        init(process: Process, port: Int) { self.process = process; self.port = port }
        public func stop() {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
    }

    /// Starts `iperf3 -s -p PORT` inside `netns` and waits until it listens.
    public static func server(in netns: Netns, port: Int) throws -> Server {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["ip", "netns", "exec", netns.name, "iperf3", "-s", "-p", "\(port)"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let server = Server(process: p, port: port)
        if netns.waitForListener(port: port) { return server }
        server.stop()
        throw Shell.Failure(command: p.arguments ?? [], result: Shell.Result(status: -1, stdout: "", stderr: "iperf3 server did not listen on port \(port)"))
    }

    public struct Report: Sendable {
        /// What the receiver got, bits per second.
        public var receivedBitsPerSecond: Double
        /// What the sender sent, bits per second.
        public var sentBitsPerSecond: Double
    }

    /// Runs a client from `netns` to `host:port` for `seconds` and returns iperf3's figures.
    /// `udpRate` makes it a UDP flood at that many bits per second.
    public static func client(in netns: Netns, host: String, port: Int, seconds: Double, udpRate: UInt64? = nil, extra: [String] = []) throws -> Report {
        var argv = ["iperf3", "-c", host, "-p", "\(port)", "-t", String(format: "%.1f", seconds), "-J"]
        if let udpRate { argv += ["-u", "-b", "\(udpRate)", "-l", "1400"] }
        argv += extra
        let out = try netns.exec(argv)
        return try parse(out)
    }

    /// Reads iperf3's `-J` output.
    public static func parse(_ json: String) throws -> Report {
        guard let obj = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let end = obj["end"] as? [String: Any] else {
            throw Shell.Failure(command: ["iperf3"], result: Shell.Result(status: -1, stdout: json, stderr: "unreadable iperf3 output"))
        }
        func bps(_ key: String) -> Double? { (end[key] as? [String: Any])?["bits_per_second"] as? Double }
        let received = bps("sum_received") ?? bps("sum") ?? 0
        let sent = bps("sum_sent") ?? bps("sum") ?? 0
        return Report(receivedBitsPerSecond: received, sentBitsPerSecond: sent)
    }
}
