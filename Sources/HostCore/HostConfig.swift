import Foundation
import TOMLKit
import TandemProtocol

/// The controller's configuration (docs/CONFIG.md), checked whole before anything starts.
public struct HostConfig: Sendable, Equatable {
    public struct Controller: Sendable, Equatable {
        /// Seconds between allocation rounds.
        public var interval: Double = 0.1
        public var adminSocket = "/run/tandem/host.sock"
        public var stateDir = "/var/lib/tandem"
        /// `HOST:PORT` for Prometheus, or nil for none.
        public var metrics: String? = "127.0.0.1:9465"
        /// A limit is pushed only when it moves by more than this fraction of the link.
        public var step: Double = 0.01
        /// The guest shapes to this fraction of its hard limit, so its own shaper (which
        /// sees flows) decides what is dropped rather than the NIC.
        public var softFraction: Double = 0.97
        public init() {}
    }

    public struct LinkConfig: Sendable, Equatable {
        public var name: String
        public var capacity: BitRate
        /// Admit reservations beyond a VM's guarantee while the link has unreserved capacity.
        public var reserveBeyondGuarantee: Bool = false
        /// PFs whose VFs (and macvtaps) are on this link: how a libvirt domain's VF finds it.
        public var pfs: [String] = []
        /// Bridges (or macvtap uplinks) whose taps are on this link.
        public var bridges: [String] = []
        /// The policy of a libvirt VM on this link whose metadata says nothing (or part).
        public var defaults = VMPolicy(weight: 1, guarantee: .zero, cap: nil)
        /// Set the NIC's min TX rate (the guarantee) on libvirt VMs' VFs on this link.
        public var setMinRate = false
        /// Limit libvirt VMs' VFs on this link through devlink rate objects (`vf_backend =
        /// "devlink"`), not the PF's VF rate.
        public var devlink = false

        public init(name: String, capacity: BitRate, reserveBeyondGuarantee: Bool = false, pfs: [String] = [], bridges: [String] = [],
                    defaults: VMPolicy = VMPolicy(weight: 1, guarantee: .zero, cap: nil), setMinRate: Bool = false) {
            self.name = name; self.capacity = capacity; self.reserveBeyondGuarantee = reserveBeyondGuarantee
            self.pfs = pfs; self.bridges = bridges; self.defaults = defaults; self.setMinRate = setMinRate
        }
    }

    /// `[[group]]`: VMs of one tenant that share a budget on a link. The link is shared by
    /// weight among its groups (and the VMs in none), then each group's share among its VMs.
    public struct GroupConfig: Sendable, Equatable {
        public var name: String
        public var link: String
        public var weight: Double = 1
        /// What the group is guaranteed when its VMs want it; its VMs' own `min`s come out of it.
        public var guarantee: BitRate = .zero
        /// What its VMs get together at most; nil: the link's capacity.
        public var cap: BitRate?
        public init(name: String, link: String, weight: Double = 1, guarantee: BitRate = .zero, cap: BitRate? = nil) {
            self.name = name; self.link = link; self.weight = weight; self.guarantee = guarantee; self.cap = cap
        }
    }

    /// `[libvirt]`: take VMs from libvirt's running domains (docs/LIBVIRT.md).
    public struct Libvirt: Sendable, Equatable {
        /// `qemu:///system`.
        public var uri: String
        public init(uri: String) { self.uri = uri }
    }

    public enum Backend: Sendable, Equatable {
        /// Shape the VM's egress on the host interface (tap, macvtap, veth) via an IFB.
        case tc(interface: String)
        /// The VF's TX limit on the PF. `setMin`: also set the NIC's min TX rate (guarantee).
        /// `devlink`: through the VF's devlink rate leaf (tx_max, tx_share), its group a rate
        /// node, instead of the PF's VF rate (`ip link set PF vf N max_tx_rate`).
        case sriov(pf: String, vf: UInt32, setMin: Bool, devlink: Bool = false)

        /// Whether the VM's group is part of its backend (a devlink rate node).
        public var groupInHardware: Bool { if case .sriov(_, _, _, true) = self { true } else { false } }
    }

