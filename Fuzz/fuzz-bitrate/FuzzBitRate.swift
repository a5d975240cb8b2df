// Fuzz target: rate and address parsing. Whatever parses prints and parses back the same.
import TandemProtocol

func fuzzOne(_ bytes: [UInt8]) {
    let text = String(decoding: bytes, as: UTF8.self)
    if let r = try? BitRate(parsing: text) {
        precondition((try? BitRate(parsing: r.description)) == r, "BitRate round trip: \(text) -> \(r)")
        _ = r.rounded
    }
    if let a = IPAddress(text) { precondition(IPAddress(a.description) == a, "IPAddress round trip: \(text)") }
    if let p = IPPrefix(text) { precondition(IPPrefix(p.description) == p, "IPPrefix round trip: \(text)") }
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

@_cdecl("fuzz_bitrate_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var c = argc, v = argv
    return LLVMFuzzerRunDriver(&c, &v, LLVMFuzzerTestOneInput)
}
#else
import Foundation
@main struct Replay {
    static func main() throws {
        for path in CommandLine.arguments.dropFirst() { fuzzOne(Array(try Data(contentsOf: URL(fileURLWithPath: path)))) }
    }
}
#endif
