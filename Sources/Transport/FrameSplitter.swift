import NIOCore
import TandemProtocol

/// The protocol's ``FrameDecoder`` as a swift-nio decoder: each frame (or line) and each
/// oversize line goes on as one `FrameDecoder.Event`. The agent's channel uses it with the
/// protocol's frame limit, the line server with its line limit.
struct FrameSplitter: ByteToMessageDecoder {
    typealias InboundOut = FrameDecoder.Event
    var frames: FrameDecoder

    /// `maxFrameBytes` counts the newline: a line of at most `maxFrameBytes - 1` bytes passes.
    init(maxFrameBytes: Int = Limits.maxFrameBytes) { frames = FrameDecoder(maxFrameBytes: maxFrameBytes) }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard buffer.readableBytes > 0 else { return .needMoreData }
        buffer.withUnsafeReadableBytes { frames.feed($0.bindMemory(to: UInt8.self)) }
        buffer.moveReaderIndex(to: buffer.writerIndex)
        while let e = frames.next() { context.fireChannelRead(wrapInboundOut(e)) }
        return .needMoreData
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        try decode(context: context, buffer: &buffer)
    }
}