    /// Where a VM comes from: a `[[vm]]` in the file, or a running libvirt domain.
    public enum Origin: Sendable, Equatable {
        case file
        /// The domain's UUID. Its policy lives in its metadata, not in state.json.
        case libvirt(uuid: String)
    }

    public struct VMConfig: Sendable, Equatable {
        /// Whether going from `old` to this needs another backend: another device, or (devlink)
        /// another group, which is its leaf's node.
        public func needsOtherBackend(than old: VMConfig) -> Bool {
            backend != old.backend || (backend.groupInHardware && group != old.group)
        }

        public var name: String
        public var link: String
        public var backend: Backend
        /// The host end of the VM's virtio-serial port (a unix socket QEMU creates), if any.
        public var channel: String?
        public var policy: VMPolicy
        public var origin: Origin = .file
        /// The `[[group]]` the VM belongs to, if any (on the VM's link).
        public var group: String?

        public init(name: String, link: String, backend: Backend, channel: String?, policy: VMPolicy, origin: Origin = .file, group: String? = nil) {
            self.name = name; self.link = link; self.backend = backend; self.channel = channel; self.policy = policy; self.origin = origin
            self.group = group
        }
    }

    public var controller = Controller()
    public var links: [LinkConfig] = []
    public var groups: [GroupConfig] = []
    public var vms: [VMConfig] = []
    public var libvirt: Libvirt?

    public init() {}
}

/// A configuration error: the file, where (the table and key, and the line when known),
/// and what is wrong with which value.
public struct ConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    public var file: String
    public var location: String
    public var line: Int?
    public var problem: String
    public var description: String {
        "\(file)\(line.map { ":\($0)" } ?? ""): \(location.isEmpty ? "" : location + ": ")\(problem)"
    }
}

