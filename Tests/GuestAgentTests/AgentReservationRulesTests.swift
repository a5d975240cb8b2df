import Foundation
import Testing
import GuestAgent
import TandemProtocol
import TandemTestSupport
import AgentCore
import TandemLabSupport
import TandemTransport

@Suite(.serialized, Privileged.enabled, .exclusive)
struct AgentReservationRulesTests {
    @Test func ttlPerUIDCapOversizeAndRelease() async throws {
        let t = try AgentUnderTest()
        defer { t.close() }
        try await t.handshake()
        // The host grants every reservation it is asked for.
        let granter = t.host.grantAll()
        defer { granter.cancel() }
        let c = try await t.waitForSocket()
        // The welcome was sent; wait until the agent has taken it.
        for _ in 0..<100 where (try? c.call(AgentRequest(op: "status")))?.status?.host != "connected" { try await Task.sleep(for: .milliseconds(50)) }

        // A TTL reservation outlives its connection, then expires.
        let ttl = try c.call(AgentRequest(op: "reserve", rate: "1mbit", proto: "udp", dport: 53, ttl: "2s"))
        #expect(ttl.ok, "\(ttl.error ?? "")")
        let ttlID = try #require(ttl.id)
        c.close()
        let c2 = try AgentClient(path: t.socket)
        #expect(try c2.call(AgentRequest(op: "list")).reservations?.map(\.id) == [ttlID])
        let expired: String = try await t.host.waitFor("release on expiry", timeout: 6) { m, _ in if case .release(let r) = m { return r.id }; return nil }
        #expect(expired == ttlID)
        #expect(try c2.call(AgentRequest(op: "list")).reservations?.isEmpty == true)

        // The per-uid cap (16 by default), asked within the agent's pace for one user (4 a
        // second, burst 8).
        for i in 0..<16 {
            if i >= 7 { try await Task.sleep(for: .milliseconds(260)) }
            let r = try c2.call(AgentRequest(op: "reserve", rate: "10kbit", proto: "tcp", dport: UInt16(1000 + i)))
            #expect(r.ok, "\(i): \(r.error ?? "")")
        }
        try await Task.sleep(for: .milliseconds(260))
        let over = try c2.call(AgentRequest(op: "reserve", rate: "10kbit", proto: "tcp", dport: 2000))
        #expect(over.ok == false)
        #expect(over.error?.contains("uid 0 already holds 16 reservations") == true)

        // Release by id; unknown ids and ops are named.
        let first = try #require(try c2.call(AgentRequest(op: "list")).reservations?.first?.id)
        #expect(try c2.call(AgentRequest(op: "release", id: first)).ok)
        #expect(try c2.call(AgentRequest(op: "release", id: "r-nope")).error == "no reservation 'r-nope'")
        #expect(try c2.call(AgentRequest(op: "dance")).error?.contains("unknown op 'dance'") == true)
        let bad = try c2.call(AgentRequest(op: "reserve", rate: "1mbit", ttl: "forever"))
        #expect(bad.error?.contains("invalid duration 'forever'") == true)

        // A line over the limit is refused; the connection carries on.
        let raw = try LineClient(path: t.socket, what: "agent")
        struct Big: Encodable { var op = "list"; var pad = String(repeating: "x", count: 10_000) }
        let big = try raw.call(Big(), as: AgentResponse.self)
        #expect(big.error?.contains("longer than 4096 bytes") == true)
        #expect(try raw.call(AgentRequest(op: "list"), as: AgentResponse.self).ok)
    }
}
