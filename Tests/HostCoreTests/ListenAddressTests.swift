import Testing
import TandemProtocol
@testable import HostCore

@Suite struct ListenAddressTests {
    @Test(arguments: [
        ("127.0.0.1:9465", "127.0.0.1", UInt16(9465)), ("localhost:1", "localhost", 1), ("[::1]:9465", "::1", 9465), ("[::]:80", "::", 80),
    ])
    func accepted(text: String, host: String, port: UInt16) {
        let r = HostConfig.parseListen(text)
        #expect(r?.0 == host && r?.1 == port)
    }

    @Test(arguments: ["::1:9465", "[::1]", "127.0.0.1", "127.0.0.1:0", "host:9465", "[nope]:1", "127.0.0.1:70000"])
    func refused(text: String) {
        #expect(HostConfig.parseListen(text) == nil)
    }
}