extension HostConfig {
    public static func load(path: String) throws(ConfigError) -> HostConfig {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw ConfigError(file: path, location: "", line: nil, problem: "cannot read the file: \((error as NSError).localizedDescription)")
        }
        guard let text = String(validatingUTF8Bytes: data) else {
            throw ConfigError(file: path, location: "", line: nil, problem: "not UTF-8 text (TOML files are UTF-8)")
        }
        return try parse(text, file: path)
    }

    public static func parse(_ text: String, file: String = "config") throws(ConfigError) -> HostConfig {
        // A byte-order mark is allowed before the first line (toml++ skips it; so does the check).
        let text = text.hasPrefix("\u{FEFF}") ? String(text.dropFirst()) : text
        try precheck(text, file: file)
        let root: TOMLTable
        do { root = try TOMLTable(string: text) } catch let e as TOMLParseError {
            throw ConfigError(file: file, location: "", line: e.source.begin.line, problem: "not valid TOML: \(e.description)")
        } catch {
            throw ConfigError(file: file, location: "", line: nil, problem: "not valid TOML: \(error)")
        }
        let r = Reader(file: file, text: text)
        var cfg = HostConfig()
        try r.unknownKeys(root, known: ["controller", "link", "group", "vm", "libvirt"], at: "", header: nil)

        if let v = root["controller"] {
            guard let t = v.table else { throw r.error("[controller]", nil, "must be a table") }
            let at = "[controller]"
            try r.unknownKeys(t, known: ["interval", "admin_socket", "state_dir", "metrics", "step", "soft_limit"], at: at, header: "[controller]")
            if let s = try r.string(t, "interval", at) {
                do { cfg.controller.interval = try DurationText.seconds(s) } catch { throw r.error(at, "interval", "\(error)", header: "[controller]") }
                guard (0.01...60).contains(cfg.controller.interval) else { throw r.error(at, "interval", "'\(s)' must be between 10ms and 60s", header: "[controller]") }
            }
            if let s = try r.string(t, "admin_socket", at) { cfg.controller.adminSocket = s }
            if let s = try r.string(t, "state_dir", at) { cfg.controller.stateDir = s }
            if let s = try r.string(t, "metrics", at) {
                if s.isEmpty || s == "off" { cfg.controller.metrics = nil } else {
                    guard parseListen(s) != nil else { throw r.error(at, "metrics", "'\(s)' is not HOST:PORT (e.g. 127.0.0.1:9465) or \"off\"", header: "[controller]") }
                    cfg.controller.metrics = s
                }
            }
            if let s = try r.string(t, "step", at) {
                guard s.hasSuffix("%"), let v = Double(s.dropLast()), v >= 0, v <= 50 else {
                    throw r.error(at, "step", "'\(s)' is not a percentage of the link from 0% to 50%, such as \"1%\"", header: "[controller]")
                }
                cfg.controller.step = v / 100
            }
            if let s = try r.string(t, "soft_limit", at) {
                guard s.hasSuffix("%"), let v = Double(s.dropLast()), v >= 50, v <= 100 else {
                    throw r.error(at, "soft_limit", "'\(s)' is not a percentage of the hard limit from 50% to 100%, such as \"97%\"", header: "[controller]")
                }
                cfg.controller.softFraction = v / 100
            }
        }

        let links = try r.tables(root, "link")
        for (i, t) in links.enumerated() {
            let at = "[[link]] #\(i + 1)"
            try r.unknownKeys(t, known: ["name", "capacity", "reserve_beyond_guarantee", "pf", "bridge", "default_weight", "default_min", "default_max", "set_min_rate",
                                               "vf_backend"],
                              at: at, header: "[[link]]", index: i)
            guard let name = try r.string(t, "name", at) else { throw r.error(at, "name", "missing", header: "[[link]]", index: i) }
            try r.checkName(name, at, "name", header: "[[link]]", index: i)
            guard let capText = try r.string(t, "capacity", at) else { throw r.error("\(at) (\(name))", "capacity", "missing: the link's capacity, such as \"10gbit\"", header: "[[link]]", index: i) }
            let cap = try r.rate(capText, "\(at) (\(name))", "capacity", header: "[[link]]", index: i)
            guard cap > .zero else { throw r.error("\(at) (\(name))", "capacity", "must be above 0", header: "[[link]]", index: i) }
            if cfg.links.contains(where: { $0.name == name }) { throw r.error(at, "name", "'\(name)' is named twice", header: "[[link]]", index: i) }
            var link = LinkConfig(name: name, capacity: cap, reserveBeyondGuarantee: try r.bool(t, "reserve_beyond_guarantee", at) ?? false)
            let named = "\(at) (\(name))"
            link.pfs = try r.strings(t, "pf", named, header: "[[link]]", index: i)
            link.bridges = try r.strings(t, "bridge", named, header: "[[link]]", index: i)
            for (key, list) in [("pf", link.pfs), ("bridge", link.bridges)] {
                for dev in list { try r.checkInterface(dev, named, key, header: "[[link]]", index: i) }
            }
            link.defaults.weight = try r.double(t, "default_weight", named) ?? 1
            if let s = try r.string(t, "default_min", named) { link.defaults.guarantee = try r.rate(s, named, "default_min", header: "[[link]]", index: i) }
            if let s = try r.string(t, "default_max", named) { link.defaults.cap = try r.rate(s, named, "default_max", header: "[[link]]", index: i) }
            do { try link.defaults.validate(prefix: "") } catch {
                throw r.error(named, "default_" + (error.field == "guarantee" ? "min" : error.field == "cap" ? "max" : error.field), error.problem, header: "[[link]]", index: i)
            }
            if let c = link.defaults.cap, c > cap { throw r.error(named, "default_max", "\(c) is above the link's capacity \(cap)", header: "[[link]]", index: i) }
            link.setMinRate = try r.bool(t, "set_min_rate", named) ?? false
            switch try r.string(t, "vf_backend", named) ?? "sriov" {
            case "sriov": link.devlink = false
            case "devlink": link.devlink = true
            case let other: throw r.error(named, "vf_backend", "'\(other)' is not \"sriov\" or \"devlink\"", header: "[[link]]", index: i)
            }
            // A device names one link (a macvtap's uplink is looked up among both lists).
            if let dev = link.pfs.first(where: link.bridges.contains) {
                throw r.error(named, "bridge", "'\(dev)' is also this link's pf", header: "[[link]]", index: i)
            }
            for other in cfg.links {
                let theirs = other.pfs + other.bridges
                if let dev = (link.pfs + link.bridges).first(where: theirs.contains) {
                    throw r.error(named, link.pfs.contains(dev) ? "pf" : "bridge", "'\(dev)' is also named by [[link]] \(other.name)", header: "[[link]]", index: i)
                }
            }
            cfg.links.append(link)
        }

        let groups = try r.tables(root, "group")
        for (i, t) in groups.enumerated() {
            let (name, at, link) = try r.entry(t, "[[group]]", i, known: ["name", "link", "weight", "min", "max"], taken: cfg.groups.map(\.name), links: cfg.links)
            let linkName = link.name
            let weight = try r.double(t, "weight", at) ?? 1
            let min = try r.string(t, "min", at).map { (s: String) throws(ConfigError) -> BitRate in try r.rate(s, at, "min", header: "[[group]]", index: i) } ?? .zero
            let max = try r.string(t, "max", at).map { (s: String) throws(ConfigError) -> BitRate in try r.rate(s, at, "max", header: "[[group]]", index: i) }
            do { try VMPolicy(weight: weight, guarantee: min, cap: max).validate(prefix: "") } catch {
                throw r.error(at, error.field == "guarantee" ? "min" : error.field == "cap" ? "max" : error.field, error.problem, header: "[[group]]", index: i)
            }
            if let max, max > link.capacity { throw r.error(at, "max", "\(max) is above link \(link.name)'s capacity \(link.capacity)", header: "[[group]]", index: i) }
            cfg.groups.append(GroupConfig(name: name, link: linkName, weight: weight, guarantee: min, cap: max))
        }

        if let v = root["libvirt"] {
            guard let t = v.table else { throw r.error("[libvirt]", nil, "must be a table") }
            try r.unknownKeys(t, known: ["uri"], at: "[libvirt]", header: "[libvirt]")
            guard let uri = try r.string(t, "uri", "[libvirt]") else {
                throw r.error("[libvirt]", "uri", "missing: libvirt's connection URI, such as \"qemu:///system\"", header: "[libvirt]")
            }
            guard uri.contains(":"), !uri.contains(" "), uri.utf8.count <= 1024 else {
                throw r.error("[libvirt]", "uri", "'\(uri.prefix(80))' is not a libvirt URI such as \"qemu:///system\"", header: "[libvirt]")
            }
            guard !cfg.links.isEmpty else {
                throw r.error("[libvirt]", nil, "there is no [[link]]: libvirt's VMs are put on the links, add one with its name, capacity and pf or bridge", header: "[libvirt]")
            }
            cfg.libvirt = Libvirt(uri: uri)
        }

        let vms = try r.tables(root, "vm")
        for (i, t) in vms.enumerated() {
            let (name, at, link) = try r.entry(t, "[[vm]]", i, known: ["name", "link", "backend", "interface", "pf", "vf", "set_min_rate", "channel", "weight", "min", "max", "group"],
                                               taken: cfg.vms.map(\.name), links: cfg.links)
            let linkName = link.name
            let backendName = try r.string(t, "backend", at) ?? "tc"
            let backend: Backend
            switch backendName {
            case "tc":
                guard let iface = try r.string(t, "interface", at) else { throw r.error(at, "interface", "missing: the VM's host interface (tap, macvtap, veth) for backend \"tc\"", header: "[[vm]]", index: i) }
                try r.checkInterface(iface, at, "interface", header: "[[vm]]", index: i)
                backend = .tc(interface: iface)
            case "sriov", "devlink":
                guard let pf = try r.string(t, "pf", at) else { throw r.error(at, "pf", "missing: the PF's interface for backend \"\(backendName)\"", header: "[[vm]]", index: i) }
                try r.checkInterface(pf, at, "pf", header: "[[vm]]", index: i)
                guard let vf = try r.int(t, "vf", at) else { throw r.error(at, "vf", "missing: the VF's number for backend \"\(backendName)\"", header: "[[vm]]", index: i) }
                guard (0...255).contains(vf) else { throw r.error(at, "vf", "\(vf) is not a VF number from 0 to 255", header: "[[vm]]", index: i) }
                backend = .sriov(pf: pf, vf: UInt32(vf), setMin: try r.bool(t, "set_min_rate", at) ?? false, devlink: backendName == "devlink")
            default:
                throw r.error(at, "backend", "'\(backendName)' is not \"tc\", \"sriov\" or \"devlink\"", header: "[[vm]]", index: i)
            }
            let weight = try r.double(t, "weight", at) ?? 1
            let min = try r.string(t, "min", at).map { (s: String) throws(ConfigError) -> BitRate in try r.rate(s, at, "min", header: "[[vm]]", index: i) } ?? .zero
            let max = try r.string(t, "max", at).map { (s: String) throws(ConfigError) -> BitRate in try r.rate(s, at, "max", header: "[[vm]]", index: i) }
            let policy = VMPolicy(weight: weight, guarantee: min, cap: max)
            do { try policy.validate(prefix: "") } catch {
                let key = error.field == "guarantee" ? "min" : error.field == "cap" ? "max" : error.field
                throw r.error(at, key, error.problem, header: "[[vm]]", index: i)
            }
            let channel = try r.string(t, "channel", at)
            let group = try r.string(t, "group", at)
            if let group {
                guard let g = cfg.groups.first(where: { $0.name == group }) else {
                    throw r.error(at, "group", "'\(group)' is not a [[group]]" + (cfg.groups.isEmpty ? "" : " (there are: \(cfg.groups.map(\.name).joined(separator: ", ")))"), header: "[[vm]]", index: i)
                }
                guard g.link == linkName else {
                    throw r.error(at, "group", "group '\(group)' is on link \(g.link), the VM on \(linkName)", header: "[[vm]]", index: i)
                }
            }
            cfg.vms.append(VMConfig(name: name, link: linkName, backend: backend, channel: channel, policy: policy, group: group))
        }

        // Across entries: the guarantees of the groups and the VMs in none within each link,
        // the VMs' own within their group's.
        var book = GuaranteeBook(links: cfg.links, groups: cfg.groups)
        if let problem = book.problem {
            throw ConfigError(file: file, location: "[[group]]", line: nil, problem: problem)
        }
        for vm in cfg.vms {
            if let problem = book.admit(vm) { throw ConfigError(file: file, location: "[[vm]] (\(vm.name))", line: nil, problem: problem) }
        }
        for link in cfg.links {
            for vm in cfg.vms where vm.link == link.name && (vm.policy.cap ?? .zero) > link.capacity {
                throw ConfigError(file: file, location: "[[vm]] (\(vm.name))", line: nil, problem: "max \(vm.policy.cap!) is above its link's capacity \(link.capacity)")
            }
        }
        var seen: [String: String] = [:]
        for vm in cfg.vms {
            let key: String
            switch vm.backend {
            case .tc(let iface): key = "interface \(iface)"
            case .sriov(let pf, let vf, _, _): key = "pf \(pf) vf \(vf)"
            }
            if let other = seen[key] { throw ConfigError(file: file, location: "[[vm]] (\(vm.name))", line: nil, problem: "\(key) is also \(other)'s") }
            seen[key] = vm.name
            if let ch = vm.channel, let other = cfg.vms.prefix(while: { $0.name != vm.name }).first(where: { $0.channel == ch }) {
                throw ConfigError(file: file, location: "[[vm]] (\(vm.name))", line: nil, problem: "channel \(ch) is also \(other.name)'s")
            }
        }
        return cfg
    }

    /// Checks table headers and keys before TOMLKit sees them: toml++ 3 aborts the process
    /// (an assertion in parse_key) on some malformed keys, e.g. `[[,link]]`, found by fuzzing.
    /// Tandem's configuration needs only bare keys, so anything else is refused here, clearly.
    static func precheck(_ text: String, file: String) throws(ConfigError) {
        // Work on Unicode scalars, as toml++ does: Swift's Characters join a "[" with the
        // combining marks after it, and "\r\n" into one (both found by fuzzing).
        let all = Array(text.unicodeScalars)
        var lines: [ArraySlice<Unicode.Scalar>] = []
        var start = 0
        for (k, c) in all.enumerated() where c == "\n" { lines.append(all[start..<k]); start = k + 1 }
        lines.append(all[start...])

        func isBlank(_ c: Unicode.Scalar) -> Bool { c == " " || c == "\t" }
        func trim(_ s: ArraySlice<Unicode.Scalar>) -> ArraySlice<Unicode.Scalar> {
            var s = s
            while let f = s.first, isBlank(f) { s = s.dropFirst() }
            while let l = s.last, isBlank(l) { s = s.dropLast() }
            return s
        }
        func bareKey(_ s: ArraySlice<Unicode.Scalar>) -> Bool {
            let parts = s.split(separator: ".", omittingEmptySubsequences: false)
            return !parts.isEmpty && parts.allSatisfy { p in
                let t = trim(p)
                return !t.isEmpty && t.allSatisfy { c in c.isASCII && (c.properties.isAlphabetic || ("0"..."9").contains(c) || c == "_" || c == "-") }
            }
        }
        // Where a line leaves the string state: strings are scanned as TOML defines them (a
        // `"""` inside a "..." string opens nothing), so a multi-line string is skipped whole
        // and nothing else is (a heuristic count of quotes was fooled by the fuzzer).
        enum Str { case none, basic, literal, multiBasic, multiLiteral }
        // Also notes any character outside strings and comments that is not ASCII: TOML has
        // none there (keys here are bare), and toml++ skips some of them, a second byte-order
        // mark for one, into its abort (a fuzzer find).
        var foreign: Unicode.Scalar? = nil
        func scan(_ s: ArraySlice<Unicode.Scalar>, from state: Str) -> Str {
            var st = state
            var k = s.startIndex
            func next3(_ q: Unicode.Scalar) -> Bool { k + 2 < s.endIndex && s[k] == q && s[k + 1] == q && s[k + 2] == q }
            while k < s.endIndex {
                let c = s[k]
                switch st {
                case .none:
                    if c == "#" { return .none }
                    if !c.isASCII && foreign == nil { foreign = c }
                    if next3("\"") { st = .multiBasic; k += 3; continue }
                    if next3("'") { st = .multiLiteral; k += 3; continue }
                    if c == "\"" { st = .basic } else if c == "'" { st = .literal }
                case .basic:
                    if c == "\\" { k += 2; continue }
                    if c == "\"" { st = .none }
                case .literal:
                    if c == "'" { st = .none }
                case .multiBasic:
                    if c == "\\" { k += 2; continue }
                    if next3("\"") { st = .none; k += 3; continue }
                case .multiLiteral:
                    if next3("'") { st = .none; k += 3; continue }
                }
                k += 1
            }
            // A single-line string does not carry over a newline.
            return st == .basic || st == .literal ? .none : st
        }
        // TOML allows no control characters but tab (and CR before LF); toml++ mishandles some
        // (a lone CR in a table header reached its abort; a fuzzer find).
        for (i, raw) in lines.enumerated() {
            let body = raw.last == "\r" ? raw.dropLast() : raw
            if let c = body.first(where: { ($0.value < 0x20 && $0 != "\t") || $0.value == 0x7f }) {
                throw ConfigError(file: file, location: "", line: i + 1, problem: "control character U+\(String(format: "%04X", c.value)) is not allowed in TOML")
            }
        }
        var state = Str.none
        for (i, raw0) in lines.enumerated() {
            let raw = raw0.last == "\r" ? raw0.dropLast() : raw0
            let line = trim(raw)
            // Inside a multi-line string nothing is a key.
            if state == .multiBasic || state == .multiLiteral {
                state = scan(raw, from: state)
                continue
            }
            foreign = nil
            state = scan(raw, from: .none)
            if let f = foreign {
                throw ConfigError(file: file, location: "", line: i + 1, problem: "character U+\(String(format: "%04X", f.value)) outside a string: keys and values other than strings are ASCII")
            }
            if line.isEmpty || line.first == "#" { continue }
            let shown = String(String.UnicodeScalarView(line.prefix(60)))
            let bad = { (what: String) -> ConfigError in ConfigError(file: file, location: "", line: i + 1, problem: "\(what): '\(shown)'") }
            if line.first == "[" {
                var body = trim(line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? [])
                let double = body.count >= 2 && body[body.startIndex + 1] == "["
                let open = double ? 2 : 1
                guard body.count > 2 * open, body.suffix(open).allSatisfy({ $0 == "]" }) else { throw bad("not a table header like [controller] or [[vm]]") }
                body = body.dropFirst(open).dropLast(open)
                guard bareKey(body) else { throw bad("not a table header like [controller] or [[vm]]") }
            } else if let eq = line.firstIndex(of: "=") {
                guard bareKey(line[line.startIndex..<eq]) else { throw bad("not a key: keys are letters, digits, '_' and '-'") }
            }
        }
    }

    /// `HOST:PORT` → (host, port).
    public static func parseListen(_ s: String) -> (String, UInt16)? {
        guard let c = s.lastIndex(of: ":"), let port = UInt16(s[s.index(after: c)...]), port > 0 else { return nil }
        var host = String(s[..<c])
        // IPv6 as URLs write it: [::1]:9465.
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) } else if host.contains(":") { return nil }
        guard IPAddress(host) != nil || host == "localhost" else { return nil }
        return (host, port)
    }
}

