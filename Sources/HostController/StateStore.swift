import Foundation
import TandemProtocol
#if canImport(Glibc)
import Glibc
#endif

/// What survives a restart: policies changed at runtime and admitted reservations.
public struct PersistedState: Codable, Equatable, Sendable {
    public var version = 1
    public var policies: [String: VMPolicy] = [:]
    public var reservations: [String: [GrantedReservation]] = [:]
    public init() {}
}

/// Reads and writes `state.json` in the state directory: atomically (a temporary file,
/// fsync, rename, fsync of the directory), so a crash leaves the old or the new state, never
/// half of one.
public struct StateStore: Sendable {
    public let directory: String
    public var path: String { directory + "/state.json" }

    public init(directory: String) { self.directory = directory }

    public func load() throws -> PersistedState {
        guard FileManager.default.fileExists(atPath: path) else { return PersistedState() }
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        do { return try JSONDecoder().decode(PersistedState.self, from: data) } catch {
            throw CocoaStyleError("\(path) is not a state file this version can read (\(error)); move it away to start afresh")
        }
    }

    public func save(_ state: PersistedState) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try enc.encode(state)
        let tmp = path + ".tmp.\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CocoaStyleError("cannot write \(tmp): \(String(cString: strerror(errno)))") }
        let ok = data.withUnsafeBytes { raw -> Bool in
            var off = 0
            while off < raw.count {
                let n = write(fd, raw.baseAddress! + off, raw.count - off)
                if n <= 0 { if errno == EINTR { continue }; return false }
                off += n
            }
            return fsync(fd) == 0
        }
        close(fd)
        guard ok, rename(tmp, path) == 0 else {
            let e = String(cString: strerror(errno)); unlink(tmp)
            throw CocoaStyleError("cannot write \(path): \(e)")
        }
        let dfd = open(directory, O_RDONLY | O_DIRECTORY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }
}

public struct CocoaStyleError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ d: String) { description = d }
}
