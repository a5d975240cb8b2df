import Foundation
import Testing
import GuestAgent
import TandemProtocol
import TandemTestSupport
import AgentCore
import TandemLabSupport
import TandemTransport

@Suite(.serialized, Privileged.enabled, .exclusive)
struct AgentSocketUnprivilegedTests {
    /// An unprivileged local user: shut out by the socket's mode; let in (as an admin would,
    /// with a group) it floods, and the per-uid cap and the rate limit hold; the agent lives.
    @Test func unprivilegedUserIsShutOutThenHeldToItsLimits() async throws {
        let t = try AgentUnderTest()
        defer { t.close() }
        try await t.handshake()
        let granter = t.host.grantAll()
        defer { granter.cancel() }
        let root = try await t.waitForSocket()
        for _ in 0..<100 where (try? root.call(AgentRequest(op: "status")))?.status?.host != "connected" { try await Task.sleep(for: .milliseconds(50)) }
        let nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        let cli = Binaries.path("tandem-agent")
        // The socket is 0660 root: nobody cannot even connect.
        let shut = try Shell.run(nobody + [cli, "status", "--socket", t.socket])
        #expect(shut.status != 0)
        #expect(shut.stderr.contains("Permission denied"), "\(shut.stderr)")
        // Let it in, and let it try.
        chmod(URL(fileURLWithPath: t.socket).deletingLastPathComponent().path, 0o755)
        chmod(t.socket, 0o666)
        let script = """
            import socket, json, time
            s = socket.socket(socket.AF_UNIX); s.connect('\(t.socket)')
            # Within the agent's pace for one user (4 a second): the per-user cap is what stops them.
            for i in range(20):
                s.sendall((json.dumps({"op": "reserve", "rate": "10kbit", "proto": "tcp", "dport": 1000 + i, "ttl": "60s"}) + "\\n").encode())
                time.sleep(0.3)
            s.sendall(b"x" * 100000 + b"\\n")
            for i in range(2000): s.sendall(b'{"op":"list"}\\n')
            s.settimeout(3)
            got = b""
            try:
                while True:
                    d = s.recv(65536)
                    if not d: break
                    got += d
            except Exception: pass
            lines = [json.loads(l) for l in got.split(b"\\n") if l.strip()]
            ok = [l for l in lines if l.get("ok") and l.get("id")]
            listed = sum(1 for l in lines if l.get("ok") and "reservations" in l and not l.get("id"))
            print(len(ok), sum(1 for l in lines if "too many requests" in (l.get("error") or "")), sum(1 for l in lines if "uid 65534 already holds" in (l.get("error") or "")), listed)
            """
        // Off the cooperative pool: the test host answers the agent while the flood runs.
        let flood = try await offPool { try Shell.run(nobody + ["/usr/bin/python3", "-c", script]) }
        #expect(flood.status == 0, "\(flood.stderr)")
        let counts = flood.stdout.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        #expect(counts.count == 4)
        #expect(counts.first == 16, "the per-uid cap: \(flood.stdout)")
        // 50 lines a second per client (burst 50): of 2,000 list requests sent at once, the few
        // hundred at most the limit lets through in the script's 3 s are answered, and the
        // client is told why (one notice a second).
        if counts.count == 4 {
            #expect(counts[1] >= 1, "no 'too many requests': \(flood.stdout)")
            #expect(counts[3] > 0 && counts[3] <= 300, "list answered \(counts[3]) times of 2000 sent")
        }
        #expect(t.agent.isRunning, "no crash")
        let list = try root.call(AgentRequest(op: "list")).reservations ?? []
        #expect(list.filter { $0.uid == 65534 }.count == 16)
        #expect(try root.call(AgentRequest(op: "status")).ok, "still answering")

        // One user cannot hold all the connections: nobody's 33rd and later are closed at once;
        // root still gets in.
        let many = """
            import socket, time
            socks = []
            for i in range(40):
                s = socket.socket(socket.AF_UNIX); s.connect('\(t.socket)'); socks.append(s)
            time.sleep(0.5)
            answered = 0
            for s in socks:
                try:
                    s.sendall(b'{"op":"list"}\\n'); s.settimeout(2)
                    if s.recv(65536): answered += 1
                except Exception: pass
            print(answered)
            """
        let held = try await offPool { try Shell.run(nobody + ["/usr/bin/python3", "-c", many]) }
        #expect(held.status == 0, "\(held.stderr)")
        #expect(Int(held.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) == 32, "connections served for one user: \(held.stdout)")
        #expect(try root.call(AgentRequest(op: "status")).ok, "root still served")
    }
}