extension String {
    /// The bytes as UTF-8 text, or nil if they are not valid UTF-8.
    init?(validatingUTF8Bytes data: Data) {
        guard let s = String(bytes: data, encoding: .utf8), s.utf8.elementsEqual(data) else { return nil }
        self = s
    }
}

/// Reads typed values out of TOML tables, with errors that say where.
struct Reader {
    let file: String
    let lines: [Substring]

    init(file: String, text: String) {
        self.file = file
        self.lines = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
    }

    /// The line of `key` inside the `index`-th `header` section, found in the text (TOMLKit
    /// keeps no positions): good enough to point a person at the right place.
    func line(of key: String?, header: String?, index: Int = 0) -> Int? {
        var start = 0
        if let header {
            var seen = -1
            guard let h = lines.indices.first(where: { i in
                if lines[i].trimmingCharacters(in: .whitespaces).hasPrefix(header) { seen += 1; return seen == index }
                return false
            }) else { return nil }
            if key == nil { return h + 1 }
            start = h + 1
        }
        guard let key else { return nil }
        for i in start..<lines.count {
            let t = lines[i].trimmingCharacters(in: .whitespaces)
            if t.hasPrefix("[") && header != nil { break }
            if t.hasPrefix(key) {
                let rest = t.dropFirst(key.count).trimmingCharacters(in: .whitespaces)
                if rest.hasPrefix("=") { return i + 1 }
            }
        }
        return nil
    }

