/// A fuzz input read as a script: four header bytes pick the server's limits
/// and how the second run cuts input, then each operation is one byte (kind
/// in the low nibble, which connection in the high nibble) and its arguments.
///
/// Every byte string decodes to a script: missing bytes read as 0 and no
/// value is out of range, so no input the fuzzer tries is wasted. `encoded`
/// writes a script back as bytes, so seeds are written as code (`FuzzSeeds`).
/// Changing the decoder changes what every stored file means: regression
/// files are then to be re-made from their own seeds or tests.
public struct FuzzScript: Equatable, Sendable {
    public var config: Config
    public var operations: [Operation]

    public init(config: Config = Config(), operations: [Operation]) {
        self.config = config
        self.operations = operations
    }

    /// The server's settings for one run, and how the chunked run cuts input.
    public struct Config: Equatable, Sendable {
        public var maxLine: Int
        public var maxOutput: Int
        public var maxClients: Int
        /// 0 = off.
        public var idleTimeoutSeconds: Int
        /// 0 = off.
        public var lineTimeoutSeconds: Int
        public var closeTimeoutSeconds: Int
        public var linger: Bool
        /// What the kernel's send buffer to each client holds; nil = unbounded.
        public var socketBuffer: Int?
        /// The chunked run reads pieces of 1...maxPiece bytes.
        public var maxPiece: Int

        public init(
            maxLine: Int = 32, maxOutput: Int = 1 << 20, maxClients: Int = 8, idleTimeoutSeconds: Int = 0,
            lineTimeoutSeconds: Int = 0, closeTimeoutSeconds: Int = 30, linger: Bool = false,
            socketBuffer: Int? = nil, maxPiece: Int = 3
        ) {
            self.maxLine = maxLine
            self.maxOutput = maxOutput
            self.maxClients = maxClients
            self.idleTimeoutSeconds = idleTimeoutSeconds
            self.lineTimeoutSeconds = lineTimeoutSeconds
            self.closeTimeoutSeconds = closeTimeoutSeconds
            self.linger = linger
            self.socketBuffer = socketBuffer
            self.maxPiece = maxPiece
        }

        // The choices a header byte picks from. Small limits on purpose: they
        // are where the edges are (a welcome longer than max-output, a line
        // too long at 1 byte).
        static let maxLines = [32, 4096, 1, 4]
        static let maxOutputs = [1 << 20, 64, 256, 1024, 4096, 16384, 100, 65536]
        static let maxPieces = [3, 1, 2, 7, 16, 64, 512, 4096]
        static let socketBuffers: [Int?] = [nil, 0, 16, 100, 512, 4096, 65536, 1]
    }

    /// One step of the script. Connections are chosen among those open at
    /// that moment (`connection` modulo their number); with none, a step
    /// that needs one does nothing.
    public enum Operation: Equatable, Sendable {
        /// A client connects (ids are the lowest free, as descriptors are).
        case connect
        /// The client sends these bytes; the server reads what it will.
        case send(connection: Int, bytes: [UInt8])
        /// The client shuts down its sending side.
        case endOfInput(connection: Int)
        /// The connection fails (a reset): the server sees an error.
        case reset(connection: Int)
        /// From now on writes to this connection fail (the peer is gone).
        case breakWrites(connection: Int)
        /// Time passes; every timer due fires.
        case tick(milliseconds: Int)
        /// The client reads this many bytes of what the kernel holds for it (nil: all).
        case read(connection: Int, bytes: Int?)
        /// The client sends `/who` and `/rooms`; the replies are checked
        /// against the registry.
        case audit(connection: Int)
        /// The server shuts down (nothing after this runs).
        case shutdown
    }
}

// MARK: - Decoding

extension FuzzScript {
    /// Operation kinds (the low nibble of an operation byte).
    enum Kind: UInt8 {
        case connect = 0, raw, line, endOfInput, reset, tick, read, audit, shutdown, repeated, snippet, breakWrites
        // 12...15 repeat the most useful kinds, so random bytes send more.
        case raw2, line2, tick2, read2

        var canonical: Kind {
            switch self {
            case .raw2: .raw
            case .line2: .line
            case .tick2: .tick
            case .read2: .read
            default: self
            }
        }
    }

