import TandemRuntime

/// A VM's channel as the controller uses it: events in, frames out. In production a
/// ``FrameChannel`` to the unix socket QEMU made for the VM's virtio-serial port; in tests
/// an in-memory one.
public protocol GuestChannel: Sendable {
    var events: AsyncStream<FrameChannel.Event> { get }
    func start()
    func send(_ frame: [UInt8])
    /// Drops the connection and stays away this long (a misbehaving guest).
    func disconnect(for seconds: Double)
    func stop()
    /// Hands events to `handler` rather than `events` (before `start`).
    func deliver(to handler: @escaping @Sendable (FrameChannel.Event) -> Void)
}

extension GuestChannel {
    /// Forwards `events` to the handler (a channel with no more direct way).
    public func deliver(to handler: @escaping @Sendable (FrameChannel.Event) -> Void) {
        let events = self.events
        Task { for await e in events { handler(e) } }
    }
}

extension FrameChannel: GuestChannel {}
