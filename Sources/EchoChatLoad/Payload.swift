/// The bytes of echo messages, computed once and shared read-only by every
/// worker, so sending and checking a message allocates nothing.
///
/// Message `n` of connection `c` is B bytes: B-1 letters and digits, then LF.
/// Its body is template `t = (n + 7c) mod 31`, whose byte `i` is
/// `alphabet[(i + 3t) mod 62]`. Since 3 and 62 are coprime, two different
/// templates differ in *every* position, so a dropped, duplicated, swapped or
/// shifted message fails the comparison at its first byte, and a flipped byte
/// fails where it is.
///
/// The templates sit one after another in one buffer, followed by the first
/// `extra` of them again, so any `extra + 1` consecutive messages of a
/// connection are contiguous in memory: a whole pipeline goes out in one send(2).
public final class EchoPattern: @unchecked Sendable {
    // @unchecked Sendable: the buffer is written once in init and only read afterwards.
    public static let period = 31
    public static let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".utf8)

    public let size: Int
    /// Templates repeated after the first `period` (contiguity for pipelining).
    public let extra: Int
    public let bytes: UnsafeMutableRawBufferPointer

    /// `size` >= 1 bytes per message; up to `contiguous` messages are needed
    /// in one piece (the pipeline depth). The repeat is cut short so the
    /// buffer stays within 64 MiB; sending then takes more than one call.
    public init(size: Int, contiguous: Int) {
        self.size = size
        var extra = max(0, contiguous - 1)
        while extra > 0 && (Self.period + extra) * size > 64 << 20 { extra /= 2 }
        self.extra = extra
        let count = (Self.period + extra) * size
        bytes = .allocate(byteCount: count, alignment: 64)
        for slot in 0..<(Self.period + extra) {
            let template = slot % Self.period
            for index in 0..<size {
                bytes[slot * size + index] = Self.byte(template: template, index: index, size: size)
            }
        }
    }

    deinit { bytes.deallocate() }

    @inline(__always)
    public static func template(connection: Int, message: Int) -> Int {
        (message % period + (connection % period) * 7) % period
    }

    public static func byte(template: Int, index: Int, size: Int) -> UInt8 {
        index == size - 1 ? 0x0A : alphabet[(index + 3 * template) % alphabet.count]
    }

    /// Byte `index` of message `message` of connection `connection`.
    public static func byte(connection: Int, message: Int, index: Int, size: Int) -> UInt8 {
        byte(template: template(connection: connection, message: message), index: index, size: size)
    }

    /// Where message `message` of `connection` starts in `bytes`.
    @inline(__always)
    public func start(connection: Int, message: Int) -> UnsafeRawPointer {
        UnsafeRawPointer(bytes.baseAddress!) + Self.template(connection: connection, message: message) * size
    }

    /// How many messages, starting with `message`, lie contiguously from `start(...)`.
    @inline(__always)
    public func contiguousMessages(connection: Int, message: Int) -> Int {
        Self.period + extra - Self.template(connection: connection, message: message)
    }

    /// One whole message, for tests and tools.
    public func message(connection: Int, message: Int) -> [UInt8] {
        Array(UnsafeRawBufferPointer(start: start(connection: connection, message: message), count: size))
    }
}

/// A chat load line: `m <sender> <seq> <send-ns> <padding>\n`, `size` bytes in
/// all. The padding is a function of (sender, seq, position), so a receiver
/// checks every byte of what the server relayed, not only the header.
public enum ChatLine {
    /// The shortest line `encode` can always produce (20-digit times, big ids).
    public static let minimumSize = 48

    /// Writes the line into `buffer` (at least `size` bytes); returns `size`.
    @discardableResult
    public static func encode(
        sender: Int, sequence: Int, sendTime: Int64, size: Int, into buffer: UnsafeMutableRawPointer
    ) -> Int {
        var position = 0
        @inline(__always) func put(_ byte: UInt8) {
            buffer.storeBytes(of: byte, toByteOffset: position, as: UInt8.self)
            position += 1
        }
        @inline(__always) func putNumber(_ value: UInt64) {
            var divisor: UInt64 = 1
            while divisor <= value / 10 { divisor *= 10 }
            while divisor > 0 {
                put(UInt8(truncatingIfNeeded: 0x30 + (value / divisor) % 10))
                divisor /= 10
            }
        }
        put(0x6D)  // m
        put(0x20)
        putNumber(UInt64(sender))
        put(0x20)
        putNumber(UInt64(sequence))
        put(0x20)
        putNumber(UInt64(max(0, sendTime)))
        put(0x20)
        let seed = paddingSeed(sender: sender, sequence: sequence, sendTime: sendTime)
        while position < size - 1 { put(padding(seed: seed, index: position)) }
        put(0x0A)
        return position
    }

    public static func encode(sender: Int, sequence: Int, sendTime: Int64, size: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: max(size, minimumSize))
        let count = bytes.withUnsafeMutableBytes {
            encode(sender: sender, sequence: sequence, sendTime: sendTime, size: size, into: $0.baseAddress!)
        }
        return Array(bytes[..<count])
    }

    /// The padding depends on every header field, with multipliers coprime
    /// to the alphabet's 62 letters: a digit changed in the header (a corrupt
    /// sequence number or time) no longer matches the padding.
    @inline(__always)
    static func paddingSeed(sender: Int, sequence: Int, sendTime: Int64) -> UInt64 {
        UInt64(truncatingIfNeeded: sender) &* 37 &+ UInt64(truncatingIfNeeded: sequence) &* 17
            &+ UInt64(truncatingIfNeeded: max(0, sendTime))
    }

    @inline(__always)
    static func padding(seed: UInt64, index: Int) -> UInt8 {
        EchoPattern.alphabet[Int((seed &+ UInt64(index) &* 7) % UInt64(EchoPattern.alphabet.count))]
    }

    /// What a received message carries.
    public struct Parsed: Equatable, Sendable {
        public var sender: Int
        public var sequence: Int
        public var sendTime: Int64
    }

    /// Parses and checks one message text (the line without its LF and without
    /// the server's `<nick> ` prefix). nil when anything differs from what
    /// `encode` would have written for its header, including the length.
    public static func parse(_ text: UnsafeRawBufferPointer, size: Int) -> Parsed? {
        guard text.count == size - 1, text.count >= 8, text[0] == 0x6D, text[1] == 0x20 else { return nil }
        var position = 2
        func number() -> UInt64? {
            var value: UInt64 = 0
            let start = position
            while position < text.count, text[position] >= 0x30, text[position] <= 0x39, position - start < 19 {
                value = value * 10 + UInt64(text[position] - 0x30)
                position += 1
            }
            guard position > start, position < text.count, text[position] == 0x20 else { return nil }
            position += 1
            return value
        }
        guard let sender = number(), let sequence = number(), let time = number() else { return nil }
        guard sender <= UInt64(Int32.max), sequence <= UInt64(Int32.max), time <= UInt64(Int64.max) else { return nil }
        let parsed = Parsed(sender: Int(sender), sequence: Int(sequence), sendTime: Int64(time))
        let seed = paddingSeed(sender: parsed.sender, sequence: parsed.sequence, sendTime: parsed.sendTime)
        while position < text.count {
            guard text[position] == padding(seed: seed, index: position) else { return nil }
            position += 1
        }
        return parsed
    }

    public static func parse(_ text: [UInt8], size: Int) -> Parsed? {
        text.withUnsafeBytes { parse($0, size: size) }
    }
}
