import Foundation

/// A network namespace this process made (`ip netns add`), for the lab and the tests.
///
/// Names carry the creating process's pid, so parallel runs never collide and a stale one
/// can be told apart (its pid is gone). The namespace goes away with ``delete()``.
public final class Netns: Sendable {
    public let name: String

    /// Creates `PREFIX-PID-N`, or fails naming what `ip` said. The first call in a process
    /// also removes namespaces of this kind left by processes that are gone (a crashed run).
    public init(prefix: String) throws {
        precondition(prefix.hasPrefix(Netns.projectPrefix), "a namespace prefix starts with \(Netns.projectPrefix) (cleanStale removes only those)")
        _ = Netns.staleCleaned
        let n = Netns.counter.next()
        name = "\(prefix)-\(getpid())-\(n)"
        try Shell.check(["ip", "netns", "add", name])
        try Shell.check(["ip", "-n", name, "link", "set", "lo", "up"])
    }

    /// Runs a command inside the namespace and returns its output; throws if it fails.
    @discardableResult
    public func exec(_ argv: [String]) throws -> String {
        try Shell.check(["ip", "netns", "exec", name] + argv)
    }

    /// `ip -n NAME ...`
    @discardableResult
    public func ip(_ args: String) throws -> String {
        try Shell.check(["ip", "-n", name] + args.split(separator: " ").map(String.init))
    }

    /// `tc -n NAME ...`
    @discardableResult
    public func tc(_ args: String) throws -> String {
        try Shell.check(["tc", "-n", name] + args.split(separator: " ").map(String.init))
    }

    /// Waits until something listens on TCP `port` in the namespace; false after `timeout`.
    @discardableResult
    public func waitForListener(port: Int, timeout: Double = 2) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let out = try? exec(["ss", "-ltnH", "sport = :\(port)"]), !out.isEmpty { return true }
            usleep(20_000)
        }
        return false
    }

    /// Kills what runs inside (it is all ours) and removes the namespace.
    public func delete() { Netns.delete(named: name) }

    /// Kills what runs in the named namespace and removes it.
    public static func delete(named name: String) {
        if let pids = try? Shell.run(["ip", "netns", "pids", name]).stdout {
            for pid in pids.split(separator: "\n").compactMap({ Int32($0) }) { kill(pid, SIGKILL) }
        }
        _ = try? Shell.run(["ip", "netns", "delete", name])
    }

    /// Moves one end of a new veth pair into `peer`: `local` stays here, `remote` goes there.
    public func addVeth(_ local: String, peer: Netns, _ remote: String) throws {
        try ip("link add \(local) type veth peer name \(remote) netns \(peer.name)")
        try ip("link set \(local) up")
        try peer.ip("link set \(remote) up")
    }

    static let counter = Counter()

    /// What every namespace this project makes starts with: only those are ever cleaned.
    public static let projectPrefix = "tdm"

    /// Deletes this project's `tdm...-PID-N` namespaces whose PID no longer runs, killing
    /// what is left in them. Another program's namespaces, whatever their names, are not
    /// touched.
    public static func cleanStale() -> [String] {
        guard let out = try? Shell.run(["ip", "netns", "list"]).stdout else { return [] }
        var removed: [String] = []
        for line in out.split(separator: "\n") {
            let name = String(line.split(separator: " ").first ?? "")
            guard name.hasPrefix(projectPrefix) else { continue }
            let parts = name.split(separator: "-")
            guard parts.count >= 3, Int(parts[parts.count - 1]) != nil, let pid = Int32(parts[parts.count - 2]), pid != getpid() else { continue }
            if kill(pid, 0) == 0 || errno == EPERM { continue }
            delete(named: name)
            removed.append(name)
        }
        return removed
    }
    static let staleCleaned: [String] = cleanStale()
    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var value = 0
        func next() -> Int { lock.lock(); defer { lock.unlock() }; value += 1; return value }
    }
}
