import Testing

@testable import EchoChatCore

func clean(_ input: [UInt8]) -> [UInt8] { input.withUnsafeBytes { LineHygiene.clean($0) } }

/// The reference for §3.1 steps 2–3: Swift's own repair, then the controls out.
func referenceClean(_ input: [UInt8]) -> [UInt8] {
    var result: [UInt8] = []
    for scalar in String(decoding: input, as: UTF8.self).unicodeScalars {
        let value = scalar.value
        if (value < 0x20 && value != 0x09) || (0x7F...0x9F).contains(value) { continue }
        if separatorsAndBidi.contains(value) { continue }
        result += Array(String(scalar).utf8)
    }
    return result
}

let replacement: [UInt8] = [0xEF, 0xBF, 0xBD]  // U+FFFD

/// §3.1 step 3's list beyond the controls, spelled out as the spec does.
let separatorsAndBidi: Set<UInt32> = Set([0x2028, 0x2029, 0x061C, 0x200E, 0x200F])
    .union(0x202A...0x202E).union(0x2066...0x2069)

/// PROTOCOL.md §3.1 steps 2–4.
@Suite("LineHygiene")
struct LineHygieneTests {
    @Test func leavesCleanTextAlone() {
        #expect(clean(bytes("hello, world")) == bytes("hello, world"))
        #expect(clean(bytes("tab\tkept")) == bytes("tab\tkept"))
        #expect(clean(bytes("héllo wörld – 日本語 😀")) == bytes("héllo wörld – 日本語 😀"))
        #expect(clean([]) == [])
    }

    // MARK: UTF-8 repair

    /// One U+FFFD per maximal invalid subpart, spelled out.
    @Test(arguments: [
        ([0xFF], 1),  // never valid
        ([0x80], 1),  // lone continuation byte
        ([0x80, 0x80], 2),  // each lone continuation byte is its own subpart
        ([0xC3], 1),  // truncated 2-byte sequence
        ([0xE2, 0x82], 1),  // truncated 3-byte sequence: one subpart
        ([0xF0, 0x9F, 0x98], 1),  // truncated 4-byte sequence: one subpart
        ([0xC0, 0x80], 2),  // overlong: C0 is never valid, 80 is alone
        ([0xE0, 0x80, 0x80], 3),  // overlong 3-byte
        ([0xED, 0xA0, 0x80], 3),  // UTF-16 surrogate
        ([0xF4, 0x90, 0x80, 0x80], 4),  // above U+10FFFF
        ([0xF5, 0x80], 2),
    ] as [([UInt8], Int)])
    func replacesEachMaximalInvalidSubpart(input: [UInt8], replacements: Int) {
        let expected = Array([[UInt8]](repeating: replacement, count: replacements).joined())
        #expect(clean(input) == expected)
        #expect(clean(bytes("a") + input + bytes("b")) == bytes("a") + expected + bytes("b"))
        #expect(clean(input) == Array(String(decoding: input, as: UTF8.self).utf8))
    }

    @Test func keepsValidSequencesNextToInvalidOnes() {
        // "é" then a truncated "€" then "x".
        #expect(clean([0xC3, 0xA9, 0xE2, 0x82, 0x78]) == bytes("é\u{FFFD}x"))
        // A raw 0x85 byte is invalid UTF-8, not a C1 control: it becomes U+FFFD.
        #expect(clean([0x41, 0x85, 0x42]) == bytes("A\u{FFFD}B"))
    }

    @Test func matchesStringDecodingOnRandomBytes() {
        var generator = SeededGenerator(seed: 2024)
        for _ in 0..<2_000 {
            let count = Int.random(in: 0...24, using: &generator)
            // Bias towards the interesting bytes: controls, continuation and lead bytes.
            let pool: [UInt8] = [0x00, 0x09, 0x0A, 0x1B, 0x20, 0x41, 0x7F, 0x80, 0x85, 0x9F, 0xA0, 0xBF,
                                 0xC0, 0xC2, 0xC3, 0xDF, 0xE0, 0xE2, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF,
                                 0x80, 0xA8, 0xAA, 0xAE, 0xD8, 0x9C, 0x81, 0xA6]  // pieces of U+2028, U+202E, U+061C, U+2066
            let input = (0..<count).map { _ in
                Bool.random(using: &generator) ? pool.randomElement(using: &generator)! : UInt8.random(in: 0...255, using: &generator)
            }
            let cleaned = clean(input)
            #expect(cleaned == referenceClean(input), "input \(input)")
            #expect(String(validating: cleaned, as: UTF8.self) != nil, "output is not valid UTF-8: \(cleaned)")
        }
    }

