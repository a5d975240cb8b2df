// Fuzz target: the host's configuration parser. Whatever the text, a config or a ConfigError.
import Foundation
import FuzzSupport
import HostCore

func fuzzOne(_ bytes: [UInt8]) {
    let text = String(decoding: bytes, as: UTF8.self)
    if let c = try? HostConfig.parse(text, file: "fuzz.toml") {
        for l in c.links { precondition(l.capacity.bitsPerSecond > 0) }
        for v in c.vms { precondition(c.links.contains { $0.name == v.link }) }
    }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzOne(Fuzz.bytes(data, size))
    return 0
}

@_cdecl("fuzz_config_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    Fuzz.drive(argc, argv, LLVMFuzzerTestOneInput)
}
#else
@main struct Replay {
    static func main() throws { try Fuzz.replay(fuzzOne) }
}
#endif
