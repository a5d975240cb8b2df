/// The host's rule for which guest frames count.
///
/// Nothing counts before a hello: what QEMU delivers to a new host connection may be frames
/// an agent wrote to an earlier one. A hello opens a session; after it only frames of that
/// session count. A hello with a new session (the agent restarted) replaces the old one.
public struct HandshakeFilter: Sendable {
    public private(set) var session: SessionID?
    public init() {}

    public mutating func accept(_ message: GuestMessage, session: SessionID?) -> Bool {
        if case .hello = message, let session {
            self.session = session
            return true
        }
        return session != nil && session == self.session
    }

    public mutating func reset() { session = nil }
}