    /// The start of a line for `Kind.line` (an argument and LF follow).
    static let words: [String] = [
        "", "/nick ", "/join ", "/who", "/rooms", "/msg ", "/help", "/stats",
        "/quit", "/quit ", "//", "/", "/NICK ", "/JoIn #", "/msg guest1 ", "/msg GUEST2 hi ",
        "/nick guest1", "/nick Guest2", "/join #lobby", "/join lobby", "/join #a", "/join A", "hello ", " ",
        "\t", "/nick  a  ", "/who extra", "/bogus", "/Quit bye ", "/msg ", "/join ", "/nick ",
    ]

    /// Byte sequences for `Kind.snippet`: controls and separators hygiene
    /// removes, invalid UTF-8, line ends, names.
    static let snippets: [[UInt8]] = [
        [0x0D], [0x0A], [0x0D, 0x0A], [0x00], Array("\u{1B}[31m".utf8), [0x7F], [0xC2, 0x85], [0xC2, 0x9B],
        [0xE2, 0x80, 0xA8], [0xE2, 0x80, 0xA9], [0xE2, 0x80, 0xAE], [0xE2, 0x81, 0xA6], [0xE2, 0x81, 0xA9],
        [0xD8, 0x9C], [0xE2, 0x80, 0x8E], [0xE2, 0x80, 0x8F],
        [0xFF], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xE2, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xEF, 0xBB, 0xBF],
        [0xEF, 0xBF, 0xBD], [0x09], Array("é".utf8), [0xF0, 0x9F, 0x98, 0x80], [0x80], [0xF0, 0x9F],
        Array("guest1".utf8), Array("#lobby".utf8), [0x20], Array("\r\n/who\r\n".utf8),
    ]

    /// Reads `bytes` as a script. Total: every input gives one.
    public init(decoding bytes: UnsafeRawBufferPointer) {
        var reader = Reader(bytes)
        let h0 = reader.byte(), h1 = reader.byte(), h2 = reader.byte(), h3 = reader.byte()
        var config = Config()
        config.maxLine = Config.maxLines[Int(h0 & 3)]
        config.maxOutput = Config.maxOutputs[Int(h0 >> 2 & 7)]
        config.maxClients = 8 - Int(h0 >> 5)
        config.idleTimeoutSeconds = Int(h1 & 15)
        config.lineTimeoutSeconds = Int(h1 >> 4)
        config.maxPiece = Config.maxPieces[Int(h2 & 7)]
        config.closeTimeoutSeconds = h2 >> 3 & 15 == 0 ? 30 : Int(h2 >> 3 & 15)
        config.linger = h2 & 0x80 != 0
        config.socketBuffer = Config.socketBuffers[Int(h3 & 7)]

        var operations: [Operation] = []
        while !reader.isAtEnd {
            let code = reader.byte()
            let connection = Int(code >> 4)
            switch Kind(rawValue: code & 15)!.canonical {
            case .connect:
                operations.append(.connect)
            case .raw:
                let count = Int(reader.byte())
                operations.append(.send(connection: connection, bytes: reader.bytes(count)))
            case .line:
                let choice = reader.byte()
                let argument = reader.bytes(Int(reader.byte() & 31))
                var line = Array(Self.words[Int(choice) % Self.words.count].utf8) + argument
                line += choice & 0x80 != 0 ? [0x0D, 0x0A] : [0x0A]
                operations.append(.send(connection: connection, bytes: line))
            case .repeated:
                let byte = reader.byte()
                let count = Int(reader.byte()) * 32
                operations.append(.send(connection: connection, bytes: [UInt8](repeating: byte, count: count)))
            case .snippet:
                let snippet = Self.snippets[Int(reader.byte()) % Self.snippets.count]
                operations.append(.send(connection: connection, bytes: snippet))
            case .endOfInput:
                operations.append(.endOfInput(connection: connection))
            case .reset:
                operations.append(.reset(connection: connection))
            case .breakWrites:
                operations.append(.breakWrites(connection: connection))
            case .tick:
                operations.append(.tick(milliseconds: (Int(reader.byte()) + 1) * 100))
            case .read:
                let count = reader.byte()
                operations.append(.read(connection: connection, bytes: count == 255 ? nil : Int(count) * 16))
            case .audit:
                operations.append(.audit(connection: connection))
            case .shutdown:
                operations.append(.shutdown)
            case .raw2, .line2, .tick2, .read2:
                preconditionFailure("canonical kinds only")
            }
        }
        self.init(config: config, operations: operations)
    }

    public init(decoding bytes: [UInt8]) {
        self = bytes.withUnsafeBytes { FuzzScript(decoding: $0) }
    }

    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        var index = 0
        init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }
        var isAtEnd: Bool { index >= bytes.count }
        mutating func byte() -> UInt8 {
            guard index < bytes.count else { return 0 }
            defer { index += 1 }
            return bytes[index]
        }
        mutating func bytes(_ count: Int) -> [UInt8] {
            let end = min(bytes.count, index + count)
            defer { index = end }
            return Array(bytes[index..<end])
        }
    }
}

