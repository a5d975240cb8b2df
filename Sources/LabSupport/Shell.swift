import Foundation

/// Runs a program and collects what it printed. For tools whose output is an interface
/// (iperf3, ip, tc in tests and the lab), never for what the netlink module does.
public enum Shell {
    public struct Result: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
        public init(status: Int32, stdout: String, stderr: String) { self.status = status; self.stdout = stdout; self.stderr = stderr }
    }

    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var command: [String]
        public var result: Result
        public init(command: [String], result: Result) { self.command = command; self.result = result }
        /// A failure that did not come from a command's exit status.
        public init(_ what: String, _ message: String) { self.command = [what]; self.result = Result(status: -1, stdout: "", stderr: message) }
        public var description: String {
            "`\(command.joined(separator: " "))` exited \(result.status): \(result.stderr.trimmingCharacters(in: .whitespacesAndNewlines))"
        }
    }

    /// Runs `argv` (looked up in PATH) to completion.
    @discardableResult
    public static func run(_ argv: [String], input: String? = nil) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = argv
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let inPipe = Pipe()
        p.standardInput = input == nil ? FileHandle.nullDevice : inPipe
        try p.run()
        if let input {
            inPipe.fileHandleForWriting.write(Data(input.utf8))
            try? inPipe.fileHandleForWriting.close()
        }
        // Read both pipes concurrently so neither fills up and blocks the child.
        nonisolated(unsafe) var errData = Data()
        let group = DispatchGroup()
        DispatchQueue.global().async(group: group) { errData = err.fileHandleForReading.readDataToEndOfFile() }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
    }

    /// Runs `argv` and throws unless it exits 0; returns its standard output.
    @discardableResult
    public static func check(_ argv: [String], input: String? = nil) throws -> String {
        let r = try run(argv, input: input)
        guard r.status == 0 else { throw Failure(command: argv, result: r) }
        return r.stdout
    }

    /// Whether a program is on PATH.
    public static func has(_ program: String) -> Bool {
        (try? run(["sh", "-c", "command -v \(program)"]).status) == 0
    }
}
