import ArgumentParser
import Foundation
import GuestAgent
import Logging
import TandemProtocol
import TandemDaemon

extension TandemAgent {
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the agent: shape IFACE, report demand to the host, serve reservations.")

        @Option(name: .long, help: "The VM's interface to shape, e.g. enp1s0. Default: the interface of the default route (IPv4, else IPv6).")
        var interface: String?

        @Option(name: .long, help: "The host channel: a character device (the virtio-serial port, or a pseudo-terminal), or unix:PATH. Default: /dev/virtio-ports/org.tandem.agent.0, found through /sys/class/virtio-ports where udev made no link.")
        var channel: String?

        @Option(name: .long, help: "The reservation socket.")
        var socket: String = "/run/tandem/agent.sock"

        @Option(name: .long, help: "Time between demand reports until the host asks for another (e.g. 100ms).")
        var interval: String = "100ms"

        @Option(name: .long, help: "Limit to shape to before the host's first allocation (e.g. 1gbit).")
        var initialLimit: String = "10gbit"

        @Flag(name: .long, help: "Replace a root qdisc on IFACE that is not Tandem's.")
        var force = false

        @Flag(name: .long, help: "Leave the shaping in place on exit.")
        var keepShaping = false

        @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error.")
        var logLevel: String = "info"

        func validate() throws {
            guard (try? DurationText.seconds(interval)).map({ $0 >= 0.01 && $0 <= 60 }) == true else {
                throw ValidationError("--interval '\(interval)' must be a duration between 10ms and 60s, such as 100ms")
            }
            do { _ = try BitRate(parsing: initialLimit) } catch { throw ValidationError("--initial-limit: \(error)") }
            guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level '\(logLevel)' is not one of trace, debug, info, notice, warning, error") }
        }

        func run() async throws {
            let log = makeLogger("tandem-agent", level: logLevel)
            let spec: ChannelSpec
            do { spec = try ChannelSpec.resolve(channel) } catch { throw CommandFailure("\(error)") }
            let iface: String
            do { iface = try interface ?? DefaultRoute.interface() } catch { throw CommandFailure("\(error)") }
            if interface == nil { log.info("shaping the default route's interface", metadata: ["interface": "\(iface)"]) }
            let options = AgentOptions(interface: iface, channel: spec, socketPath: socket,
                                       interval: try DurationText.seconds(interval), initialLimit: try BitRate(parsing: initialLimit),
                                       force: force, keepShaping: keepShaping)
            let agent = Agent(options: options, logger: log)
            try await runDaemon([agent], logger: log)
        }
    }
}
