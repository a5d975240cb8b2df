import Foundation
import Logging
import Testing
@testable import TandemDaemon
import TandemTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite(.exclusive) struct SystemdNotifierTests {
    @Test func readyAndWatchdogReachTheSocket() throws {
        let sock = try FakeNotifySocket()
        let n = SystemdNotifier(environment: ["NOTIFY_SOCKET": sock.path, "WATCHDOG_USEC": "2000000"])
        #expect(n.watchdogSeconds == 2)
        n.ready(status: "3 VMs on 1 link")
        #expect(sock.receive() == "READY=1\nSTATUS=3 VMs on 1 link")
        n.watchdog(now: 10)
        #expect(sock.receive() == "WATCHDOG=1")
        // At most once a quarter of the period: 0.4 s later is too soon, 0.5 s is due.
        n.watchdog(now: 10.4)
        #expect(sock.receive(timeout: 0.2) == nil)
        n.watchdog(now: 10.5)
        #expect(sock.receive() == "WATCHDOG=1")
        n.reloading()
        #expect(sock.receive()?.hasPrefix("RELOADING=1\nMONOTONIC_USEC=") == true)
    }

    @Test func outsideSystemdNothingIsSent() {
        let n = SystemdNotifier(environment: [:])
        #expect(n.socketPath == nil && n.watchdogSeconds == nil)
        #expect(!n.notify("READY=1"))
    }

    @Test func aWatchdogForAnotherProcessIsNotOurs() {
        let n = SystemdNotifier(environment: ["NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "\(getpid() + 1)"])
        #expect(n.watchdogSeconds == nil)
        #expect(!n.notify("READY=1"), "an unreachable socket is reported, not thrown")
    }
}