    // MARK: Controls

    @Test(arguments: Array(UInt8(0x00)...UInt8(0x1F)).filter { $0 != 0x09 } + [0x7F])
    func removesC0AndDEL(control: UInt8) {
        #expect(clean([0x61, control, 0x62]) == bytes("ab"))
        #expect(clean([control]) == [])
        // The same inside a line that also has non-ASCII text (the slow path).
        #expect(clean(bytes("é") + [control] + bytes("ü")) == bytes("éü"))
        #expect(clean([control] + bytes("é")) == bytes("é"))
    }

    @Test func keepsTAB() {
        #expect(clean([0x09]) == [0x09])
        #expect(clean(bytes("é\tü")) == bytes("é\tü"))
    }

    @Test(arguments: UInt8(0x80)...UInt8(0x9F))
    func removesC1(second: UInt8) {
        // U+0080...U+009F are encoded C2 80 ... C2 9F.
        #expect(clean([0x61, 0xC2, second, 0x62]) == bytes("ab"))
    }

    @Test func keepsTheCharactersJustOutsideTheControlRanges() {
        #expect(clean(bytes(" ~")) == bytes(" ~"))  // U+0020, U+007E
        #expect(clean([0xC2, 0xA0]) == [0xC2, 0xA0])  // U+00A0 NO-BREAK SPACE
        #expect(clean(replacement) == replacement)  // U+FFFD stays
    }

    @Test func escapeSequencesLoseTheirESC() {
        #expect(clean(bytes("\u{1B}[31mred\u{1B}[0m")) == bytes("[31mred[0m"))
        #expect(clean(bytes("\u{1B}]0;title\u{07}x")) == bytes("]0;titlex"))
        #expect(clean(bytes("\u{1B}[2J\u{1B}[Hé")) == bytes("[2J[Hé"))
        // 8-bit CSI (U+009B) is a C1 control.
        #expect(clean(bytes("\u{9B}31mred")) == bytes("31mred"))
    }

    @Test(arguments: separatorsAndBidi.sorted())
    func removesSeparatorsAndBidiControls(value: UInt32) {
        let character = String(Unicode.Scalar(value)!)
        #expect(clean(bytes("a" + character + "b")) == bytes("ab"))
        #expect(clean(bytes("é" + character)) == bytes("é"))
    }

    @Test func rightToLeftOverrideCannotReverseTheTextAfterANick() {
        // U+202E RIGHT-TO-LEFT OVERRIDE, then U+2066 and U+2069 around text.
        #expect(clean(bytes("hi \u{202E}olleh\u{2066}x\u{2069}")) == bytes("hi ollehx"))
        // U+2028 LINE SEPARATOR would break the line in two on a screen.
        #expect(clean(bytes("one\u{2028}two\u{2029}three")) == bytes("onetwothree"))
    }

    @Test func keepsTheNeighboursOfTheBidiRanges() {
        for value: UInt32 in [0x061B, 0x061D, 0x200D, 0x2010, 0x2027, 0x202F, 0x2065, 0x206A] {
            let character = String(Unicode.Scalar(value)!)
            #expect(clean(bytes(character)) == bytes(character), "U+\(String(value, radix: 16))")
        }
    }

    @Test func removesCR() {
        #expect(clean(bytes("a\rb\r")) == bytes("ab"))
    }

    // MARK: Blank

    @Test(arguments: ["", " ", "\t", " \t  \t", String(repeating: " ", count: 100)])
    func blankLines(line: String) {
        #expect(LineHygiene.isBlank(bytes(line)))
    }

    @Test(arguments: ["a", " a", "a ", "\t.\t", "\u{A0}", "\u{FFFD}"])
    func nonBlankLines(line: String) {
        #expect(!LineHygiene.isBlank(bytes(line)))
    }
}
