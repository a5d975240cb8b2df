// Fuzz target: the agent socket's request parser: a JSON line to an AgentRequest, its rate,
// selector and TTL, as Agent.handleRequest reads them.
import Foundation
import FuzzSupport
import TandemProtocol
import AgentCore

func fuzzOne(_ bytes: [UInt8]) {
    guard let req = try? JSONDecoder().decode(AgentRequest.self, from: Data(bytes)) else { return }
    if let r = req.rate { _ = try? BitRate(parsing: r) }
    if let t = req.ttl { _ = try? DurationText.seconds(t) }
    if let sel = try? req.selector() {
        let rsv = ReserveRequest(id: "r-fuzz", rate: .mbit(1), selector: sel)
        precondition((try? rsv.validate()) != nil, "a selector the parser accepts must validate")
    }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzOne(Fuzz.bytes(data, size))
    return 0
}

@_cdecl("fuzz_agent_api_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    Fuzz.drive(argc, argv, LLVMFuzzerTestOneInput)
}
#else
@main struct Replay {
    static func main() throws { try Fuzz.replay(fuzzOne) }
}
#endif
