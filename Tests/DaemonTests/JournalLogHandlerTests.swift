import Foundation
import Logging
import Testing
@testable import TandemDaemon
import TandemTestSupport
#if canImport(Glibc)
import Glibc
#endif

@Suite struct JournalLogHandlerTests {
    @Test(arguments: [(Logger.Level.error, "<3>"), (.warning, "<4>"), (.notice, "<5>"), (.info, "<6>"), (.debug, "<7>"), (.critical, "<2>")])
    func linesCarryTheirPriority(level: Logger.Level, prefix: String) {
        let line = JournalLogHandler.format(level: level, message: "limit not applied", metadata: ["vm": "vm1", "error": "EINVAL"])
        #expect(line == "\(prefix)limit not applied error=EINVAL vm=vm1\n")
    }

    @Test func aNewlineInAValueDoesNotStartARecord() {
        let line = JournalLogHandler.format(level: .error, message: "x", metadata: ["log": "a\nb"])
        #expect(line == "<3>x log=a\\nb\n")
    }
}
