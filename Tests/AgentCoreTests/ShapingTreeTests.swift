import Testing
import Netlink
import TandemProtocol
@testable import AgentCore

@Suite struct ShapingTreeTests {
    static let rsv = GrantedReservation(id: "r-1", rate: .mbit(30), selector: FlowSelector(proto: .tcp, destination: IPPrefix("10.0.0.5"), destinationPort: 5201))

    @Test func treeWithoutReservations() {
        let t = ShapingTree.desired(limit: .mbit(100), reservations: [])
        #expect(t.classes.map(\.handle.description) == ["1:1", "1:10", "1:20", "1:30"])
        #expect(t.classes[0].rate == .mbit(100))
        #expect(t.classes[0].ceil == .mbit(100))
        let tcp = t.classes[1], udp = t.classes[2], other = t.classes[3]
        #expect(tcp.rate == udp.rate, "TCP and UDP are guaranteed the same share")
        #expect(tcp.quantum == udp.quantum, "and borrow in equal quanta")
        #expect(tcp.rate + udp.rate + other.rate <= .mbit(100))
        #expect(tcp.rate > .mbit(45))
        #expect(t.classes.dropFirst().allSatisfy { $0.ceil == .mbit(100) && $0.parent == ShapingTree.top })
        #expect(t.filters.map(\.priority) == [60000, 60001, 60002, 60003])
        #expect(t.unmetReservations == .zero)
    }

    @Test func reservationGetsClassAndFiltersOfItsFamily() {
        let t = ShapingTree.desired(limit: .mbit(100), reservations: [.init(slot: 3, reservation: Self.rsv)])
        let c = t.classes.first { $0.handle == TCHandle(major: 1, minor: 0x103) }
        #expect(c?.rate == .mbit(30))
        #expect(c?.ceil == .mbit(100))
        #expect(c?.prio == 0)
        let f = t.filters.filter { $0.target == .classify(TCHandle(major: 1, minor: 0x103)) }
        #expect(f.map(\.priority) == [106], "IPv4 destination: only the IPv4 filter")
        #expect(f.first?.family == .ipv4)
        let tcp = t.classes.first { $0.handle == ShapingTree.tcp }!
        #expect(tcp.rate < .mbit(35), "the rest is shared after the reservation")
        #expect(t.appliedReservations["r-1"] == .mbit(30))
    }

    @Test func reservationWithoutAddressesGetsBothFamilies() {
        let any = GrantedReservation(id: "r-2", rate: .mbit(5), selector: FlowSelector(proto: .udp, destinationPort: 53))
        let t = ShapingTree.desired(limit: .mbit(100), reservations: [.init(slot: 0, reservation: any)])
        #expect(t.filters.filter { $0.priority < 60000 }.map(\.family) == [.ipv4, .ipv6])
    }

    @Test func oversubscribedReservationsAreScaledAndReportedUnmet() {
        let a = GrantedReservation(id: "a", rate: .mbit(80), selector: FlowSelector(proto: .tcp, destinationPort: 1))
        let b = GrantedReservation(id: "b", rate: .mbit(40), selector: FlowSelector(proto: .tcp, destinationPort: 2))
        let t = ShapingTree.desired(limit: .mbit(100), reservations: [.init(slot: 0, reservation: a), .init(slot: 1, reservation: b)])
        let applied = t.appliedReservations.values.reduce(BitRate.zero, +)
        #expect(applied <= .mbit(90))
        #expect(applied >= BitRate(bitsPerSecond: 89_999_000))
        #expect(t.unmetReservations >= .mbit(29))
        #expect(t.appliedReservations["a"]! > t.appliedReservations["b"]!, "scaled together, in proportion")
    }
}