    func error(_ at: String, _ key: String?, _ problem: String, header: String? = nil, index: Int? = nil) -> ConfigError {
        // "[[vm]] #3 (name)" says which entry: its line is looked up in that one.
        let index = index ?? at.split(separator: "#").dropFirst().first.flatMap { Int($0.prefix(while: \.isNumber)) }.map { $0 - 1 } ?? 0
        return ConfigError(file: file, location: key.map { "\(at): key '\($0)'" } ?? at, line: line(of: key, header: header ?? (at.hasPrefix("[[") ? String(at.prefix(while: { $0 != " " })) : nil), index: index), problem: problem)
    }

    /// The head of a `[[vm]]` or `[[group]]` entry: its keys known, its name (unique among
    /// `taken`) and its link (the only one when it names none). Returns the name, the
    /// location to name in errors from here on (`[[vm]] #3 (web)`) and the link.
    func entry(_ t: TOMLTable, _ header: String, _ i: Int, known: Set<String>, taken: [String], links: [HostConfig.LinkConfig]) throws(ConfigError) -> (String, String, HostConfig.LinkConfig) {
        var at = "\(header) #\(i + 1)"
        try unknownKeys(t, known: known, at: at, header: header, index: i)
        guard let name = try string(t, "name", at) else { throw error(at, "name", "missing", header: header, index: i) }
        try checkName(name, at, "name", header: header, index: i)
        at += " (\(name))"
        if taken.contains(name) { throw error(at, "name", "'\(name)' is named twice", header: header, index: i) }
        guard let linkName = try string(t, "link", at) ?? (links.count == 1 ? links[0].name : nil) else {
            throw error(at, "link", links.isEmpty ? "missing, and there is no [[link]]: add one with its name and capacity" : "missing (there is more than one [[link]]: name one)", header: header, index: i)
        }
        guard let link = links.first(where: { $0.name == linkName }) else {
            throw error(at, "link", "'\(linkName)' is not a [[link]] (there are: \(links.map(\.name).joined(separator: ", ")))", header: header, index: i)
        }
        return (name, at, link)
    }

