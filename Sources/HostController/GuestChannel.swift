import HostCore
import TandemTransport

/// A VM's channel as the controller uses it: frames out, and a way to cut a guest off. What
/// comes in reaches the controller through ``Controller/receive(_:_:now:)``. In production a
/// ``ChannelHub/Channel`` to the unix socket QEMU made for the VM's virtio-serial port; in
/// tests an in-memory one.
public protocol GuestChannel: Sendable {
    func send(_ frame: [UInt8])
    /// Drops the connection and stays away this long (a misbehaving guest).
    func disconnect(for seconds: Double)
}

extension ChannelHub.Channel: GuestChannel {}

/// What the controller needs to take a VM on or let it go while running: its backend and
/// channel made from its configuration, and its channel closed when it leaves. The daemon's
/// implementation uses the netlink socket and the channel hub; tests use fakes.
public protocol VMAttachments: Sendable {
    func backend(for vm: HostConfig.VMConfig) -> any HardLimitBackend
    func channel(for vm: HostConfig.VMConfig) -> (any GuestChannel)?
    func detach(_ vm: String)
}
