import Testing

@testable import EchoChatCore

/// PROTOCOL.md §3 (a line ends with LF, a CR right before it is removed) and
/// §3.1 step 1 (length). Every case goes through `frame`, which feeds the input
/// whole, byte by byte, in seeded random pieces and split at every offset, and
/// requires the same events from all of them.
@Suite("LineFramer")
struct LineFramerTests {
    @Test func splitsLinesOnLF() {
        #expect(frame("alpha\nbeta\n") == [.line("alpha"), .line("beta")])
    }

    @Test func keepsAPartialLineAcrossFeedsUntilItsLF() {
        var framer = LineFramer(maxLine: 64)
        var events: [Framed] = []
        let handle: (LineFramer.Event) -> Bool = { event in
            if case .line(let line) = event { events.append(.line(Array(line))) } else { events.append(.tooLong) }
            return true
        }
        for piece in ["hel", "lo\nwor", "ld", "\n"] {
            bytes(piece).withUnsafeBytes { framer.feed($0, handle) }
            if piece == "hel" { #expect(events == [] && framer.hasPartialLine) }
            if piece == "lo\nwor" { #expect(events == [.line("hello")] && framer.hasPartialLine) }
        }
        #expect(events == [.line("hello"), .line("world")])
        #expect(!framer.hasPartialLine)
        // And the same through every chunking.
        #expect(frame("hello\nworld\n") == [.line("hello"), .line("world")])
    }

    @Test func stripsCRBeforeLF() {
        #expect(frame("a\r\nb\r\n\r\n") == [.line("a"), .line("b"), .line("")])
    }

    @Test(arguments: [
        ("a\rb\n", "a\rb"),  // CR inside the line is kept (hygiene removes it later)
        ("\ra\n", "\ra"),  // CR at the start
        ("a\r\r\n", "a\r"),  // only the one CR right before the LF goes
        ("\r\r\n", "\r"),
    ])
    func keepsCRNotRightBeforeLF(input: String, expected: String) {
        #expect(frame(input) == [.line(expected)])
    }

    @Test func manyLinesInOneFeed() {
        let count = 2_000
        let input = (0..<count).map { "line \($0)\n" }.joined()
        let events = frame(bytes(input), maxLine: 64)
        #expect(events == (0..<count).map { .line("line \($0)") })
    }

    @Test func deliversEmptyLines() {
        #expect(frame("\n\n\r\nx\n\n") == [.line(""), .line(""), .line(""), .line("x"), .line("")])
    }

    @Test func isBinarySafeInsideALine() {
        let input: [UInt8] = [0x00, 0xFF, 0x1B, 0x0D, 0x41, 0x0A]
        #expect(frame(input, maxLine: 16) == [.line([0x00, 0xFF, 0x1B, 0x0D, 0x41])])
    }

    // MARK: Length

    @Test(arguments: [1, 2, 8, 100])
    func acceptsALineOfExactlyMaxLine(maxLine: Int) {
        let line = String(repeating: "x", count: maxLine)
        #expect(frame(line + "\n", maxLine: maxLine) == [.line(line)])
        #expect(frame(line + "\r\n", maxLine: maxLine) == [.line(line)])
        #expect(frame(line + "\r\n" + line + "\n", maxLine: maxLine) == [.line(line), .line(line)])
    }

    @Test(arguments: [1, 2, 8, 100])
    func reportsMaxLinePlusOneAsTooLong(maxLine: Int) {
        let line = String(repeating: "y", count: maxLine + 1)
        #expect(frame(line + "\n", maxLine: maxLine) == [.tooLong])
        #expect(frame(line + "\r\n", maxLine: maxLine) == [.tooLong])
        let next = String("ok".prefix(maxLine))
        #expect(frame(line + "\n" + next + "\n", maxLine: maxLine) == [.tooLong, .line(next)])
    }

    @Test func aCRThatIsNotBeforeTheLFCountsTowardsTheLength() {
        // 8 bytes + CR + CR LF: the first CR is a ninth counted byte.
        #expect(frame("12345678\r\r\n", maxLine: 8) == [.tooLong])
        // 7 bytes + CR + CR LF: exactly 8 counted bytes.
        #expect(frame("1234567\r\r\n", maxLine: 8) == [.line("1234567\r")])
        // 8 bytes + CR + another byte: too long as soon as the byte arrives.
        #expect(frame("12345678\rx", maxLine: 8) == [.tooLong])
        // 8 bytes + CR with nothing after it yet: not too long (the LF may follow).
        #expect(frame("12345678\r", maxLine: 8) == [])
    }

    @Test func reportsTooLongAsSoonAsMaxLinePlusOneBytesArriveWithoutWaitingForLF() {
        #expect(frame("123456789", maxLine: 8) == [.tooLong])
        #expect(frame("12345678", maxLine: 8) == [])
    }

    @Test func discardsUpToAndIncludingTheNextLF() {
        let events = frame("before\n123456789 and the rest of it\nafter\n", maxLine: 8)
        #expect(events == [.line("before"), .tooLong, .line("after")])
    }

    @Test func reportsTooLongOnceForALongLineInManySmallPieces() {
        let long = [UInt8](repeating: 0x61, count: 5_000) + [0x0A]
        let input = long + bytes("next\n")
        // `frame` includes byte-by-byte and 1...3-byte pieces.
        #expect(frame(input, maxLine: 8) == [.tooLong, .line("next")])
    }

    @Test func reportsEachLongLineSeparately() {
        let input = "aaaaaaaaaaaa\nbbbbbbbbbbbbbbbbbbb\r\nok\ncccccccccccc\n"
        #expect(frame(input, maxLine: 4) == [.tooLong, .tooLong, .line("ok"), .tooLong])
    }

    @Test func aTenMegabyteLineGivesOneTooLongAndLeavesTheNextLineIntact() {
        let maxLine = 4096
        let size = 10 * 1024 * 1024
        var input = [UInt8](repeating: 0x7A, count: size)
        input.append(0x0A)
        input += bytes("intact line\n")
        for chunking: Chunking in [.whole, .random(seed: 3, maxPiece: 4_000), .random(seed: 9, maxPiece: 70_000)] {
            let events = frameOnce(input, maxLine: maxLine, chunking: chunking, finish: true, stopAfter: nil)
            #expect(events == [.tooLong, .line("intact line")], "\(chunking)")
        }
    }

    /// The memory bound itself: after every feed the framer keeps at most
    /// `maxLine` + 2 bytes (a full line, a CR that may precede the LF, and the
    /// byte that proves the line too long). Checked through `Mirror`, since a
    /// framer that buffered the whole 10 MB would behave identically otherwise.
    @Test(arguments: [1, 7, 64])
    func neverKeepsMoreThanMaxLinePlusTwoBytes(maxLine: Int) throws {
        var framer = LineFramer(maxLine: maxLine)
        var generator = SeededGenerator(seed: 11)
        var tooLong = 0
        var lines: [[UInt8]] = []
        var largest = 0
        func kept(_ framer: LineFramer) -> Int? {
            Mirror(reflecting: framer).children.first { $0.label == "partial" }.flatMap { ($0.value as? [UInt8])?.count }
        }
        #expect(kept(framer) == 0, "LineFramer no longer has a `partial` buffer: update this test")
        // 1 MB without a LF (CRs sprinkled in), in random pieces, then one LF.
        var sent = 0
        while sent < 1 << 20 {
            let length = Int.random(in: 1...(3 * maxLine), using: &generator)
            let piece = (0..<length).map { _ in Bool.random(using: &generator) ? UInt8(0x0D) : UInt8(0x71) }
            piece.withUnsafeBytes { buffer in
                framer.feed(buffer) { event in
                    if case .line(let line) = event { lines.append(Array(line)) } else { tooLong += 1 }
                    return true
                }
            }
            largest = max(largest, try #require(kept(framer)))
            sent += length
        }
        let after = String("after".prefix(maxLine))
        bytes("\n" + after + "\n").withUnsafeBytes { buffer in
            framer.feed(buffer) { event in
                if case .line(let line) = event { lines.append(Array(line)) } else { tooLong += 1 }
                return true
            }
        }
        #expect(largest <= maxLine + 2)
        #expect(tooLong == 1)
        #expect(lines == [bytes(after)])
    }

    /// A plain model of §3.1 step 1, compared with the framer on many small
    /// random inputs made of the bytes that matter (every chunking must agree too).
    @Test func matchesASimpleModelOnRandomInputs() {
        func model(_ input: [UInt8], maxLine: Int, finish: Bool) -> [Framed] {
            let segments = input.split(separator: 0x0A, omittingEmptySubsequences: false)
            var events: [Framed] = []
            for (index, segment) in segments.enumerated() {
                let terminated = index < segments.count - 1
                // A CR counts unless an LF follows it, or may still follow it.
                let crMayPrecedeLF = terminated || !finish
                let counted = segment.count - (segment.last == 0x0D && crMayPrecedeLF ? 1 : 0)
                if counted > maxLine {
                    events.append(.tooLong)
                } else if terminated {
                    events.append(.line(Array(segment.prefix(counted))))
                } else if finish && !segment.isEmpty {
                    events.append(.line(Array(segment)))
                }
            }
            return events
        }
        var generator = SeededGenerator(seed: 99)
        let alphabet: [UInt8] = [0x61, 0x62, 0x0D, 0x0A]
        for _ in 0..<400 {
            let input = (0..<Int.random(in: 0...40, using: &generator)).map { _ in
                alphabet.randomElement(using: &generator)!
            }
            let maxLine = Int.random(in: 1...6, using: &generator)
            let finish = Bool.random(using: &generator)
            #expect(frame(input, maxLine: maxLine, finish: finish) == model(input, maxLine: maxLine, finish: finish),
                    "input \(input) maxLine \(maxLine) finish \(finish)")
        }
    }

    // MARK: finish()

    @Test func finishTreatsAnUnterminatedLastLineAsALine() {
        #expect(frame("one\ntwo", finish: true) == [.line("one"), .line("two")])
        #expect(frame("", finish: true) == [])
        #expect(frame("one\n", finish: true) == [.line("one")])
    }

    @Test func finishKeepsATrailingCRWithoutLF() {
        // No LF, so the CR is not "right before the LF": hygiene removes it later.
        #expect(frame("abc\r", finish: true) == [.line("abc\r")])
    }

    @Test func finishCountsATrailingCRWithoutLF() {
        // maxLine 4: "abcd\r" then EOF is 5 counted bytes, since no LF follows the CR.
        #expect(frame("abcd\r", maxLine: 4, finish: true) == [.tooLong])
        #expect(frame("abcd\r\n", maxLine: 4, finish: true) == [.line("abcd")])
    }

    @Test func finishDoesNotDeliverTheRemainderOfADiscardedLine() {
        #expect(frame("ok\n0123456789abcdef", maxLine: 8, finish: true) == [.line("ok"), .tooLong])
    }

    @Test func finishAcceptsAnUnterminatedLineOfExactlyMaxLine() {
        #expect(frame("12345678", maxLine: 8, finish: true) == [.line("12345678")])
    }

    @Test func finishResetsTheFramer() {
        var framer = LineFramer(maxLine: 8)
        var events: [Framed] = []
        let handle: (LineFramer.Event) -> Bool = { event in
            if case .line(let line) = event { events.append(.line(Array(line))) } else { events.append(.tooLong) }
            return true
        }
        bytes("0123456789").withUnsafeBytes { framer.feed($0, handle) }
        #expect(framer.hasPartialLine)
        framer.finish(handle)
        #expect(!framer.hasPartialLine)
        bytes("new\n").withUnsafeBytes { framer.feed($0, handle) }
        #expect(events == [.tooLong, .line("new")])
    }

    // MARK: Stopping

    @Test func returningFalseFromTheHandlerStopsFraming() {
        #expect(frame("a\nb\nc\n", stopAfter: 1) == [.line("a")])
        #expect(frame("a\nb\nc\n", stopAfter: 2) == [.line("a"), .line("b")])
        #expect(frame("0123456789\nb\n", maxLine: 4, stopAfter: 1) == [.tooLong])
        #expect(frame("a\nb", finish: true, stopAfter: 1) == [.line("a")])
    }

    @Test func stoppingDropsTheRestOfTheFeed() {
        var framer = LineFramer(maxLine: 16)
        var events: [Framed] = []
        bytes("a\nb\nc").withUnsafeBytes { buffer in
            framer.feed(buffer) { event in
                if case .line(let line) = event { events.append(.line(Array(line))) }
                return false
            }
        }
        #expect(events == [.line("a")])
        #expect(!framer.hasPartialLine)
    }

    // MARK: hasPartialLine

    @Test func hasPartialLineTracksAnUnfinishedLine() {
        var framer = LineFramer(maxLine: 4)
        let ignore: (LineFramer.Event) -> Bool = { _ in true }
        #expect(!framer.hasPartialLine)
        bytes("ab").withUnsafeBytes { framer.feed($0, ignore) }
        #expect(framer.hasPartialLine)
        bytes("\n").withUnsafeBytes { framer.feed($0, ignore) }
        #expect(!framer.hasPartialLine)
        bytes("abcdefg").withUnsafeBytes { framer.feed($0, ignore) }
        #expect(framer.hasPartialLine, "a line being discarded is still unfinished")
        bytes("hij").withUnsafeBytes { framer.feed($0, ignore) }
        #expect(framer.hasPartialLine)
        bytes("k\n").withUnsafeBytes { framer.feed($0, ignore) }
        #expect(!framer.hasPartialLine)
    }
}
