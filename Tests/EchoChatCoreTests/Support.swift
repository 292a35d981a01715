import Testing

@testable import EchoChatCore

// MARK: - Bytes

/// The UTF-8 bytes of `text`.
func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

/// A line as the recorder shows it: the bytes before the LF, decoded.
func text(_ line: [UInt8]) -> String { String(decoding: line, as: UTF8.self) }

// MARK: - Deterministic randomness

/// SplitMix64: a tiny seeded generator, so "random" chunkings are the same on
/// every run and a failure can be reproduced.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

// MARK: - Chunking

/// How one run of input is cut into `feed` / `receive` calls. Every framer and
/// core behaviour test runs under all of these and must see identical results
/// (STYLE.md habit 7: input is fed whole and one byte at a time).
enum Chunking: CustomStringConvertible {
    case whole
    case byteByByte
    /// Pieces of random length in `1...maxPiece`, from a fixed seed.
    case random(seed: UInt64, maxPiece: Int)
    /// Two pieces cut at `at` (clamped to the input).
    case split(at: Int)

    var description: String {
        switch self {
        case .whole: "whole"
        case .byteByByte: "byte by byte"
        case .random(let seed, let maxPiece): "random(seed: \(seed), 1...\(maxPiece))"
        case .split(let at): "split(at: \(at))"
        }
    }

    /// The chunkings every test uses.
    static let standard: [Chunking] = [
        .whole, .byteByByte, .random(seed: 1, maxPiece: 3), .random(seed: 7, maxPiece: 17),
        .random(seed: 42, maxPiece: 300),
    ]

    /// `standard`, plus every two-piece split for short inputs.
    static func all(forLength count: Int) -> [Chunking] {
        standard + (count <= 256 ? (0...count).map { .split(at: $0) } : [])
    }

    /// A stateful cutter: random chunkings keep their generator across calls,
    /// so a session of many `receive`s is cut differently each time.
    struct Cutter {
        let chunking: Chunking
        private var generator: SeededGenerator

        init(_ chunking: Chunking) {
            self.chunking = chunking
            if case .random(let seed, _) = chunking {
                generator = SeededGenerator(seed: seed)
            } else {
                generator = SeededGenerator(seed: 0)
            }
        }

        /// The piece boundaries for an input of `count` bytes (empty input: no pieces).
        mutating func pieces(count: Int) -> [Range<Int>] {
            guard count > 0 else { return [] }
            switch chunking {
            case .whole:
                return [0..<count]
            case .byteByByte:
                return (0..<count).map { $0..<($0 + 1) }
            case .split(let at):
                let cut = min(max(at, 0), count)
                return [0..<cut, cut..<count].filter { !$0.isEmpty }
            case .random(_, let maxPiece):
                var ranges: [Range<Int>] = []
                var start = 0
                while start < count {
                    let length = Int.random(in: 1...maxPiece, using: &generator)
                    let end = min(count, start + length)
                    ranges.append(start..<end)
                    start = end
                }
                return ranges
            }
        }
    }
}

// MARK: - Framer driver

/// What a `LineFramer` reported, copied out of the callback.
enum Framed: Equatable, CustomStringConvertible {
    case line([UInt8])
    case tooLong

    static func line(_ text: String) -> Framed { .line(Array(text.utf8)) }

    var description: String {
        switch self {
        case .line(let bytes): ".line(\(String(reflecting: String(decoding: bytes, as: UTF8.self))))"
        case .tooLong: ".tooLong"
        }
    }
}

/// Feeds `input` to a fresh framer under one chunking; stops feeding once the
/// handler has returned false (as the core does once a client is gone).
func frameOnce(
    _ input: [UInt8], maxLine: Int, chunking: Chunking, finish: Bool, stopAfter: Int?
) -> [Framed] {
    var framer = LineFramer(maxLine: maxLine)
    var events: [Framed] = []
    var stopped = false
    let handle: (LineFramer.Event) -> Bool = { event in
        switch event {
        case .line(let line): events.append(.line(Array(line)))
        case .tooLong: events.append(.tooLong)
        }
        if let stopAfter, events.count >= stopAfter {
            stopped = true
            return false
        }
        return true
    }
    var cutter = Chunking.Cutter(chunking)
    input.withUnsafeBytes { all in
        for range in cutter.pieces(count: all.count) {
            if stopped { break }
            framer.feed(UnsafeRawBufferPointer(rebasing: all[range]), handle)
        }
    }
    if finish && !stopped { framer.finish(handle) }
    return events
}

