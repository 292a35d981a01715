import Testing

@testable import EchoChatCore

/// Feeds `input` to a fresh decoder cut by `chunking`; the values, or the error.
private func decode(_ input: [UInt8], _ chunking: Chunking, limits: RESPDecoder.Limits = .init()) -> Result<[RESPValue], RESPError> {
    var decoder = RESPDecoder(limits: limits)
    var cutter = Chunking.Cutter(chunking)
    var values: [RESPValue] = []
    do {
        for range in cutter.pieces(count: input.count) {
            try decoder.decode(Array(input[range]), into: &values)
        }
    } catch {
        return .failure(error)
    }
    return .success(values)
}

private func values(_ input: [UInt8], _ chunking: Chunking) throws -> [RESPValue] {
    try decode(input, chunking).get()
}

@Suite("RESP2 codec")
struct RESPTests {
    /// Every kind of reply, nested, nil and empty, in one stream. Built per
    /// use, not kept in a global: LeakSanitizer does not see through the
    /// tagged pointers of indirect enum cases, and reports what a global
    /// holds that way as leaked at exit.
    static var replies: [RESPValue] { [
        .simple("OK"),
        .error("ERR unknown command 'FOO'"),
        .integer(0), .integer(-1), .integer(9_223_372_036_854_775_807),
        .bulk("hello"), .bulk([]), .bulk(nil),
        .bulk([0x0D, 0x0A, 0x00, 0xFF, 0x0D]),  // a bulk string may hold anything, CR LF too
        .array([]), .array(nil),
        .array([.bulk("message"), .bulk("echochat:room:lobby"), .bulk("* alice joined")]),
        .array([.integer(1), .array([.bulk(nil), .array([.simple("deep"), .error("WRONGTYPE x")]), .array(nil)]), .bulk("")]),
    ] }

    @Test("every reply kind decodes identically however the stream is cut", arguments: Chunking.standard)
    func roundTrip(chunking: Chunking) throws {
        let stream = Self.replies.flatMap(\.encoded)
        #expect(try values(stream, chunking) == Self.replies)
    }

    @Test("every two-piece cut of a nested reply")
    func everySplit() throws {
        let reply = RESPValue.array([.bulk("subscribe"), .bulk("ch"), .integer(3), .array([.bulk(nil), .simple("x")])])
        let stream = reply.encoded
        for chunking in Chunking.all(forLength: stream.count) {
            #expect(try values(stream, chunking) == [reply], "\(chunking)")
        }
    }

    @Test("a 3 MiB bulk string, whole, in random pieces and byte by byte", arguments: [
        Chunking.whole, .random(seed: 3, maxPiece: 70_000), .random(seed: 5, maxPiece: 13),
    ])
    func bigBulk(chunking: Chunking) throws {
        var generator = SeededGenerator(seed: 11)
        let payload = (0..<3 * 1024 * 1024).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let stream = RESPValue.bulk(payload).encoded + RESPValue.simple("PONG").encoded
        #expect(try values(stream, chunking) == [.bulk(payload), .simple("PONG")])
    }

