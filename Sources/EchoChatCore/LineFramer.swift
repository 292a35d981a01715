/// Splits a byte stream into lines (docs/PROTOCOL.md §3, §3.1 step 1).
///
/// A line ends with LF; a CR right before the LF is removed. A line may arrive
/// in any number of pieces and one read may hold many lines. As soon as
/// `maxLine` + 1 counted bytes of one line have arrived, the framer reports
/// `.tooLong` once and discards everything up to and including the next LF;
/// so it never holds more than `maxLine` + 1 bytes, whatever a client sends.
public struct LineFramer: Sendable {
    public enum Event {
        /// A complete line without its LF (and without a CR right before it).
        /// The pointer is valid only during the callback.
        case line(UnsafeRawBufferPointer)
        /// The line being received passed `maxLine`; its rest will be discarded.
        case tooLong
    }

    public let maxLine: Int
    private var partial: [UInt8] = []
    private var discarding = false

    public init(maxLine: Int) {
        precondition(maxLine > 0, "maxLine must be positive")
        self.maxLine = maxLine
    }

    /// True while part of a line has arrived and its LF has not (the state a
    /// line timeout measures). A line being discarded counts too.
    public var hasPartialLine: Bool { !partial.isEmpty || discarding }

    /// Bytes of the unfinished line held now (at most `maxLine` + 1).
    public var bufferedByteCount: Int { partial.count }

    /// Feeds received bytes. `handle` runs once per event, in order; returning
    /// false stops framing (the connection is closing, or the caller's turn is
    /// over) right after that event. Returns how many bytes were consumed: all
    /// of them, unless `handle` stopped it, in which case the rest is the
    /// caller's to feed again later (or drop).
    @discardableResult
    public mutating func feed(_ bytes: UnsafeRawBufferPointer, _ handle: (Event) -> Bool) -> Int {
        var index = 0
        let end = bytes.count
        while index < end {
            let newline = Self.firstNewline(in: bytes, from: index)
            if discarding {
                guard let newline else { return end }
                discarding = false
                index = newline + 1
                continue
            }
            guard let newline else {
                keepPartial(UnsafeRawBufferPointer(rebasing: bytes[index..<end]), handle)
                return end
            }
            let piece = UnsafeRawBufferPointer(rebasing: bytes[index..<newline])
            index = newline + 1
            let keepGoing: Bool
            if partial.isEmpty {
                keepGoing = emit(piece, handle)
            } else {
                partial.append(contentsOf: piece.assumingMemoryBound(to: UInt8.self))
                keepGoing = partial.withUnsafeBytes { emit($0, handle) }
                partial.removeAll(keepingCapacity: partial.capacity <= 4096)
            }
            if !keepGoing { return index }
        }
        return end
    }

    /// End of input: an unterminated last line counts as a line (§3.3 half-close).
    public mutating func finish(_ handle: (Event) -> Bool) {
        defer {
            partial = []
            discarding = false
        }
        guard !discarding, !partial.isEmpty else { return }
        // No LF came, so a trailing CR is not "right before the LF": it counts.
        if partial.count > maxLine {
            _ = handle(.tooLong)
            return
        }
        _ = partial.withUnsafeBytes { handle(.line($0)) }
    }

    /// A complete line: strip one CR before the LF, then check the length
    /// (reachable when the whole line arrived in one piece).
    private func emit(_ line: UnsafeRawBufferPointer, _ handle: (Event) -> Bool) -> Bool {
        var length = line.count
        if length > 0 && line[length - 1] == 0x0D { length -= 1 }
        if length > maxLine { return handle(.tooLong) }
        return handle(.line(UnsafeRawBufferPointer(rebasing: line[0..<length])))
    }

    /// Keeps the unterminated tail. Past `maxLine` + 1 bytes the line is too
    /// long, except that byte `maxLine` + 1 may be a CR whose LF is on its way.
    private mutating func keepPartial(_ tail: UnsafeRawBufferPointer, _ handle: (Event) -> Bool) {
        let room = maxLine + 2 - partial.count
        let kept = UnsafeRawBufferPointer(rebasing: tail[0..<min(room, tail.count)])
        partial.append(contentsOf: kept.assumingMemoryBound(to: UInt8.self))
        let counted = partial.count - (partial.last == 0x0D ? 1 : 0)
        if partial.count > maxLine + 1 || counted > maxLine {
            partial.removeAll(keepingCapacity: false)
            discarding = true
            _ = handle(.tooLong)
        }
    }

    @inline(__always)
    private static func firstNewline(in bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
        var index = start
        let end = bytes.count
        while index < end {
            if bytes[index] == 0x0A { return index }
            index += 1
        }
        return nil
    }
}
