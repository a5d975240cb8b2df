// Fuzz target: the frame decoder and message validation, both directions, in every split.
// Built with -DFUZZING -sanitize=fuzzer,address by scripts/fuzz.sh; otherwise a replayer that
// runs the files it is given (the regression corpus) through the same code.
import FuzzSupport
import TandemProtocol

func fuzzOne(_ bytes: [UInt8]) {
    var whole = FrameDecoder(maxFrameBytes: Limits.maxFrameBytes)
    whole.feed(bytes)
    var split = FrameDecoder(maxFrameBytes: Limits.maxFrameBytes)
    var i = 0
    var step = 1
    while i < bytes.count {
        let n = min(step, bytes.count - i)
        split.feed(bytes[i..<(i + n)])
        i += n
        step = step % 7 + 1
    }
    var a: [FrameDecoder.Event] = [], b: [FrameDecoder.Event] = []
    while let e = whole.next() { a.append(e) }
    while let e = split.next() { b.append(e) }
    // However the bytes are split, the same frames come out.
    precondition(a == b, "split-dependent framing")
    precondition(whole.bufferedBytes < Limits.maxFrameBytes)
    for case .frame(let f) in a {
        // The fast path for demand reports and pings, where it takes a frame, decides as the
        // general decoder does.
        precondition(MessageCodec.decodeGuest(f) == MessageCodec.decodeGuest(f, fastPath: false), "fast path disagrees")
        precondition(MessageCodec.decodeGuest(f, detail: false) == MessageCodec.decodeGuest(f, fastPath: false, detail: false), "fast path without detail disagrees")
        if case .message(let m, let s, _) = MessageCodec.decodeGuest(f) {
            // What decodes re-encodes and decodes to the same message.
            let again = MessageCodec.encode(m, session: s ?? SessionID(0))
            guard case .message(let m2, _, _) = MessageCodec.decodeGuest(Array(again.dropLast())) else { preconditionFailure("re-encoded guest message does not decode") }
            precondition(m == m2, "guest round trip changed the message")
        }
        if case .message(let m, let s, _) = MessageCodec.decodeHost(f) {
            let again = MessageCodec.encode(m, session: s)
            guard case .message(let m2, _, _) = MessageCodec.decodeHost(Array(again.dropLast())) else { preconditionFailure("re-encoded host message does not decode") }
            precondition(m == m2, "host round trip changed the message")
        }
    }
}

#if FUZZING
@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    fuzzOne(Fuzz.bytes(data, size))
    return 0
}

@_cdecl("fuzz_frames_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    Fuzz.drive(argc, argv, LLVMFuzzerTestOneInput)
}
#else
@main struct Replay {
    static func main() throws { try Fuzz.replay(fuzzOne) }
}
#endif