    func unknownKeys(_ t: TOMLTable, known: Set<String>, at: String, header: String?, index: Int = 0) throws(ConfigError) {
        for k in t.keys where !known.contains(k) {
            throw ConfigError(file: file, location: at.isEmpty ? "key '\(k)'" : "\(at): key '\(k)'", line: line(of: k, header: header, index: index),
                              problem: "unknown key (known: \(known.sorted().joined(separator: ", ")))")
        }
    }

    func tables(_ t: TOMLTable, _ key: String) throws(ConfigError) -> [TOMLTable] {
        guard let v = t[key] else { return [] }
        guard let a = v.array else { throw ConfigError(file: file, location: key, line: line(of: nil, header: "[\(key)]"), problem: "must be an array of tables: write [[\(key)]]") }
        var out: [TOMLTable] = []
        for e in a {
            guard let tt = e.table else { throw ConfigError(file: file, location: key, line: nil, problem: "every entry must be a table: write [[\(key)]]") }
            out.append(tt)
        }
        return out
    }

    func string(_ t: TOMLTable, _ key: String, _ at: String) throws(ConfigError) -> String? {
        guard let v = t[key] else { return nil }
        guard let s = v.string else { throw error(at, key, "must be a string, e.g. \(key) = \"...\"") }
        return s
    }

