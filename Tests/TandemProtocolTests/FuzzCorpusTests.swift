import Foundation
import Testing

/// The fuzzers' corpus, crashes found included, replayed through the fuzz targets as they are
/// built normally (without the fuzzer, each target runs the files it is given).
@Suite struct FuzzCorpusTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test(arguments: ["frames", "bitrate", "agent-api", "config", "controller"])
    func corpusReplaysCleanly(target: String) throws {
        let dir = Self.repo.appendingPathComponent("Fuzz/corpus/\(target)")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted().map { dir.appendingPathComponent($0).path }
        #expect(!files.isEmpty)
        let bin = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("fuzz-\(target)")
        let p = Process()
        p.executableURL = bin
        p.arguments = files
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "fuzz-\(target) failed on its corpus")
    }
}
