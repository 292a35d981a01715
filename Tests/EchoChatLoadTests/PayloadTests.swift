@testable import EchoChatLoad
import Testing

@Suite("Payloads and verification")
struct PayloadTests {
    @Test func everyMessageEndsWithLineFeedAndTemplatesDifferEverywhere() {
        let size = 100
        for t in 0..<EchoPattern.period {
            #expect(EchoPattern.byte(template: t, index: size - 1, size: size) == 0x0A)
            for other in 0..<EchoPattern.period where other != t {
                for index in 0..<(size - 1) {
                    #expect(EchoPattern.byte(template: t, index: index, size: size)
                        != EchoPattern.byte(template: other, index: index, size: size))
                }
            }
        }
    }

    @Test(arguments: [1, 2, 64, 4096])
    func pipelinesAreContiguousInTheSharedBuffer(size: Int) {
        let pattern = EchoPattern(size: size, contiguous: 16)
        for connection in [0, 1, 7, 30, 31, 12345] {
            for message in [0, 5, 29, 30, 31, 1000] {
                let run = pattern.contiguousMessages(connection: connection, message: message)
                #expect(run >= 16)
                let contiguous = Array(UnsafeRawBufferPointer(
                    start: pattern.start(connection: connection, message: message), count: 16 * size))
                let expected = (0..<16).flatMap { pattern.message(connection: connection, message: message + $0) }
                #expect(contiguous == expected)
                #expect(pattern.message(connection: connection, message: message)
                    == (0..<size).map { EchoPattern.byte(connection: connection, message: message, index: $0, size: size) })
            }
        }
    }

    /// Feeds `stream` to a fresh connection in chunks of `chunk` bytes;
    /// returns (messages completed, messages flagged bad, intact).
    func feed(_ stream: [UInt8], sent: Int, chunk: Int, pattern: EchoPattern, id: Int = 3) -> (Int, [Int], Bool) {
        var connection = EchoConnection(id: id)
        connection.sentBytes = sent
        var completed = 0
        var bad: [Int] = []
        var intact = true
        var offset = 0
        while offset < stream.count && intact {
            let piece = Array(stream[offset..<min(stream.count, offset + chunk)])
            offset += chunk
            intact = piece.withUnsafeBytes { raw in
                connection.absorb(raw, size: pattern.size, patternBase: UnsafeRawPointer(pattern.bytes.baseAddress!)) { message, isBad in
                    #expect(message == completed)
                    completed += 1
                    if isBad { bad.append(message) }
                }
            }
        }
        return (completed, bad, intact)
    }

    @Test(arguments: [1, 7, 64, 1000])
    func intactStreamVerifiesInAnyChunking(chunk: Int) {
        let pattern = EchoPattern(size: 64, contiguous: 4)
        let stream = (0..<40).flatMap { pattern.message(connection: 3, message: $0) }
        let (completed, bad, intact) = feed(stream, sent: stream.count, chunk: chunk, pattern: pattern)
        #expect(completed == 40 && bad.isEmpty && intact)
    }

    @Test(arguments: [1, 13, 4096])
    func aFlippedByteMarksExactlyItsMessage(chunk: Int) {
        let pattern = EchoPattern(size: 64, contiguous: 1)
        var stream = (0..<10).flatMap { pattern.message(connection: 3, message: $0) }
        stream[6 * 64 + 17] ^= 0x01
        let (completed, bad, intact) = feed(stream, sent: stream.count, chunk: chunk, pattern: pattern)
        #expect(completed == 10 && bad == [6] && intact)
    }

    @Test func aShortMessageDoesNotComplete() {
        let pattern = EchoPattern(size: 64, contiguous: 1)
        let stream = (0..<3).flatMap { pattern.message(connection: 3, message: $0) }
        let (completed, bad, intact) = feed(Array(stream.dropLast(5)), sent: stream.count, chunk: 50, pattern: pattern)
        #expect(completed == 2 && bad.isEmpty && intact)
    }

    @Test func swappedOrRepeatedMessagesAreCaught() {
        let pattern = EchoPattern(size: 32, contiguous: 1)
        let m = (0..<4).map { pattern.message(connection: 3, message: $0) }
        let swapped = m[0] + m[2] + m[1] + m[3]
        #expect(feed(swapped, sent: swapped.count, chunk: 1000, pattern: pattern).1 == [1, 2])
        // Another connection's bytes are caught too.
        let foreign = pattern.message(connection: 4, message: 0)
        #expect(feed(foreign, sent: 32, chunk: 1000, pattern: pattern).1 == [0])
    }

    @Test func bytesThatWereNeverSentAreReported() {
        let pattern = EchoPattern(size: 16, contiguous: 1)
        let stream = (0..<3).flatMap { pattern.message(connection: 3, message: $0) }
        let (completed, _, intact) = feed(stream, sent: 2 * 16, chunk: 1000, pattern: pattern)
        #expect(completed == 2 && !intact)
    }

    @Test func chatLinesRoundTripAndEveryByteIsChecked() {
        for size in [48, 64, 200, 4096] {
            let line = ChatLine.encode(sender: 9, sequence: 123_456, sendTime: 98_765_432_109_876, size: size)
            #expect(line.count == size)
            #expect(line.last == 0x0A)
            let body = Array(line.dropLast())
            #expect(ChatLine.parse(body, size: size) == ChatLine.Parsed(sender: 9, sequence: 123_456, sendTime: 98_765_432_109_876))
            // A flipped bit anywhere, header digits included, is caught.
            // (All positions of the short lines; the header and the last bytes of the long one.)
            let positions = size <= 200 ? Array(0..<body.count) : Array(0..<64) + Array((body.count - 8)..<body.count)
            for position in positions {
                for bit in [0x01, 0x02, 0x04] as [UInt8] {
                    var flipped = body
                    flipped[position] ^= bit
                    #expect(ChatLine.parse(flipped, size: size) == nil, "flip at \(position) of \(size) went unnoticed")
                }
            }
            #expect(ChatLine.parse(Array(body.dropLast()), size: size) == nil)
            #expect(ChatLine.parse(body + [0x61], size: size) == nil)
        }
        // The largest header still fits the minimum size.
        let widest = ChatLine.encode(sender: 999_999, sequence: 999_999_999, sendTime: Int64.max, size: ChatLine.minimumSize)
        #expect(widest.count == ChatLine.minimumSize)
        #expect(ChatLine.parse(Array(widest.dropLast()), size: ChatLine.minimumSize)?.sender == 999_999)
    }
}
