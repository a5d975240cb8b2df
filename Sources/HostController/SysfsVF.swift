import Foundation
import HostCore

/// Where a VF given to a domain (its PCI address in the domain's XML) is on the host: its
/// PF's network interface and its VF index there, the two numbers `IFLA_VF_RATE` needs.
/// Read from sysfs: the VF's `physfn` link names its PF, and the PF's `virtfnN` link that
/// points back at the VF gives N; the PF's `net/` folder names its interface.
public enum SysfsVF {
    public struct Mapping: Equatable, Sendable {
        /// The PF's network interface (`enp3s0f0`).
        public var pf: String
        public var vf: UInt32
        /// The PF's PCI address (`0000:03:00.0`).
        public var pfAddress: String
    }

    /// `sysfs`: where sysfs is mounted (`/sys`; a recorded tree in tests).
    public static func resolve(_ address: LibvirtDomain.PCIAddress, sysfs: String = "/sys") throws(SysfsVFError) -> Mapping {
        let fm = FileManager.default
        let devices = sysfs + "/bus/pci/devices"
        let vfPath = devices + "/\(address)"
        guard fm.fileExists(atPath: vfPath) else { throw .noSuchDevice(address.description) }
        guard let physfn = try? fm.destinationOfSymbolicLink(atPath: vfPath + "/physfn") else { throw .notAVF(address.description) }
        let pfAddress = (physfn as NSString).lastPathComponent
        let pfPath = devices + "/\(pfAddress)"
        let entries = (try? fm.contentsOfDirectory(atPath: pfPath)) ?? []
        var index: UInt32?
        for e in entries where e.hasPrefix("virtfn") {
            guard let n = UInt32(e.dropFirst("virtfn".count)),
                  let target = try? fm.destinationOfSymbolicLink(atPath: pfPath + "/" + e),
                  (target as NSString).lastPathComponent == address.description else { continue }
            index = n
            break
        }
        guard let index else { throw .notListed(vf: address.description, pf: pfAddress) }
        guard let netdev = ((try? fm.contentsOfDirectory(atPath: pfPath + "/net")) ?? []).sorted().first else {
            throw .pfWithoutInterface(pfAddress)
        }
        return Mapping(pf: netdev, vf: index, pfAddress: pfAddress)
    }
}

/// Why a VF's PCI address does not lead to a PF interface and a VF index.
public enum SysfsVFError: Error, Equatable, Sendable, CustomStringConvertible {
    case noSuchDevice(String)
    /// No `physfn`: a PF, or a device that is not an SR-IOV VF.
    case notAVF(String)
    case notListed(vf: String, pf: String)
    /// The PF has no network interface (bound to another driver, or to none).
    case pfWithoutInterface(String)

    public var description: String {
        switch self {
        case .noSuchDevice(let a): "no PCI device \(a) in sysfs"
        case .notAVF(let a): "PCI device \(a) is not an SR-IOV VF (it has no physfn)"
        case .notListed(let vf, let pf): "VF \(vf) is not among PF \(pf)'s virtfn links"
        case .pfWithoutInterface(let pf): "PF \(pf) has no network interface (is its driver loaded?)"
        }
    }
}