// MARK: - Encoding

extension FuzzScript {
    /// Bytes that decode to this script (for seeds). Sends are written as raw
    /// pieces of at most 255 bytes (one operation each) and runs of one byte
    /// as repeats, so a long send becomes several operations.
    public var encoded: [UInt8] {
        func index<T: Equatable>(_ value: T, in choices: [T], _ what: String) -> UInt8 {
            guard let index = choices.firstIndex(of: value) else { preconditionFailure("\(what) \(value) is not one of \(choices)") }
            return UInt8(index)
        }
        precondition((1...8).contains(config.maxClients), "maxClients is 1...8")
        precondition((0...15).contains(config.idleTimeoutSeconds) && (0...15).contains(config.lineTimeoutSeconds))
        precondition(config.closeTimeoutSeconds == 30 || (1...15).contains(config.closeTimeoutSeconds))
        var out: [UInt8] = [
            index(config.maxLine, in: Config.maxLines, "maxLine") | index(config.maxOutput, in: Config.maxOutputs, "maxOutput") << 2
                | UInt8(8 - config.maxClients) << 5,
            UInt8(config.idleTimeoutSeconds) | UInt8(config.lineTimeoutSeconds) << 4,
            index(config.maxPiece, in: Config.maxPieces, "maxPiece")
                | UInt8(config.closeTimeoutSeconds == 30 ? 0 : config.closeTimeoutSeconds) << 3 | (config.linger ? 0x80 : 0),
            index(config.socketBuffer, in: Config.socketBuffers, "socketBuffer"),
        ]
        func code(_ kind: Kind, _ connection: Int) -> UInt8 {
            precondition((0...15).contains(connection), "connection selector is 0...15")
            return UInt8(connection) << 4 | kind.rawValue
        }
        for operation in operations {
            switch operation {
            case .connect: out.append(Kind.connect.rawValue)
            case .send(let connection, let bytes): out += Self.encodeSend(bytes, code(.raw, connection), code(.repeated, connection))
            case .endOfInput(let connection): out.append(code(.endOfInput, connection))
            case .reset(let connection): out.append(code(.reset, connection))
            case .breakWrites(let connection): out.append(code(.breakWrites, connection))
            case .tick(let milliseconds):
                precondition(milliseconds % 100 == 0 && (100...25_600).contains(milliseconds), "ticks are 100...25600 ms in 100s")
                out += [Kind.tick.rawValue, UInt8(milliseconds / 100 - 1)]
            case .read(let connection, let count):
                precondition(count.map { $0 % 16 == 0 && $0 <= 254 * 16 } ?? true, "reads are multiples of 16 up to 4064, or all")
                out += [code(.read, connection), count.map { UInt8($0 / 16) } ?? 255]
            case .audit(let connection): out.append(code(.audit, connection))
            case .shutdown: out.append(Kind.shutdown.rawValue)
            }
        }
        return out
    }

    private static func encodeSend(_ bytes: [UInt8], _ raw: UInt8, _ repeated: UInt8) -> [UInt8] {
        var out: [UInt8] = []
        var index = 0
        var literal: [UInt8] = []
        func flushLiteral() {
            for start in stride(from: 0, to: literal.count, by: 255) {
                let piece = literal[start..<min(literal.count, start + 255)]
                out += [raw, UInt8(piece.count)] + piece
            }
            literal = []
        }
        while index < bytes.count {
            var run = 1
            while index + run < bytes.count && bytes[index + run] == bytes[index] && run < 255 * 32 { run += 1 }
            if run >= 64 {
                flushLiteral()
                let count = run / 32 * 32
                out += [repeated, bytes[index], UInt8(count / 32)]
                index += count
            } else {
                literal.append(bytes[index])
                index += 1
            }
        }
        flushLiteral()
        if bytes.isEmpty { out += [raw, 0] }
        return out
    }
}
