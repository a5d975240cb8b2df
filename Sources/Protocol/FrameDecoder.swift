#if canImport(Glibc)
import Glibc
#endif

/// Splits a byte stream into frames: one frame per line, each at most ``Limits/maxFrameBytes``.
///
/// Why lines: the frame boundary is a byte (`\n`) that JSON never emits inside a value, so a
/// reader that meets garbage, a frame cut by a peer that restarted, or stale bytes from an
/// earlier connection loses at most the line it is in and is back in step at the next
/// newline, without length fields that a single corrupt byte would derail. Writers start every
/// connection with a bare newline, which ends whatever cut frame the peer may hold.
///
/// The decoder is a pure value: feed it bytes in any split (one at a time, all at once) and
/// take frames out; the same value serves the daemons and the tests.
public struct FrameDecoder: Sendable {
    public enum Event: Equatable, Sendable {
        /// A complete line without its newline; never empty.
        case frame([UInt8])
        /// A line longer than the limit was dropped; `bytes` is how many were discarded.
        case oversize(bytes: Int)
    }

    public let maxFrameBytes: Int
    /// The current, unfinished line.
    private var line: [UInt8] = []
    /// Bytes thrown away so far in an oversize line being skipped, or nil when not skipping.
    private var skipping: Int? = nil
    private var pending: [Event] = []
    private var pendingIndex = 0

    public init(maxFrameBytes: Int = Limits.maxFrameBytes) { self.maxFrameBytes = maxFrameBytes }

    /// Bytes held, waiting for their newline. Never more than `maxFrameBytes`.
    public var bufferedBytes: Int { line.count }

    /// Whether complete events wait to be taken with ``next()``.
    public var hasPending: Bool { pendingIndex < pending.count }

    public mutating func feed<S: Sequence>(_ bytes: S) where S.Element == UInt8 {
        let done: Void? = bytes.withContiguousStorageIfAvailable { feed(buffer: $0) }
        if done == nil { Array(bytes).withUnsafeBufferPointer { feed(buffer: $0) } }
    }

    /// A line at a time: up to the next newline (found with memchr) the bytes are taken in
    /// one piece (or counted, when the line is already too long), never byte by byte; a line
    /// that lies whole in `buffer` becomes its frame in one copy.
    public mutating func feed(buffer: UnsafeBufferPointer<UInt8>) {
        guard let base = buffer.baseAddress else { return }
        var i = 0
        let n = buffer.count
        while i < n {
            let found = memchr(base + i, Int32(UInt8(ascii: "\n")), n - i)
            let newline = found.map { UnsafeRawPointer($0) - UnsafeRawPointer(base) }
            let end = newline ?? n
            let chunk = end - i
            if let skipped = skipping {
                skipping = skipped + chunk
            } else if line.count + chunk >= maxFrameBytes {
                // The line cannot end within the limit (its newline would be past maxFrameBytes).
                skipping = line.count + chunk
                line.removeAll(keepingCapacity: false)
            } else if newline != nil && line.isEmpty {
                // The whole line is here: straight into its frame.
                var stop = end
                if stop > i && buffer[stop - 1] == UInt8(ascii: "\r") { stop -= 1 }
                if stop > i { pending.append(.frame(Array(UnsafeBufferPointer(rebasing: buffer[i..<stop])))) }
                i = end + 1
                continue
            } else {
                line.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[i..<end]))
            }
            guard let newline else { return }
            if let skipped = skipping {
                pending.append(.oversize(bytes: skipped + 1))
                skipping = nil
            } else {
                if line.last == UInt8(ascii: "\r") { line.removeLast() }
                if !line.isEmpty { pending.append(.frame(line)) }
                line.removeAll(keepingCapacity: true)
            }
            i = newline + 1
        }
    }

    /// The next complete event, or nil when more bytes are needed.
    public mutating func next() -> Event? {
        guard pendingIndex < pending.count else {
            if !pending.isEmpty { pending.removeAll(keepingCapacity: true); pendingIndex = 0 }
            return nil
        }
        let e = pending[pendingIndex]
        pendingIndex += 1
        if pendingIndex == pending.count { pending.removeAll(keepingCapacity: true); pendingIndex = 0 }
        return e
    }

    /// Drops everything buffered (for a new connection).
    public mutating func reset() {
        line.removeAll(); skipping = nil; pending.removeAll(); pendingIndex = 0
    }
}