    @Test("byte by byte: a 256 KiB bulk string inside an array")
    func bigBulkByteByByte() throws {
        let payload = [UInt8]((0..<256 * 1024).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        let reply = RESPValue.array([.bulk("message"), .bulk(payload)])
        #expect(try values(reply.encoded, .byteByByte) == [reply])
    }

    @Test("a value cut short waits; the decoder is idle only between values")
    func partialValue() throws {
        var decoder = RESPDecoder()
        var out: [RESPValue] = []
        #expect(decoder.isIdle)
        try decoder.decode(Array("*2\r\n$3\r\nfoo\r\n".utf8), into: &out)
        #expect(out.isEmpty)
        #expect(!decoder.isIdle)
        try decoder.decode(Array(":7\r\n+OK\r".utf8), into: &out)
        #expect(out == [.array([.bulk("foo"), .integer(7)])])
        #expect(!decoder.isIdle)
        try decoder.decode(Array("\n".utf8), into: &out)
        #expect(out == [.array([.bulk("foo"), .integer(7)]), .simple("OK")])
        #expect(decoder.isIdle)
    }

    @Test("garbage is an error, however it is cut", arguments: [
        ("?what\r\n", "an unknown reply type byte 63"),
        ("+OK\rX", "a CR not followed by LF in a reply line"),
        ("\r\n", "an empty reply line"),
        (":12a\r\n", "a bad integer reply"),
        (":\r\n", "a bad integer reply"),
        (":99999999999999999999\r\n", "a bad integer reply"),
        ("$-2\r\n", "a bad bulk string length"),
        ("$3\r\nabcd\r\n", "a bulk string longer than announced"),
        ("$3\r\nabc\rX", "a bulk string not ended by CR LF"),
        ("*x\r\n", "a bad array length"),
        ("HTTP/1.1 400 Bad Request\r\n", "an unknown reply type byte 72"),
    ])
    func garbage(input: String, message: String) {
        for chunking in Chunking.standard {
            #expect(decode(Array(input.utf8), chunking) == .failure(RESPError(message)), "\(chunking)")
        }
    }

    @Test("limits bound what a broken server can make the client hold")
    func limits() {
        var limits = RESPDecoder.Limits()
        limits.maxBulkBytes = 10
        limits.maxLineBytes = 8
        limits.maxArrayCount = 3
        limits.maxDepth = 2
        #expect(decode(Array("$10\r\n0123456789\r\n".utf8), .whole, limits: limits) == .success([.bulk("0123456789")]))
        #expect(decode(Array("$11\r\n".utf8), .whole, limits: limits) == .failure(RESPError("a bulk string of 11 bytes (more than 10)")))
        #expect(decode(Array("+123456789".utf8), .byteByByte, limits: limits) == .failure(RESPError("a reply line longer than 8 bytes")))
        #expect(decode(Array("*4\r\n".utf8), .whole, limits: limits) == .failure(RESPError("an array of 4 elements (more than 3)")))
        #expect(decode(Array("*1\r\n*1\r\n:1\r\n".utf8), .whole, limits: limits) == .success([.array([.array([.integer(1)])])]))
        #expect(decode(Array("*1\r\n*1\r\n*1\r\n".utf8), .whole, limits: limits) == .failure(RESPError("arrays nested deeper than 2")))
        // A huge announced array costs nothing until its elements arrive.
        #expect(decode(Array("*1000000\r\n:1\r\n".utf8), .whole) == .success([]))
    }

    @Test("commands are arrays of bulk strings, binary-safe")
    func commands() throws {
        #expect(RESP.command(["SET", "k", "v"]) == Array("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n".utf8))
        var out: [UInt8] = []
        RESP.appendCommand([Array("PUBLISH".utf8), [0x0D, 0x0A], []], to: &out)
        #expect(out == Array("*3\r\n$7\r\nPUBLISH\r\n$2\r\n\r\n\r\n$0\r\n\r\n".utf8))
        // What the encoder writes, the decoder reads back.
        #expect(try values(out, .byteByByte) == [.array([.bulk("PUBLISH"), .bulk([0x0D, 0x0A]), .bulk([])])])
        // A line break cannot end a simple string early.
        #expect(RESPValue.simple("a\r\nb").encoded == Array("+a  b\r\n".utf8))
    }

    @Test("accessors")
    func accessors() {
        #expect(RESPValue.bulk("x").text == "x")
        #expect(RESPValue.simple("OK").text == "OK")
        #expect(RESPValue.error("ERR").text == nil)
        #expect(RESPValue.integer(5).integer == 5)
        #expect(RESPValue.bulk(nil).isNil && RESPValue.array(nil).isNil && !RESPValue.bulk([]).isNil)
        #expect(RESPValue.array([.integer(1)]).elements == [.integer(1)])
        #expect(RESPValue.array([.bulk("a"), .integer(2), .bulk(nil)]).description == "[\"a\", :2, (nil)]")
    }
}
