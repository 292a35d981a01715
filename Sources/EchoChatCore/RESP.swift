/// Redis's wire protocol, version 2 (RESP2): the values, an encoder for
/// commands and an incremental decoder for replies. Pure like the rest of
/// the core, so the cluster's Redis client is tested in memory: fed whole,
/// byte by byte and in random pieces.
public indirect enum RESPValue: Equatable, Sendable, CustomStringConvertible {
    /// `+OK`
    case simple(String)
    /// `-ERR …`: the command failed; the connection is still good.
    case error(String)
    /// `:42`
    case integer(Int64)
    /// `$5 hello`, or nil (`$-1`).
    case bulk([UInt8]?)
    /// `*2 …`, or nil (`*-1`).
    case array([RESPValue]?)

    /// A bulk string from text.
    public static func bulk(_ text: String) -> RESPValue { .bulk(Array(text.utf8)) }

    /// The text of a simple or bulk string (bulk decoded as UTF-8, invalid bytes replaced).
    public var text: String? {
        switch self {
        case .simple(let text): text
        case .bulk(let bytes?): String(decoding: bytes, as: UTF8.self)
        default: nil
        }
    }

    public var bytes: [UInt8]? {
        switch self {
        case .simple(let text): Array(text.utf8)
        case .bulk(let bytes): bytes
        default: nil
        }
    }

    public var integer: Int64? {
        if case .integer(let value) = self { return value }
        return nil
    }

    public var elements: [RESPValue]? {
        if case .array(let elements?) = self { return elements }
        return nil
    }

    public var isNil: Bool {
        switch self {
        case .bulk(nil), .array(nil): true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .simple(let text): "+" + text
        case .error(let text): "-" + text
        case .integer(let value): ":\(value)"
        case .bulk(nil), .array(nil): "(nil)"
        case .bulk(let bytes?): String(reflecting: String(decoding: bytes, as: UTF8.self))
        case .array(let elements?): "[" + elements.map(\.description).joined(separator: ", ") + "]"
        }
    }

    /// The value in RESP2 (what a server sends; tests and fakes use it).
    public var encoded: [UInt8] {
        var out: [UInt8] = []
        encode(into: &out)
        return out
    }

    public func encode(into out: inout [UInt8]) {
        switch self {
        case .simple(let text): RESP.appendLine(UInt8(ascii: "+"), text.utf8, to: &out)
        case .error(let text): RESP.appendLine(UInt8(ascii: "-"), text.utf8, to: &out)
        case .integer(let value): RESP.appendLine(UInt8(ascii: ":"), String(value).utf8, to: &out)
        case .bulk(nil): out += Array("$-1\r\n".utf8)
        case .array(nil): out += Array("*-1\r\n".utf8)
        case .bulk(let bytes?): RESP.appendBulk(bytes, to: &out)
        case .array(let elements?):
            RESP.appendLine(UInt8(ascii: "*"), String(elements.count).utf8, to: &out)
            for element in elements { element.encode(into: &out) }
        }
    }
}

public enum RESP {
    /// A command as Redis reads it: an array of bulk strings.
    public static func command(_ arguments: [String]) -> [UInt8] {
        var out: [UInt8] = []
        appendCommand(arguments.map { Array($0.utf8) }, to: &out)
        return out
    }

    public static func appendCommand(_ arguments: [[UInt8]], to out: inout [UInt8]) {
        appendLine(UInt8(ascii: "*"), String(arguments.count).utf8, to: &out)
        for argument in arguments { appendBulk(argument, to: &out) }
    }

    static func appendBulk(_ bytes: [UInt8], to out: inout [UInt8]) {
        appendLine(UInt8(ascii: "$"), String(bytes.count).utf8, to: &out)
        out += bytes
        out += [0x0D, 0x0A]
    }

    static func appendLine(_ type: UInt8, _ text: String.UTF8View, to out: inout [UInt8]) {
        out.append(type)
        // A simple string or error cannot hold a line break: it would end the line.
        out += text.map { $0 == 0x0D || $0 == 0x0A ? UInt8(ascii: " ") : $0 }
        out += [0x0D, 0x0A]
    }
}

/// What makes a reply stream unreadable. The client drops the connection
/// (and reconnects): after a framing error nothing that follows can be trusted.
public struct RESPError: Error, Equatable, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Turns a stream of bytes from Redis into values, however it is cut.
///
/// A resumable state machine: a line is collected until CR LF, a bulk string
/// until its announced length and CR LF, and arrays nest on a stack, so
/// every byte is looked at once whatever the pieces (no re-parsing from the
/// start when a big reply arrives in small reads). Limits keep a hostile or
/// broken server from making it hold unbounded memory.
public struct RESPDecoder: Sendable {
    public struct Limits: Sendable {
        /// Longest bulk string (Redis's own default for proto-max-bulk-len is 512 MiB).
        public var maxBulkBytes = 64 * 1024 * 1024
        /// Longest simple string, error or number line.
        public var maxLineBytes = 64 * 1024
        /// Most elements announced by one array.
        public var maxArrayCount = 1 << 20
        /// Deepest nesting of arrays.
        public var maxDepth = 16

        public init() {}
    }

    private enum Phase {
        /// Collecting a type byte and its line (`line`) up to CR LF; `sawCR`: the CR came.
        case line
        /// Collecting `remaining` more payload bytes of a bulk string into `bulk`.
        case bulk(remaining: Int)
        /// The bulk string is whole; its CR LF is due (`sawCR` once the CR came).
        case bulkEnd
    }

