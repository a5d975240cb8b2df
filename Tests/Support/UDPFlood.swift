import Foundation
import Netlink
import TandemLabSupport
#if canImport(Glibc)
import Glibc
#endif

/// Unresponsive UDP from inside a namespace at a paced rate, with no control connection
/// (iperf3 needs one, and a test that drops all of a VM's traffic would drop it too). The
/// socket is opened in the namespace; a thread of this process sends until ``stop()``.
public final class UDPFlood: @unchecked Sendable {
    let fd: Int32
    let lock = NSLock()
    var running = true
    var thread: Thread?
    public private(set) var sent: UInt64 = 0

    /// Starts sending 1,400-byte datagrams to `host:port` at `bitsPerSecond`.
    public init(from ns: Netns, to host: String, port: UInt16, bitsPerSecond: Double) throws {
        fd = try NetworkNamespace.run(in: ns.name) { socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        guard fd >= 0 else { throw Shell.Failure("udp flood", "socket: \(String(cString: strerror(errno)))") }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else { close(fd); throw Shell.Failure("udp flood", "not an IPv4 address: \(host)") }
        let to = addr
        let fd = self.fd
        let t = Thread { [self] in
            let payload = [UInt8](repeating: 0x5a, count: 1400)
            let t0 = Date()
            var count: UInt64 = 0
            while lock.withLock({ running }) {
                let due = UInt64(Date().timeIntervalSince(t0) * bitsPerSecond / (1400 * 8))
                while count < due {
                    var a = to
                    _ = withUnsafePointer(to: &a) { p in
                        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, payload, payload.count, Int32(MSG_DONTWAIT), $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                    }
                    count += 1
                }
                lock.withLock { sent = count }
                usleep(1000)
            }
        }
        thread = t
        t.start()
    }

    public func stop() {
        lock.withLock { running = false }
        while thread?.isFinished == false { usleep(1000) }
        close(fd)
    }
}

extension Netns {
    /// The bytes this namespace's IP layer took in (IpExt InOctets in /proc/net/netstat):
    /// what got past an interface's ingress, through a limit or not.
    public func inOctets() throws -> UInt64 {
        let lines = try exec(["cat", "/proc/net/netstat"]).split(separator: "\n").filter { $0.hasPrefix("IpExt:") }
        guard lines.count == 2 else { throw Shell.Failure("netstat", "no IpExt lines in \(name)") }
        let names = lines[0].split(separator: " "), values = lines[1].split(separator: " ")
        guard let i = names.firstIndex(of: "InOctets"), i < values.count, let v = UInt64(values[i]) else { throw Shell.Failure("netstat", "no InOctets in \(name)") }
        return v
    }

    /// Resolves `address` to `interface`'s MAC in `peer` for good (`nud permanent`): a test
    /// that drops all of a VM's traffic would drop its ARP too.
    public func pinNeighbour(_ address: String, of interface: String, in peer: Netns, dev: String) throws {
        let words = try ip("link show \(interface)").split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard let i = words.firstIndex(of: "link/ether"), i + 1 < words.count else { throw Shell.Failure("ip", "no MAC for \(interface)") }
        try peer.ip("neigh replace \(address) lladdr \(words[i + 1]) dev \(dev) nud permanent")
    }
}
