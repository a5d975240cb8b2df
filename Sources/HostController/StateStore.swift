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
    /// For tests: a slow disk (seconds added to every write, before the fsync). Not a setting.
    public var slowDiskSecondsForTests: Double = 0

    public init(directory: String) { self.directory = directory }

    public func load() throws -> PersistedState {
        guard FileManager.default.fileExists(atPath: path) else { return PersistedState() }
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        do { return try JSONDecoder().decode(PersistedState.self, from: data) } catch {
            throw StateError.unreadable(path: path, reason: "\(error)")
        }
    }

    public func save(_ state: PersistedState) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data = try enc.encode(state)
        let tmp = path + ".tmp.\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StateError.unwritable(path: tmp, errno: errno) }
        // The errno of the call that failed (a full disk fails a write, or only the fsync).
        var failure: Int32 = 0
        data.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = write(fd, raw.baseAddress! + off, raw.count - off)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { failure = n == 0 ? ENOSPC : errno; return }
                off += n
            }
            if slowDiskSecondsForTests > 0 { usleep(UInt32(slowDiskSecondsForTests * 1e6)) }
            if fsync(fd) != 0 { failure = errno }
        }
        close(fd)
        if failure == 0 && rename(tmp, path) != 0 { failure = errno }
        guard failure == 0 else {
            unlink(tmp)
            throw StateError.unwritable(path: path, errno: failure)
        }
        let dfd = open(directory, O_RDONLY | O_DIRECTORY)
        if dfd >= 0 { fsync(dfd); close(dfd) }
    }
}

/// Why the state file could not be read or written.
public enum StateError: Error, CustomStringConvertible, Sendable, Equatable {
    case unreadable(path: String, reason: String)
    case unwritable(path: String, errno: Int32)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "\(path) is not a state file this version can read (\(reason)); move it away to start afresh"
        case .unwritable(let path, let e): "cannot write \(path): \(String(cString: strerror(e))) (errno \(e))"
        }
    }
}

/// Writes state.json on a thread of its own, so that a slow disk (an fsync can take tens of
/// milliseconds, or seconds on a loaded host) never holds a round or an admin request of
/// the controller: writes are queued in order and each is awaited by whoever needs it.
final class StateWriter: @unchecked Sendable {
    let store: StateStore
    let queue = DispatchQueue(label: "tandem.state")
    init(store: StateStore) { self.store = store }

    /// Writes `state`; the error if it could not be written.
    func write(_ state: PersistedState) async -> Error? {
        await withCheckedContinuation { (c: CheckedContinuation<Error?, Never>) in
            queue.async {
                do { try self.store.save(state); c.resume(returning: nil) } catch { c.resume(returning: error) }
            }
        }
    }
}
