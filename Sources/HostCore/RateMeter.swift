import TandemProtocol

/// Turns a byte counter into a rate, safely.
///
/// Counters wrap (the 82599's 36-bit octet counters, 32-bit ones elsewhere) and reset (a
/// driver reload zeroes them). A decrease that a 32- or 36-bit wrap explains at a plausible
/// rate is a wrap; any other decrease is a reset: no rate for that interval, and the
/// caller is told, so it can re-apply limits the reset also cleared. A rate above
/// `ceiling` (a glitch) is clamped, never reported huge.
public struct RateMeter: Sendable {
    public enum Reading: Equatable, Sendable {
        case first
        case rate(BitRate)
        case wrapped(BitRate)
        case reset
    }

    public let ceiling: BitRate
    var last: (bytes: UInt64, time: Double)?

    public init(ceiling: BitRate) { self.ceiling = ceiling }

    public mutating func sample(bytes: UInt64, at time: Double) -> Reading {
        defer { last = (bytes, time) }
        guard let (b0, t0) = last else { return .first }
        let dt = time - t0
        guard dt > 0 else { return .rate(.zero) }
        func rate(_ delta: UInt64) -> BitRate { min(BitRate(clamping: Double(delta) * 8 / dt), ceiling) }
        if bytes >= b0 { return .rate(rate(bytes - b0)) }
        for width in [UInt64(1) << 32, UInt64(1) << 36] where b0 < width && bytes < width {
            let delta = bytes &+ (width - b0)
            if Double(delta) * 8 / dt <= Double(ceiling.bitsPerSecond) * 1.5 { return .wrapped(rate(delta)) }
        }
        return .reset
    }
}
