import Foundation
import TandemTransport
#if canImport(Glibc)
import Glibc
#endif

/// Where the agent finds its host.
public enum ChannelSpec: Sendable, Equatable, CustomStringConvertible {
    /// A character device: the virtio-serial port, or a pseudo-terminal standing in for it.
    case device(String)
    /// `unix:PATH`: a unix socket to connect to.
    case unix(String)

    public static let portName = "org.tandem.agent.0"

    /// `--channel` as given, or the default port: `/dev/virtio-ports/org.tandem.agent.0`, or
    /// the `/dev/vportNpM` whose `/sys/class/virtio-ports/*/name` says org.tandem.agent.0
    /// where udev has not made the link.
    public static func resolve(_ option: String?, sysfs: String = "/sys/class/virtio-ports", dev: String = "/dev") throws -> ChannelSpec {
        if let option {
            if option.hasPrefix("unix:") {
                let path = String(option.dropFirst(5))
                guard !path.isEmpty else { throw ChannelError.emptyUnixPath }
                return .unix(path)
            }
            return .device(option)
        }
        let link = "\(dev)/virtio-ports/\(portName)"
        if FileManager.default.fileExists(atPath: link) { return .device(link) }
        if let ports = try? FileManager.default.contentsOfDirectory(atPath: sysfs) {
            for port in ports.sorted() {
                let name = (try? String(contentsOfFile: "\(sysfs)/\(port)/name", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
                if name == portName { return .device("\(dev)/\(port)") }
            }
        }
        throw ChannelError.noPort(link: link, sysfs: sysfs)
    }

    public var description: String {
        switch self { case .device(let p): return p; case .unix(let p): return "unix:\(p)" }
    }

    /// Opens the endpoint once; the agent does this at start so that errors (another agent
    /// holds the port: EBUSY) are reported before it runs.
    public func open() throws -> Int32 {
        switch self {
        case .unix(let path):
            return try UnixSocket.connect(path)
        case .device(let path):
            let fd = Glibc.open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
            if fd < 0 {
                let e = errno
                if e == EBUSY { throw ChannelError.busy(path) }
                throw SystemError("open", path, errno: e)
            }
            if isatty(fd) != 0 { PseudoTerminal.makeRaw(fd) }
            return fd
        }
    }

    public var endpoint: FrameChannel.Endpoint {
        switch self { case .device: return .absentOnEnd; case .unix: return .closedOnEnd }
    }
}

/// Why the agent's channel cannot be used, naming the path or port.
public enum ChannelError: Error, CustomStringConvertible, Sendable, Equatable {
    /// `--channel unix:` with nothing after it.
    case emptyUnixPath
    /// No `--channel`, and no port named org.tandem.agent.0 at the link or in sysfs.
    case noPort(link: String, sysfs: String)
    /// The port is open elsewhere (EBUSY): a virtio port takes one opener.
    case busy(String)

    public var description: String {
        switch self {
        case .emptyUnixPath: "--channel unix: needs a path, e.g. unix:/run/tandem/vm1.sock"
        case .noPort(let link, let sysfs):
            "no virtio-serial port named \(ChannelSpec.portName): not at \(link), and none of \(sysfs)/*/name says so. Add the channel to the VM (see deploy/README.md) or pass --channel PATH"
        case .busy(let path): "\(path) is busy: another tandem-agent (or another program) has the port open"
        }
    }
}
