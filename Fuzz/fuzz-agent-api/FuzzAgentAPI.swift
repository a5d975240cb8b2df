// Fuzz target: the agent socket's request parser: a JSON line to an AgentRequest, its rate,
// selector and TTL, as Agent.handleRequest reads them.
import Foundation
import GuestAgent
import TandemProtocol
import TandemRuntime

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
    fuzzOne(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

// SwiftPM links an executable's entry point as MODULE_main; hand it to libFuzzer's driver.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt) -> CInt

@_cdecl("fuzz_agent_api_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var c = argc, v = argv
    return LLVMFuzzerRunDriver(&c, &v, LLVMFuzzerTestOneInput)
}
#else
@main struct Replay {
    static func main() throws {
        for path in CommandLine.arguments.dropFirst() { fuzzOne(Array(try Data(contentsOf: URL(fileURLWithPath: path)))) }
    }
}
#endif
