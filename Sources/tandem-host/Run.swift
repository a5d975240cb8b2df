import ArgumentParser
import Foundation
import HostController
import Logging
import HostCore
import TandemDaemon

extension TandemHost {
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the controller with a configuration file.",
            discussion: """
                Checks the whole configuration first: nothing starts on a bad one. SIGHUP reads the file again and \
                applies what changed (VMs added, removed, changed; the others untouched); a bad file changes nothing. \
                On SIGTERM it stops and leaves the limits in force. Under systemd (Type=notify) it reports ready after \
                its first round and pings the watchdog every round.
                """)

        @Option(name: .long, help: "The TOML configuration (docs/CONFIG.md).")
        var config: String = "/etc/tandem/host.toml"

        @Flag(name: .long, help: "Check the configuration and exit.")
        var check = false

        @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error.")
        var logLevel: String = "info"

        func validate() throws {
            guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level '\(logLevel)' is not one of trace, debug, info, notice, warning, error") }
        }

        func run() async throws {
            let cfg: HostConfig
            do { cfg = try HostConfig.load(path: config) } catch { throw CommandFailure("\(error)") }
            if check {
                print("\(config): OK (\(cfg.links.count) link\(cfg.links.count == 1 ? "" : "s"), \(cfg.vms.count) VM\(cfg.vms.count == 1 ? "" : "s"))")
                return
            }
            let log = makeLogger("tandem-host", level: logLevel)
            let daemon = HostDaemon(config: cfg, configPath: config, logger: log)
            try await runDaemon([daemon], logger: log)
        }
    }
}