    func int(_ t: TOMLTable, _ key: String, _ at: String) throws(ConfigError) -> Int? {
        guard let v = t[key] else { return nil }
        guard let n = v.int else { throw error(at, key, "must be a whole number") }
        return n
    }

    func double(_ t: TOMLTable, _ key: String, _ at: String) throws(ConfigError) -> Double? {
        guard let v = t[key] else { return nil }
        if let d = v.double { return d }
        if let n = v.int { return Double(n) }
        throw error(at, key, "must be a number")
    }

    /// A string or an array of strings (`pf = "enp3s0f0"` or `pf = ["enp3s0f0", "enp3s0f1"]`).
    func strings(_ t: TOMLTable, _ key: String, _ at: String, header: String, index: Int) throws(ConfigError) -> [String] {
        guard let v = t[key] else { return [] }
        if let s = v.string { return [s] }
        guard let a = v.array else { throw error(at, key, "must be a string or an array of strings", header: header, index: index) }
        var out: [String] = []
        for e in a {
            guard let s = e.string else { throw error(at, key, "must be a string or an array of strings", header: header, index: index) }
            out.append(s)
        }
        return out
    }

    func bool(_ t: TOMLTable, _ key: String, _ at: String) throws(ConfigError) -> Bool? {
        guard let v = t[key] else { return nil }
        guard let b = v.bool else { throw error(at, key, "must be true or false") }
        return b
    }

