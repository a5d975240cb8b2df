import ArgumentParser
import TandemRuntime

extension TandemHost {
    struct Lab: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run the paper's experiment in network namespaces: TCP against a UDP flood, with and without Tandem.")
        func run() async throws { throw CommandFailure("tandem-host lab: not implemented yet") }
    }
}
