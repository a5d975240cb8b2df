import NIOCore
import NIOPosix

/// The one event loop a daemon's sockets are served on (its admin or reservation socket,
/// its metrics listener): one thread, whatever the number of clients.
public enum TransportLoop {
    public static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
}
