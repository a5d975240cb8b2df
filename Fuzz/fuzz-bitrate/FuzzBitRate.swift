// Fuzz target: rate and address parsing. Whatever parses prints and parses back the same.
import FuzzSupport
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
    fuzzOne(Fuzz.bytes(data, size))
    return 0
}

@_cdecl("fuzz_bitrate_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    Fuzz.drive(argc, argv, LLVMFuzzerTestOneInput)
}
#else
@main struct Replay {
    static func main() throws { try Fuzz.replay(fuzzOne) }
}
#endif