/// Frames `input` under every chunking, expects them all to agree, and returns
/// the events of the whole-input run.
func frame(
    _ input: [UInt8], maxLine: Int, finish: Bool = false, stopAfter: Int? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) -> [Framed] {
    let reference = frameOnce(input, maxLine: maxLine, chunking: .whole, finish: finish, stopAfter: stopAfter)
    for chunking in Chunking.all(forLength: input.count) {
        let events = frameOnce(input, maxLine: maxLine, chunking: chunking, finish: finish, stopAfter: stopAfter)
        #expect(events == reference, "chunking \(chunking) disagrees with whole input", sourceLocation: sourceLocation)
    }
    return reference
}

func frame(
    _ input: String, maxLine: Int = 4096, finish: Bool = false, stopAfter: Int? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
) -> [Framed] {
    frame(bytes(input), maxLine: maxLine, finish: finish, stopAfter: stopAfter, sourceLocation: sourceLocation)
}

// MARK: - Recording ChatOutput

/// A `ChatOutput` that records every action in order and checks the rules a
/// strategy relies on: each line is one LF-terminated line with one of the
/// four markers (PROTOCOL.md §3.2), nothing is sent to or closed on a
/// connection after it was closed.
final class RecordingOutput: ChatOutput {
    enum Action: Equatable, CustomStringConvertible {
        case sent(ConnectionID, String)
        case closed(ConnectionID)

        var description: String {
            switch self {
            case .sent(let id, let line): "sent(\(id.rawValue), \(String(reflecting: line)))"
            case .closed(let id): "closed(\(id.rawValue))"
            }
        }
    }

    /// Fixed wire counters, so `/stats` can be checked exactly.
    static let transport = TransportStats(
        strategy: "recorder", uptimeSeconds: 12, connectionsTotal: 34, refused: 5,
        bytesIn: 6789, bytesOut: 10111, messagesIn: 777, messagesOut: 888,
        extra: [TransportStats.Pair("workers", "3")])

    private(set) var actions: [Action] = []
    /// Every line sent, per connection, without its LF.
    private(set) var lines: [ConnectionID: [String]] = [:]
    /// Closed connections, in order.
    private(set) var closed: [ConnectionID] = []
    /// Rule violations seen (should stay empty).
    private(set) var violations: [String] = []
    private var open: Set<ConnectionID> = []

    /// A connection the harness is about to hand to the core.
    func opened(_ id: ConnectionID) { open.insert(id) }

    func send(_ line: [UInt8], to id: ConnectionID) {
        if !open.contains(id) { violations.append("send to closed/unknown \(id): \(text(line))") }
        if line.last != 0x0A { violations.append("line without LF to \(id): \(text(line))") }
        let body = Array(line.dropLast())
        if body.contains(0x0A) || body.contains(0x0D) {
            violations.append("LF or CR inside a line to \(id): \(text(line))")
        }
        let string = text(body)
        let markers = ["<", "[pm from ", "* ", "! "]
        if !markers.contains(where: { string.hasPrefix($0) }) {
            violations.append("line without a marker to \(id): \(string)")
        }
        actions.append(.sent(id, string))
        lines[id, default: []].append(string)
    }

    func close(_ id: ConnectionID) {
        if !open.contains(id) { violations.append("close of closed/unknown \(id)") }
        open.remove(id)
        actions.append(.closed(id))
        closed.append(id)
    }

    func transportStats() -> TransportStats { Self.transport }
}

// MARK: - Chat harness

/// Drives several `ChatCore`s in lock step, one per chunking, each with its
/// own recorder. Every step goes to all of them (bytes cut differently for
/// each); after every step their recorded actions and counters must agree.
/// Queries answer from the whole-input run, counting from the last `mark()`.
final class ChatHarness {
    let maxLine: Int
    private var variants: [(chunking: Chunking, core: ChatCore, output: RecordingOutput, cutter: Chunking.Cutter)]
    private var markIndex = 0

    init(maxLine: Int = 4096) {
        self.maxLine = maxLine
        variants = Chunking.standard.map { chunking in
            (chunking, ChatCore(maxLine: maxLine), RecordingOutput(), Chunking.Cutter(chunking))
        }
    }

