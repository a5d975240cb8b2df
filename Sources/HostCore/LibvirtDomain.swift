import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import TandemProtocol

/// What Tandem needs of a libvirt domain, read from its live XML (`virsh dumpxml`): its
/// name, its Tandem channel's socket, its taps and VFs, and its policy metadata. Pure: the
/// text in, a value out; what is wrong with the Tandem parts is collected in ``problems``
/// (naming the domain and the element), never thrown, so one bad domain is shown as
/// unmanaged while the others go on.
///
/// ```xml
/// <domain type='kvm' id='3'>
///   <name>vm1</name>
///   <metadata>
///     <tandem:policy xmlns:tandem="urn:tandem:policy:1" weight="2" min="1gbit" max="8gbit"/>
///   </metadata>
///   <devices>
///     <interface type='ethernet'><target dev='vnet3'/></interface>
///     <interface type='hostdev'><source><address type='pci' domain='0x0000' bus='0x03' slot='0x10' function='0x1'/></source></interface>
///     <hostdev mode='subsystem' type='pci'><source><address domain='0x0000' bus='0x03' slot='0x10' function='0x2'/></source></hostdev>
///     <channel type='unix'>
///       <source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-3-vm1/org.tandem.agent.0'/>
///       <target type='virtio' name='org.tandem.agent.0'/>
///     </channel>
///   </devices>
/// </domain>
/// ```
public struct LibvirtDomain: Equatable, Sendable {
    /// The namespace of Tandem's metadata element (`virsh metadata DOMAIN --uri ... --key tandem`).
    public static let metadataNamespace = "urn:tandem:policy:1"
    /// The virtio-serial port name the agent opens.
    public static let portName = "org.tandem.agent.0"

    /// A PCI address as libvirt writes it (`domain='0x0000' bus='0x03' slot='0x10' function='0x1'`).
    public struct PCIAddress: Hashable, Sendable, CustomStringConvertible {
        public var domain: UInt32
        public var bus: UInt8
        public var slot: UInt8
        public var function: UInt8
        public init(domain: UInt32, bus: UInt8, slot: UInt8, function: UInt8) {
            self.domain = domain; self.bus = bus; self.slot = slot; self.function = function
        }
        /// sysfs's spelling: `0000:03:10.1`.
        public var description: String {
            func hex(_ v: UInt64, _ width: Int) -> String {
                let s = String(v, radix: 16)
                return String(repeating: "0", count: max(0, width - s.count)) + s
            }
            return "\(hex(UInt64(domain), 4)):\(hex(UInt64(bus), 2)):\(hex(UInt64(slot), 2)).\(function)"
        }
    }

    /// A tap (or macvtap) interface: the host-side device the tc backend shapes.
    public struct Tap: Equatable, Sendable {
        /// `<interface type=...>`: ethernet, bridge, network, direct.
        public var type: String
        /// `<target dev=...>`.
        public var device: String
        /// `<source bridge=...>` (or network name), if any.
        public var source: String?
    }

    /// `<tandem:policy>` as written: weight, guarantee, cap, group (validated into ``policy``).
    public struct PolicyMetadata: Equatable, Sendable {
        public var weight: Double?
        public var min: BitRate?
        public var max: BitRate?
        public var group: String?
    }

    public var name: String = ""
    public var uuid: String?
    /// The running domain's id (`<domain id=...>`); nil for a domain that is not running.
    public var id: Int?
    /// The host end of each channel named ``portName``: the socket path libvirt chose.
    public var channels: [String] = []
    public var taps: [Tap] = []
    /// VFs given to the domain (`<interface type='hostdev'>` and `<hostdev type='pci'>`).
    public var vfs: [PCIAddress] = []
    public var policy: PolicyMetadata?
    /// What is wrong with the domain's Tandem parts, each naming the domain and the element.
    public var problems: [String] = []

    /// A domain Tandem manages: it has the agent's channel or Tandem's metadata.
    public var isTandem: Bool { !channels.isEmpty || policy != nil || problems.contains { $0.contains("tandem:policy") } }

    /// Reads a domain's XML. Throws only when the text is not XML or not a domain.
    public static func parse(_ xml: String) throws(LibvirtXMLError) -> LibvirtDomain {
        let reader = Reader()
        let parser = XMLParser(data: Data(xml.utf8))
        parser.shouldProcessNamespaces = true
        parser.delegate = reader
        guard parser.parse() else {
            throw .notXML(parser.parserError.map { "\($0.localizedDescription)" } ?? "unreadable")
        }
        guard reader.sawDomain else { throw .notADomain }
        // (Foundation's parser on Linux accepts a document cut short.)
        guard reader.closedDomain else { throw .notXML("the text ends before </domain>") }
        var d = reader.domain
        d.name = d.name.trimmingCharacters(in: .whitespacesAndNewlines)
        if d.channels.count > 1 {
            d.problems.append("domain \(d.name): \(d.channels.count) channels named \(portName) (\(d.channels.joined(separator: ", "))); one is expected")
        }
        d.problems = d.problems.map { $0.replacingOccurrences(of: "domain ?:", with: "domain \(d.name):") }
        return d
    }

