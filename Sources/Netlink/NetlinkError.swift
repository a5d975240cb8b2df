import CNetlink
#if canImport(Glibc)
import Glibc
#endif

/// A netlink request the kernel (or libnl) refused.
///
/// It names the request (`RTM_NEWTCLASS`), the object (`dev veth0 class 1:10`), the errno the
/// kernel returned and, when the kernel said more, its extended-ack message
/// ("HTB: quantum of class 10010 is big. Consider r2q change.").
public struct NetlinkError: Error, Sendable, CustomStringConvertible {
    public var operation: String
    public var object: String
    /// The kernel's errno, positive; 0 when the failure was libnl's own.
    public var errno: Int32
    /// The kernel's extended-ack message, if any.
    public var kernelMessage: String?
    /// libnl's description, when the failure did not come from the kernel.
    public var detail: String?

    public init(operation: String, object: String, errno: Int32, kernelMessage: String? = nil, detail: String? = nil) {
        self.operation = operation; self.object = object; self.errno = errno
        self.kernelMessage = kernelMessage; self.detail = detail
    }

    /// Checked by the Swift layer before libnl is called (libnl aborts on some misuse).
    static func invalid(_ operation: String, _ object: String, _ why: String) -> NetlinkError {
        NetlinkError(operation: operation, object: object, errno: EINVAL, detail: why)
    }

    public var description: String {
        var s = "\(operation) \(object): "
        if errno != 0 {
            s += String(cString: strerror(errno))
            s += " (errno \(errno))"
        }
        if let detail { s += errno != 0 ? ": \(detail)" : detail }
        if let kernelMessage, !kernelMessage.isEmpty { s += "; kernel: \(kernelMessage)" }
        return s
    }
}
