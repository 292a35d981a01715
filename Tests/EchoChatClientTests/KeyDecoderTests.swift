import EchoChatClient
import Testing

@Suite("Key decoding")
struct KeyDecoderTests {
    private func decode(_ text: String) -> [Key] {
        var decoder = KeyDecoder()
        return decoder.decode(Array(text.utf8))
    }

    /// One byte per call: what a slow link or a split read delivers.
    private func decodeByteByByte(_ bytes: [UInt8]) -> [Key] {
        var decoder = KeyDecoder()
        return bytes.flatMap { decoder.decode([$0]) }
    }

    /// Consecutive `.text` keys joined, so whole and split input compare.
    private func joined(_ keys: [Key]) -> [Key] {
        var result: [Key] = []
        for key in keys {
            if case .text(let more) = key, case .text(let text)? = result.last {
                result[result.count - 1] = .text(text + more)
            } else {
                result.append(key)
            }
        }
        return result
    }

    @Test func typedTextIsOneRun() {
        #expect(decode("hello, world") == [.text("hello, world")])
    }

    @Test func utf8SplitAcrossReadsIsNeverBroken() {
        let text = "héllo 日本語 🎉 🇫🇷 e\u{301}"
        #expect(decode(text) == [.text(text)])
        #expect(joined(decodeByteByByte(Array(text.utf8))) == [.text(text)])
    }

    @Test func invalidUTF8AndC1ControlsAreDropped() {
        // Stray continuation, overlong NUL, an invalid lead byte, a sequence
        // cut short by ASCII, an encoded surrogate, U+0085 (NEL, a C1 control).
        let bytes: [UInt8] = [0x61, 0x80, 0xC0, 0x80, 0xFF, 0xC3, 0x28, 0xED, 0xA0, 0x80, 0xC2, 0x85, 0x62]
        #expect(decodeByteByByte(bytes) != [])
        #expect(joined(decodeByteByByte(bytes)) == [.text("a(b")])
        var decoder = KeyDecoder()
        #expect(decoder.decode(bytes) == [.text("a(b")])
    }

    @Test(arguments: [
        ("\u{1B}[A", Key.up), ("\u{1B}[B", .down), ("\u{1B}[C", .right), ("\u{1B}[D", .left),
        ("\u{1B}OA", .up), ("\u{1B}OD", .left),
        ("\u{1B}[H", .home), ("\u{1B}OH", .home), ("\u{1B}[1~", .home), ("\u{1B}[7~", .home),
        ("\u{1B}[F", .end), ("\u{1B}OF", .end), ("\u{1B}[4~", .end), ("\u{1B}[8~", .end),
        ("\u{1B}[3~", .delete),
        ("\u{1B}[1;5C", .wordRight), ("\u{1B}[1;5D", .wordLeft), ("\u{1B}[1;3D", .wordLeft),
        ("\u{1B}b", .wordLeft), ("\u{1B}f", .wordRight), ("\u{1B}\u{7F}", .deleteWordBackward),
        ("\u{7F}", .backspace), ("\u{08}", .backspace),
        ("\u{01}", .home), ("\u{05}", .end), ("\u{02}", .left), ("\u{06}", .right),
        ("\u{10}", .up), ("\u{0E}", .down),
        ("\u{15}", .deleteToStart), ("\u{0B}", .deleteToEnd), ("\u{17}", .deleteWordBackward),
        ("\u{03}", .interrupt), ("\u{04}", .controlD), ("\u{1A}", .suspend), ("\u{0C}", .clearScreen),
        ("\r", .enter), ("\n", .enter),
    ])
    func keys(sequence: String, key: Key) {
        #expect(decode("a" + sequence + "b") == [.text("a"), key, .text("b")])
        #expect(joined(decodeByteByByte(Array(("a" + sequence + "b").utf8))) == [.text("a"), key, .text("b")])
    }

    @Test func crLfIsOneEnterEvenAcrossReads() {
        #expect(decode("a\r\nb\r\rc\n\n") == [.text("a"), .enter, .text("b"), .enter, .enter, .text("c"), .enter, .enter])
        var decoder = KeyDecoder()
        #expect(decoder.decode(Array("x\r".utf8)) == [.text("x"), .enter])
        #expect(decoder.decode(Array("\ny".utf8)) == [.text("y")])
    }

    @Test func unknownSequencesVanishWhole() {
        // Bracketed paste markers, Ctrl-Up, F5, an over-long parameter list.
        let noise = "\u{1B}[200~" + "\u{1B}[1;5A" + "\u{1B}[15~" + "\u{1B}[" + String(repeating: "1;", count: 40) + "x"
        #expect(joined(decode("a" + noise + "b")) == [.text("ab")])
        #expect(joined(decodeByteByByte(Array(("a" + noise + "b").utf8))) == [.text("ab")])
    }

    @Test func loneEscapeThenAKeyCountsTheKey() {
        #expect(decode("\u{1B}x") == [.text("x")])
        #expect(decode("\u{1B}\u{1B}[D") == [.left])
    }

    @Test func tabIsASpaceAndOtherControlsVanish() {
        #expect(decode("a\tb\u{00}\u{07}\u{1C}\u{1F}c") == [.text("a bc")])
    }
}