    func rate(_ s: String, _ at: String, _ key: String, header: String? = nil, index: Int? = nil) throws(ConfigError) -> BitRate {
        do {
            let r = try BitRate(parsing: s)
            guard r <= .protocolMaximum else { throw error(at, key, "'\(s)' is above 10tbit", header: header, index: index) }
            return r
        } catch let e as BitRateParseError { throw error(at, key, e.description, header: header, index: index) }
        catch let e as ConfigError { throw e }
        catch { throw self.error(at, key, "\(error)", header: header, index: index) }
    }

    func checkName(_ s: String, _ at: String, _ key: String, header: String, index: Int) throws(ConfigError) {
        guard !s.isEmpty, s.utf8.count <= 64, s.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }), s.isASCII else {
            throw error(at, key, "'\(s.prefix(80))' must be 1 to 64 letters, digits, '-', '_' or '.'", header: header, index: index)
        }
    }

    func checkInterface(_ s: String, _ at: String, _ key: String, header: String, index: Int) throws(ConfigError) {
        guard !s.isEmpty, s.utf8.count < 16, !s.contains("/"), !s.contains(" ") else {
            throw error(at, key, "'\(s.prefix(80))' is not an interface name (1 to 15 bytes, no '/' or spaces)", header: header, index: index)
        }
    }
}

extension String {
    var isASCII: Bool { utf8.allSatisfy { $0 < 128 } }
}
