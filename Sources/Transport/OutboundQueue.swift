/// Frames waiting to be written to one peer: at most `maxBytes`, the oldest dropped first
/// (a peer that does not read gets the newest state, not a backlog). Shared by the agent's
/// ``FrameChannel`` and the host's ``ChannelHub``.
struct OutboundQueue: Sendable {
    let maxBytes: Int
    private var frames: [[UInt8]] = []
    private var head = 0
    private(set) var bytes = 0
    /// Frames dropped over the channel's life: the queue full, or nobody to write to.
    private(set) var dropped = 0

    init(maxBytes: Int) { self.maxBytes = maxBytes }

    /// The rest of the frame being written: what a write took only part of.
    private var partial: ArraySlice<UInt8> = []

    /// No frame waits, and none is half written.
    var isEmpty: Bool { head == frames.count && partial.isEmpty }
    var count: Int { frames.count - head }

    /// A new connection: a bare newline goes first, ending whatever cut frame the peer may
    /// hold from an earlier one; then what waits.
    mutating func connectionOpened() { partial = [UInt8(ascii: "\n")][...] }

    /// Writes what waits, as far as `fd` takes it without blocking (the rest, from where the
    /// last write stopped, next time). Throws the write's error (the peer gone).
    mutating func write(to fd: Int32) throws(SystemError) {
        while true {
            if partial.isEmpty {
                guard let f = popFirst() else { return }
                partial = f[...]
            }
            let n = try POSIX.writeSome(fd, partial)
            if n == 0 { return }   // full: the rest goes later
            partial = partial.dropFirst(n)
        }
    }

    mutating func append(_ frame: [UInt8]) {
        frames.append(frame)
        bytes += frame.count
        while bytes > maxBytes, let first = popFirst() { _ = first; dropped += 1 }
    }

    mutating func popFirst() -> [UInt8]? {
        guard head < frames.count else { return nil }
        let f = frames[head]
        head += 1
        bytes -= f.count
        if head == frames.count || head > 64 && head * 2 > frames.count {
            frames.removeFirst(head)
            head = 0
        }
        return f
    }

    /// Drops everything queued, the half-written frame too (nobody to write to), counting it.
    mutating func dropAll() {
        dropped += count
        frames.removeAll()
        head = 0
        bytes = 0
        partial = []
    }

    /// Counts a frame that was never queued (nobody connected).
    mutating func refused() { dropped += 1 }
}

/// Reconnection delays: `min`, doubling up to `max`, back to `min` once a peer is heard.
public struct Backoff: Sendable {
    let min: Double
    let max: Double
    private(set) var current: Double

    public init(min: Double, max: Double) { self.min = min; self.max = max; current = min }

    /// The delay to wait now; the next one is twice as long (up to `max`).
    public mutating func next() -> Double {
        let d = current
        current = Swift.min(current * 2, max)
        return d
    }

    public mutating func reset() { current = min }
}
