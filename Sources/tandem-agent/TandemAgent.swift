import ArgumentParser
import GuestAgent
import TandemProtocol

@main
struct TandemAgent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tandem-agent",
        abstract: "Tandem's guest agent: reports demand to the host, shapes the VM's traffic fairly within its allocation, and holds applications' reservations.",
        discussion: """
            Runs inside a VM. Talks to tandem-host over the virtio-serial port org.tandem.agent.0, \
            shapes IFACE with an HTB tree (TCP and UDP kept apart, one class per reservation) \
            under the soft limit the host grants, and serves reservations on a unix socket. \
            Rates are written as tc writes them: 800mbit, 1gbit, 500kbit.
            """,
        version: TandemVersion.string,
        subcommands: [Run.self, Reserve.self, Release.self, Status.self])
}
typealias ValidationError = ArgumentParser.ValidationError
