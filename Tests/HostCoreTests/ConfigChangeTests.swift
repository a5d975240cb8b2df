import Testing
import TandemProtocol
@testable import HostCore

@Suite struct ConfigChangeTests {
    static let base = """
        [[link]]
        name = "wire"
        capacity = "1gbit"
        [[vm]]
        name = "a"
        interface = "ta"
        [[vm]]
        name = "b"
        interface = "tb"
        channel = "/run/b.sock"
        """

    func change(_ edit: (String) -> String) throws -> ConfigChange {
        ConfigChange(from: try HostConfig.parse(Self.base), to: try HostConfig.parse(edit(Self.base)))
    }

    @Test func theSameFileChangesNothing() throws {
        #expect(try change { $0 }.isEmpty)
    }

    @Test(arguments: [
        // (edit, removed, added, replaced, repoliced)
        ("remove b", [String](["b"]), [String](), [String](), [String]()),
        ("add c", [], ["c"], [], []),
        ("b elsewhere", [], [], ["b"], []),
        ("b new channel", [], [], ["b"], []),
        ("a weight", [], [], [], ["a"]),
    ])
    func eachKindOfChange(what: String, removed: [String], added: [String], replaced: [String], repoliced: [String]) throws {
        let c = try change { text in
            switch what {
            case "remove b": return String(text[..<text.range(of: "[[vm]]\nname = \"b\"")!.lowerBound])
            case "add c": return text + "\n[[vm]]\nname = \"c\"\ninterface = \"tc0\"\n"
            case "b elsewhere": return text.replacingOccurrences(of: "\"tb\"", with: "\"tb2\"")
            case "b new channel": return text.replacingOccurrences(of: "/run/b.sock", with: "/run/b2.sock")
            default: return text.replacingOccurrences(of: "interface = \"ta\"", with: "interface = \"ta\"\nweight = 4")
            }
        }
        #expect(c.removed == removed)
        #expect(c.added.map(\.name) == added)
        #expect(c.replaced.map(\.name) == replaced)
        #expect(c.repoliced.map(\.name) == repoliced)
        #expect(c.relinked.isEmpty && c.needsRestart.isEmpty && !c.tuned)
    }

    /// A devlink VM's group is its leaf's node: a VM that changes group has its backend made
    /// again (another VM's group change is only a policy change).
    @Test func aDevlinkVMThatChangesGroupIsReplaced() throws {
        let text = """
            [[link]]
            name = "wire"
            capacity = "1gbit"
            [[group]]
            name = "g1"
            link = "wire"
            [[group]]
            name = "g2"
            link = "wire"
            [[vm]]
            name = "d"
            backend = "devlink"
            pf = "p0"
            vf = 1
            group = "g1"
            [[vm]]
            name = "t"
            interface = "ta"
            group = "g1"
            """
        let c = ConfigChange(from: try HostConfig.parse(text), to: try HostConfig.parse(text.replacingOccurrences(of: #"group = "g1""#, with: #"group = "g2""#)))
        #expect(c.replaced.map(\.name) == ["d"])
        #expect(c.repoliced.map(\.name) == ["t"])
    }

    @Test func aVMThatComesFromLibvirtNowIsReplaced() throws {
        let old = try HostConfig.parse(Self.base)
        var new = old
        new.vms[0].origin = .libvirt(uuid: "u1")
        #expect(ConfigChange(from: old, to: new).replaced.map(\.name) == [new.vms[0].name])
    }

    @Test func linksAndControllerKeys() throws {
        let c = try change {
            "[controller]\ninterval = \"1s\"\nmetrics = \"127.0.0.1:1\"\nsoft_limit = \"90%\"\n" + $0.replacingOccurrences(of: "1gbit", with: "10gbit")
        }
        #expect(c.relinked.map(\.capacity) == [.gbit(10)])
        #expect(c.needsRestart == ["interval", "metrics"])
        #expect(c.tuned)
    }
}
