// What every fuzz target shares: libFuzzer's driver (with -DFUZZING) and the corpus replayer
// (without). Each target keeps only its entry points, whose symbol names are its own.
import Foundation

public enum Fuzz {
    /// The input as bytes.
    public static func bytes(_ data: UnsafePointer<UInt8>, _ size: Int) -> [UInt8] {
        Array(UnsafeBufferPointer(start: data, count: size))
    }

    /// Runs `body` on every file named on the command line: the regression corpus.
    public static func replay(_ body: ([UInt8]) -> Void) throws {
        for path in CommandLine.arguments.dropFirst() { body(Array(try Data(contentsOf: URL(fileURLWithPath: path)))) }
    }

    #if FUZZING
    /// SwiftPM links an executable's entry point as MODULE_main; the target's one hands
    /// control to libFuzzer's driver here.
    public static func drive(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
                             _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt) -> CInt {
        var c = argc, v = argv
        return LLVMFuzzerRunDriver(&c, &v, callback)
    }
    #endif
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt) -> CInt
#endif