    /// SAX reading: the element path is enough, the documents are small.
    final class Reader: NSObject, XMLParserDelegate {
        var domain = LibvirtDomain()
        var sawDomain = false
        var closedDomain = false
        var path: [String] = []
        var text = ""
        /// The device element being read, with what was seen inside it.
        var device: [String: String] = [:]
        var deviceKind: String?
        var policies = 0

        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String]) {
            path.append(name)
            text = ""
            switch path.count {
            case 1:
                if name == "domain" {
                    sawDomain = true
                    domain.id = attributes["id"].flatMap(Int.init)
                }
            case 3 where path[1] == "metadata" && namespaceURI == LibvirtDomain.metadataNamespace:
                policies += 1
                guard name == "policy" else {
                    domain.problems.append("domain ?: <tandem:\(name)> in the metadata is not known (expected <tandem:policy>)")
                    return
                }
                readPolicy(attributes)
            case 3 where path[1] == "devices":
                deviceKind = name
                device = ["type": attributes["type"] ?? "", "mode": attributes["mode"] ?? ""]
            case 4... where path[1] == "devices" && deviceKind != nil:
                let inner = path[3...].joined(separator: "/")
                for (k, v) in attributes { device["\(inner)@\(k)"] = v }
            default: break
            }
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) { text += string }

        func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
            if path.count == 1 && name == "domain" { closedDomain = true }
            if path.count == 2 && path[0] == "domain" {
                if name == "name" { domain.name = text }
                if name == "uuid" { domain.uuid = text.trimmingCharacters(in: .whitespacesAndNewlines) }
            }
            if path.count == 3 && path[1] == "devices", let kind = deviceKind {
                endDevice(kind)
                deviceKind = nil
            }
            path.removeLast()
        }

        func readPolicy(_ a: [String: String]) {
            if policies > 1 { domain.problems.append("domain ?: more than one <tandem:policy> in the metadata"); return }
            var p = PolicyMetadata()
            for (key, value) in a.sorted(by: { $0.key < $1.key }) {
                switch key {
                case "weight":
                    if let w = Double(value), w > 0, w <= 10_000 { p.weight = w } else {
                        domain.problems.append("domain ?: <tandem:policy weight=\"\(value)\">: a weight is a number above 0 and at most 10000")
                    }
                case "min", "max":
                    do { let r = try BitRate(parsing: value); if key == "min" { p.min = r } else { p.max = r } } catch {
                        domain.problems.append("domain ?: <tandem:policy \(key)=\"\(value)\">: \(error)")
                    }
                case "group":
                    if !value.isEmpty, value.count <= 64, value.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) { p.group = value } else {
                        domain.problems.append("domain ?: <tandem:policy group=\"\(value)\">: a group name is 1 to 64 letters, digits, '-', '_' or '.'")
                    }
                default:
                    domain.problems.append("domain ?: <tandem:policy \(key)=...> is not known (weight, min, max, group)")
                }
            }
            if let lo = p.min, let hi = p.max, lo > hi {
                domain.problems.append("domain ?: <tandem:policy min=\"\(lo)\" max=\"\(hi)\">: min is above max")
            }
            domain.policy = p
        }

        func pci(_ prefix: String) -> PCIAddress? {
            func num(_ k: String) -> UInt64? {
                guard let v = device["\(prefix)@\(k)"] else { return nil }
                return v.hasPrefix("0x") ? UInt64(v.dropFirst(2), radix: 16) : UInt64(v)
            }
            let d = num("domain") ?? 0
            guard let b = num("bus"), let s = num("slot"), let f = num("function"),
                  d <= UInt64(UInt32.max), b <= 0xff, s <= 0x1f, f <= 7 else { return nil }
            return PCIAddress(domain: UInt32(d), bus: UInt8(b), slot: UInt8(s), function: UInt8(f))
        }

        func endDevice(_ kind: String) {
            let type = device["type"] ?? ""
            switch kind {
            case "channel":
                guard device["target@name"] == LibvirtDomain.portName else { return }
                guard type == "unix" else {
                    domain.problems.append("domain ?: <channel type='\(type)'> for \(LibvirtDomain.portName): Tandem connects to a unix socket (type='unix')")
                    return
                }
                guard let path = device["source@path"], !path.isEmpty else {
                    domain.problems.append("domain ?: <channel> for \(LibvirtDomain.portName) has no <source path=...> (the live XML of a running domain has one)")
                    return
                }
                domain.channels.append(path)
            case "interface":
                if type == "hostdev" {
                    if device["source/address@type"].map({ $0 == "pci" }) ?? true, let a = pci("source/address") { domain.vfs.append(a) } else {
                        domain.problems.append("domain ?: <interface type='hostdev'> without a PCI <source><address>")
                    }
                } else if let dev = device["target@dev"], !dev.isEmpty {
                    domain.taps.append(Tap(type: type, device: dev, source: device["source@bridge"] ?? device["source@network"] ?? device["source@dev"]))
                }
            case "hostdev":
                guard device["mode"] == "subsystem", type == "pci" else { return }
                if let a = pci("source/address") { domain.vfs.append(a) } else {
                    domain.problems.append("domain ?: <hostdev type='pci'> without a PCI <source><address>")
                }
            default: break
            }
        }
    }
}

/// A domain's XML that could not be read at all.
public enum LibvirtXMLError: Error, Equatable, Sendable, CustomStringConvertible {
    case notXML(String)
    case notADomain

    public var description: String {
        switch self {
        case .notXML(let why): "not XML: \(why)"
        case .notADomain: "not a libvirt domain (no <domain> element)"
        }
    }
}