    var core: ChatCore { variants[0].core }
    var output: RecordingOutput { variants[0].output }

    // Steps

    /// Connects each id, in order.
    func connect(_ ids: Int..., sourceLocation: SourceLocation = #_sourceLocation) {
        for id in ids {
            step(sourceLocation) { core, output, _ in
                output.opened(ConnectionID(id))
                core.connect(ConnectionID(id), output: output)
            }
        }
    }

    /// Raw bytes from `id`, cut by each variant's chunking.
    func receive(_ id: Int, _ input: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
        step(sourceLocation) { core, output, cutter in
            input.withUnsafeBytes { all in
                for range in cutter.pieces(count: all.count) {
                    core.receive(UnsafeRawBufferPointer(rebasing: all[range]), from: ConnectionID(id), output: output)
                }
            }
        }
    }

    /// Raw text from `id` (include the LFs yourself).
    func receive(_ id: Int, _ input: String, sourceLocation: SourceLocation = #_sourceLocation) {
        receive(id, bytes(input), sourceLocation: sourceLocation)
    }

    /// One line from `id`, LF added.
    func say(_ id: Int, _ line: String, sourceLocation: SourceLocation = #_sourceLocation) {
        receive(id, bytes(line + "\n"), sourceLocation: sourceLocation)
    }

    func endOfInput(_ id: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        step(sourceLocation) { core, output, _ in core.endOfInput(from: ConnectionID(id), output: output) }
    }

    func disconnect(_ id: Int, _ reason: DisconnectReason, sourceLocation: SourceLocation = #_sourceLocation) {
        step(sourceLocation) { core, output, _ in
            core.disconnect(ConnectionID(id), reason: reason, output: output)
        }
    }

    func shutdown(sourceLocation: SourceLocation = #_sourceLocation) {
        step(sourceLocation) { core, output, _ in core.shutdown(output: output) }
    }

    private func step(
        _ sourceLocation: SourceLocation, _ body: (ChatCore, RecordingOutput, inout Chunking.Cutter) -> Void
    ) {
        for index in variants.indices {
            body(variants[index].core, variants[index].output, &variants[index].cutter)
        }
        let reference = variants[0]
        #expect(reference.output.violations == [], sourceLocation: sourceLocation)
        for variant in variants.dropFirst() {
            let name = variant.chunking.description
            #expect(variant.output.actions == reference.output.actions, "\(name) disagrees", sourceLocation: sourceLocation)
            #expect(variant.core.messagesIn == reference.core.messagesIn, "\(name) messagesIn", sourceLocation: sourceLocation)
            #expect(variant.core.messagesOut == reference.core.messagesOut, "\(name) messagesOut", sourceLocation: sourceLocation)
            #expect(variant.core.clientCount == reference.core.clientCount, "\(name) clients", sourceLocation: sourceLocation)
            #expect(variant.core.roomCount == reference.core.roomCount, "\(name) rooms", sourceLocation: sourceLocation)
        }
    }

    // Queries (whole-input run, since the last mark)

    /// Forget what was recorded so far (for queries; the checks still see it all).
    func mark() { markIndex = output.actions.count }

    /// Actions since the last mark.
    var actions: [RecordingOutput.Action] { Array(output.actions[markIndex...]) }

    /// Lines sent to `id` since the last mark.
    func lines(_ id: Int) -> [String] {
        actions.compactMap { action in
            if case .sent(let to, let line) = action, to == ConnectionID(id) { return line }
            return nil
        }
    }

    /// Connections closed since the last mark, in order.
    var closed: [Int] {
        actions.compactMap { action in
            if case .closed(let id) = action { return id.rawValue }
            return nil
        }
    }

    /// Whether every variant agrees that `id` has a partial line.
    func hasPartialLine(_ id: Int, sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        let answers = variants.map { $0.core.hasPartialLine(ConnectionID(id)) }
        #expect(Set(answers).count == 1, "variants disagree on hasPartialLine: \(answers)", sourceLocation: sourceLocation)
        return answers[0]
    }

    /// Sends `command` from `id` and returns just the lines `id` got for it.
    func reply(_ id: Int, _ command: String, sourceLocation: SourceLocation = #_sourceLocation) -> [String] {
        mark()
        say(id, command, sourceLocation: sourceLocation)
        return lines(id)
    }
}
