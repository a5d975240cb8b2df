import CKernel
#if canImport(Glibc)
import Glibc
#endif

/// Network namespaces, for callers that must open sockets in another one.
///
/// A netlink socket belongs to the namespace of the thread that created it, and stays
/// there whichever thread uses it later. Switching a thread of a multithreaded process
/// between namespaces is unsafe (Swift's task threads are shared), so ``run(in:_:)`` makes a
/// fresh thread, moves it, runs the body (which should only create sockets), and ends the
/// thread. Daemons started with `ip netns exec` are already in their namespace and need
/// none of this.
public enum NetworkNamespace {
    /// Where `ip netns add NAME` keeps the namespace's handle.
    public static func path(of name: String) -> String { "/run/netns/\(name)" }

    public static func run<T>(in name: String, _ body: () throws -> T) throws -> T {
        let box = NamespaceThreadBox()
        box.path = path(of: name)
        var result: Result<T, any Error>?
        try withoutActuallyEscaping(body) { body in
            box.work = { result = Result { try body() } }
            var thread = pthread_t()
            let ctx = Unmanaged.passUnretained(box).toOpaque()
            let rc = pthread_create(&thread, nil, { raw in
                let box = Unmanaged<NamespaceThreadBox>.fromOpaque(raw!).takeUnretainedValue()
                let r = box.path.withCString { tandem_enter_netns($0) }
                if r < 0 { box.enterError = -r } else { box.work?() }
                return nil
            }, ctx)
            guard rc == 0 else { throw NetlinkError(operation: "pthread_create", object: "netns \(name)", errno: rc) }
            pthread_join(thread, nil)
            box.work = nil
        }
        if box.enterError != 0 {
            throw NetlinkError(operation: "setns", object: "netns \(name) (\(box.path))", errno: box.enterError)
        }
        return try result!.get()
    }
}

/// Hands the body to the namespace thread; used only while the caller waits in pthread_join.
private final class NamespaceThreadBox: @unchecked Sendable {
    var path = ""
    var work: (() -> Void)?
    var enterError: Int32 = 0
    init() {}
}