    public let limits: Limits
    private var phase = Phase.line
    private var line: [UInt8] = []
    private var sawCR = false
    private var bulk: [UInt8] = []
    /// Open arrays, outermost first: how many elements each still needs, and those it has.
    private var stack: [(remaining: Int, elements: [RESPValue])] = []

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Decodes `bytes`, appending each complete top-level value to `values`
    /// in order. A value cut short waits for the next call. Throws on bytes
    /// that cannot be RESP2; the decoder is then unusable (start a new one
    /// with a new connection).
    public mutating func decode(_ bytes: UnsafeRawBufferPointer, into values: inout [RESPValue]) throws(RESPError) {
        var index = 0
        let count = bytes.count
        while index < count {
            switch phase {
            case .line:
                let byte = bytes[index]
                index += 1
                if sawCR {
                    guard byte == 0x0A else { throw RESPError("a CR not followed by LF in a reply line") }
                    sawCR = false
                    try finishLine(into: &values)
                } else if byte == 0x0D {
                    sawCR = true
                } else {
                    guard line.count < limits.maxLineBytes else { throw RESPError("a reply line longer than \(limits.maxLineBytes) bytes") }
                    line.append(byte)
                }
            case .bulk(let remaining):
                let take = min(remaining, count - index)
                bulk.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[index..<index + take]))
                index += take
                phase = take == remaining ? .bulkEnd : .bulk(remaining: remaining - take)
            case .bulkEnd:
                let byte = bytes[index]
                index += 1
                if !sawCR {
                    guard byte == 0x0D else { throw RESPError("a bulk string longer than announced") }
                    sawCR = true
                } else {
                    guard byte == 0x0A else { throw RESPError("a bulk string not ended by CR LF") }
                    sawCR = false
                    phase = .line
                    let value = RESPValue.bulk(bulk)
                    bulk = []
                    complete(value, into: &values)
                }
            }
        }
    }

    public mutating func decode(_ bytes: [UInt8], into values: inout [RESPValue]) throws(RESPError) {
        var failure: RESPError?
        bytes.withUnsafeBytes { buffer in
            do throws(RESPError) { try decode(buffer, into: &values) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Nothing is half-received: the stream is between values.
    public var isIdle: Bool {
        if case .line = phase { return line.isEmpty && !sawCR && stack.isEmpty }
        return false
    }

    private mutating func finishLine(into values: inout [RESPValue]) throws(RESPError) {
        guard let type = line.first else { throw RESPError("an empty reply line") }
        let body = line.dropFirst()
        defer { line.removeAll(keepingCapacity: true) }
        switch type {
        case UInt8(ascii: "+"): complete(.simple(String(decoding: body, as: UTF8.self)), into: &values)
        case UInt8(ascii: "-"): complete(.error(String(decoding: body, as: UTF8.self)), into: &values)
        case UInt8(ascii: ":"):
            guard let value = Self.integer(body) else { throw RESPError("a bad integer reply") }
            complete(.integer(value), into: &values)
        case UInt8(ascii: "$"):
            guard let length = Self.integer(body), length >= -1 else { throw RESPError("a bad bulk string length") }
            if length == -1 { return complete(.bulk(nil), into: &values) }
            guard length <= limits.maxBulkBytes else {
                throw RESPError("a bulk string of \(length) bytes (more than \(limits.maxBulkBytes))")
            }
            bulk.reserveCapacity(Int(length))
            phase = length == 0 ? .bulkEnd : .bulk(remaining: Int(length))
        case UInt8(ascii: "*"):
            guard let length = Self.integer(body), length >= -1 else { throw RESPError("a bad array length") }
            if length == -1 { return complete(.array(nil), into: &values) }
            guard length <= limits.maxArrayCount else { throw RESPError("an array of \(length) elements (more than \(limits.maxArrayCount))") }
            if length == 0 { return complete(.array([]), into: &values) }
            guard stack.count < limits.maxDepth else { throw RESPError("arrays nested deeper than \(limits.maxDepth)") }
            // Reserve as the elements arrive: the announced count is not to be trusted.
            stack.append((remaining: Int(length), elements: []))
        default:
            throw RESPError("an unknown reply type byte \(type)")
        }
    }

    /// A value is whole: it completes its array (and maybe that array's
    /// parents) or is a reply of its own.
    private mutating func complete(_ value: RESPValue, into values: inout [RESPValue]) {
        var value = value
        while !stack.isEmpty {
            let last = stack.count - 1
            stack[last].elements.append(value)
            stack[last].remaining -= 1
            guard stack[last].remaining == 0 else { return }
            value = .array(stack.removeLast().elements)
        }
        values.append(value)
    }

    /// A signed decimal, strictly: digits only after an optional minus.
    private static func integer(_ digits: ArraySlice<UInt8>) -> Int64? {
        var negative = false
        var body = digits[...]
        if body.first == UInt8(ascii: "-") {
            negative = true
            body = body.dropFirst()
        }
        guard !body.isEmpty, body.count <= 19 else { return nil }
        var value: Int64 = 0
        for byte in body {
            guard byte >= 0x30, byte <= 0x39 else { return nil }
            let (times, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times.addingReportingOverflow(Int64(byte - 0x30))
            guard !overflow1, !overflow2 else { return nil }
            value = sum
        }
        return negative ? -value : value
    }
}
