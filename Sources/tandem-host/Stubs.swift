import ArgumentParser
import TandemRuntime

extension TandemHost {
    struct Run: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run the controller with a configuration file.")
        @Option(name: .long, help: "The TOML configuration (docs/CONFIG.md).") var config: String = "/etc/tandem/host.toml"
        func run() async throws { throw CommandFailure("tandem-host run: not implemented yet") }
    }
    struct Fairness: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show each VM's weight, guarantee, cap, demand, allocation, measured rate, share and Jain's index.")
        func run() async throws { throw CommandFailure("tandem-host fairness: not implemented yet") }
    }
    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show links, backends, channels and errors.")
        func run() async throws { throw CommandFailure("tandem-host status: not implemented yet") }
    }
    struct Policy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a VM's weight, guarantee or cap at runtime.")
        func run() async throws { throw CommandFailure("tandem-host policy: not implemented yet") }
    }
    struct Lab: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run the paper's experiment in network namespaces: TCP against a UDP flood, with and without Tandem.")
        func run() async throws { throw CommandFailure("tandem-host lab: not implemented yet") }
    }
}
