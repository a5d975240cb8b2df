import ArgumentParser
import HostController
import TandemProtocol

@main
struct TandemHost: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tandem-host",
        abstract: "Tandem's host controller: fair shares of a shared link for VMs, enforced as VF TX limits or host-side shaping.",
        discussion: """
            Runs on a KVM host. Reads per-VM counters, takes demand reports from each guest's \
            tandem-agent over a virtio-serial port, computes every VM's limit (weighted max-min \
            with guarantees and caps, work conserving) and enforces it: IFLA_VF_RATE on an SR-IOV \
            PF, or HTB on an IFB device for tap/veth VMs. Rates are written as tc writes them: \
            800mbit, 1gbit, 500kbit.
            """,
        version: TandemVersion.string,
        subcommands: [Run.self, Check.self, Fairness.self, Status.self, Policy.self, Reservations.self, Lab.self])
}
typealias ValidationError = ArgumentParser.ValidationError
