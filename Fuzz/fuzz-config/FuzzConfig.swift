// Fuzz target: the host's configuration parser. Whatever the text, a config or a ConfigError.
import Foundation
import HostController

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
    fuzzOne(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

// SwiftPM links an executable's entry point as MODULE_main; hand it to libFuzzer's driver.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt) -> CInt

@_cdecl("fuzz_config_main")
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
