import HostCore
import TandemProtocol

/// Why a policy change (`tandem-host policy set`) or a controller set-up was refused; the
/// text is what the admin sees.
public enum PolicyError: Error, CustomStringConvertible, Sendable, Equatable {
    case noSuchVM(String, known: [String])
    case noBackend(String)
    /// A value out of range (`min`, `max` or `weight`), with the problem as the validator says it.
    case invalid(key: String, problem: String)
    case capAboveLink(cap: BitRate, link: String, capacity: BitRate)
    /// The guarantee does not fit its link or its group (``GuaranteeBook``'s words).
    case guaranteesDoNotFit(String)
    case belowReserved(min: BitRate, reserved: BitRate)
    /// A libvirt VM: its policy is its domain's metadata, set with virsh.
    case fromLibvirt(String)
    /// state.json could not be written: the policy was not applied.
    case notSaved(String)
    /// `reservations release` for an id the VM does not hold.
    case noSuchReservation(vm: String, id: String, held: [String])

    public var description: String {
        switch self {
        case .noSuchVM(let name, let known): "no VM '\(name)' (there are: \(known.joined(separator: ", ")))"
        case .noBackend(let name): "no backend for \(name)"
        case .invalid(let key, let problem): "\(key): \(problem)"
        case .capAboveLink(let cap, let link, let capacity): "max \(cap) is above link \(link)'s capacity \(capacity)"
        case .guaranteesDoNotFit(let problem): problem
        case .belowReserved(let min, let reserved): "min \(min) is below the \(reserved) the VM has reserved; release reservations first"
        case .noSuchReservation(let vm, let id, let held):
            "no reservation '\(id)' on \(vm) (\(held.isEmpty ? "it holds none" : "it holds: " + held.joined(separator: ", ")))"
        case .notSaved(let why): "not applied: it could not be saved to survive a restart (\(why))"
        case .fromLibvirt(let name):
            "\(name) is a libvirt domain: its policy is its metadata, set it with virsh metadata \(name) --uri \(LibvirtDomain.metadataNamespace) --key tandem --set '<policy weight=\"2\" min=\"1gbit\"/>' --live --config"
        }
    }
}
