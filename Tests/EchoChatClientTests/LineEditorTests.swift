import EchoChatClient
import Testing

@Suite("Line editor")
struct LineEditorTests {
    /// An editor after `keys`, and the outcome of the last one.
    private func edit(_ keys: [Key], _ editor: inout LineEditor) -> LineEditor.Outcome {
        var last = LineEditor.Outcome.unchanged
        for key in keys { last = editor.apply(key) }
        return last
    }

    private func editor(after keys: [Key]) -> LineEditor {
        var editor = LineEditor(prompt: "> ")
        _ = edit(keys, &editor)
        return editor
    }

    @Test func insertsAtTheCursor() {
        let editor = editor(after: [.text("helo"), .left, .text("l"), .end, .text("!")])
        #expect(editor.text == "hello!")
        #expect(editor.cursor == 6)
    }

    @Test func backspaceAndDeleteTakeWholeCharacters() {
        // é as e + combining acute, typed in two reads; a flag is two scalars.
        var editor = editor(after: [.text("cafe"), .text("\u{301}"), .text("🇫🇷")])
        #expect(editor.characters.count == 5)
        #expect(editor.apply(.backspace) == .changed)
        #expect(editor.text == "café")
        #expect(editor.apply(.backspace) == .changed)
        #expect(editor.text == "caf")
        _ = edit([.home, .delete], &editor)
        #expect(editor.text == "af")
        #expect(editor.cursor == 0)
        #expect(editor.apply(.backspace) == .unchanged)
    }

    @Test func movementStopsAtTheEnds() {
        var editor = editor(after: [.text("ab")])
        #expect(editor.apply(.right) == .unchanged)
        #expect(editor.apply(.end) == .unchanged)
        #expect(editor.apply(.delete) == .unchanged)
        #expect(edit([.left, .left], &editor) == .changed)
        #expect(editor.apply(.left) == .unchanged)
        #expect(editor.apply(.home) == .unchanged)
        #expect(editor.apply(.end) == .changed)
        #expect(editor.cursor == 2)
    }

    @Test func killKeys() {
        var editor = editor(after: [.text("say hello  world"), .wordLeft, .deleteToEnd])
        #expect(editor.text == "say hello  ")
        #expect(editor.apply(.deleteWordBackward) == .changed)
        #expect(editor.text == "say ")
        _ = edit([.text("there"), .left, .left, .deleteToStart], &editor)
        #expect(editor.text == "re")
        #expect(editor.cursor == 0)
        #expect(editor.apply(.deleteToStart) == .unchanged)
        #expect(editor.apply(.deleteWordBackward) == .unchanged)
    }

    @Test func wordMoves() {
        var editor = editor(after: [.text("one  two three")])
        _ = edit([.wordLeft], &editor)
        #expect(editor.cursor == 9)
        _ = edit([.wordLeft, .wordLeft], &editor)
        #expect(editor.cursor == 0)
        #expect(editor.apply(.wordLeft) == .unchanged)
        _ = edit([.wordRight], &editor)
        #expect(editor.cursor == 3)
        _ = edit([.wordRight], &editor)
        #expect(editor.cursor == 8)
    }

    @Test func controlDEndsInputOnlyOnAnEmptyLine() {
        var editor = editor(after: [.text("ab"), .home])
        #expect(editor.apply(.controlD) == .changed)
        #expect(editor.text == "b")
        _ = edit([.end], &editor)
        #expect(editor.apply(.controlD) == .unchanged)
        _ = edit([.backspace], &editor)
        #expect(editor.apply(.controlD) == .endOfInput)
    }

    @Test func enterSubmitsAndEmpties() {
        var editor = editor(after: [.text("hi there"), .home])
        #expect(editor.apply(.enter) == .submit("hi there"))
        #expect(editor.text == "")
        #expect(editor.cursor == 0)
        #expect(editor.apply(.enter) == .submit(""))
    }

    @Test func historyWalksBackAndReturnsToTheDraft() {
        var editor = editor(after: [.text("one"), .enter, .text("two"), .enter, .text("two"), .enter, .enter])
        _ = edit([.text("dra")], &editor)
        #expect(editor.apply(.down) == .unchanged)
        _ = edit([.up], &editor)
        #expect(editor.text == "two")
        #expect(editor.cursor == 3)
        _ = edit([.up], &editor)
        #expect(editor.text == "one")
        #expect(editor.apply(.up) == .unchanged)
        _ = edit([.down], &editor)
        #expect(editor.text == "two")
        _ = edit([.down], &editor)
        #expect(editor.text == "dra")
        #expect(editor.apply(.down) == .unchanged)
    }

    @Test func signalsAndScreenKeysPassThrough() {
        var editor = editor(after: [.text("x")])
        #expect(editor.apply(.interrupt) == .interrupt)
        #expect(editor.apply(.suspend) == .suspend)
        #expect(editor.apply(.clearScreen) == .clearScreen)
        #expect(editor.text == "x")
    }

    // MARK: - Drawing

    @Test func rendersPromptTextAndCursor() {
        var editor = editor(after: [.text("hello"), .left, .left])
        #expect(editor.render(width: 80) == "\r> hello\u{1B}[K\r\u{1B}[5C")
        #expect(editor.renderSubmitted("hello") == "\r> hello\u{1B}[K\r\n")
    }

    @Test func longLinesScrollSidewaysKeepingTheCursorInView() {
        // 12 columns: prompt 2, last column kept free, so 9 for text.
        var editor = editor(after: [.text("abcdefghijklmnop")])
        #expect(editor.render(width: 12) == "\r> ijklmnop\u{1B}[K\r\u{1B}[10C")
        _ = edit([.home], &editor)
        #expect(editor.render(width: 12) == "\r> abcdefghi\u{1B}[K\r\u{1B}[2C")
        // Moving right inside the window does not scroll it.
        _ = edit([.right, .right, .right], &editor)
        #expect(editor.render(width: 12) == "\r> abcdefghi\u{1B}[K\r\u{1B}[5C")
        // Deleting the tail brings hidden text back into view.
        _ = edit([.end], &editor)
        _ = editor.render(width: 12)
        _ = edit(Array(repeating: .backspace, count: 6), &editor)
        #expect(editor.text == "abcdefghij")
        #expect(editor.render(width: 12) == "\r> cdefghij\u{1B}[K\r\u{1B}[10C")
    }

    @Test func everyRenderFitsAndShowsTheCursor() {
        var generator = LCG(seed: 7)
        var editor = LineEditor(prompt: "> ")
        let keys: [Key] = [.text("a"), .text("日"), .text("word "), .left, .right, .home, .end, .backspace, .delete,
                           .wordLeft, .wordRight, .deleteWordBackward]
        for width in [6, 10, 23, 80] {
            for _ in 0..<400 {
                _ = editor.apply(keys[Int(generator.next() % UInt64(keys.count))])
                let drawn = editor.render(width: width)
                let shown = drawn.dropFirst().prefix { $0 != "\u{1B}" }
                #expect(LineEditor.columns(of: String(shown)) <= width - 1)
                let column = drawn.split(separator: "\r").last.flatMap { Int($0.dropFirst(2).dropLast()) } ?? 0
                #expect(column <= width - 2)
                // The text from the cursor on starts exactly where the cursor is drawn.
                let before = column - 2
                #expect(before >= 0)
                let visible = Array(shown.dropFirst(2))
                var used = 0
                var index = 0
                while index < visible.count && used < before {
                    used += LineEditor.columns(of: visible[index])
                    index += 1
                }
                #expect(used == before)
                if editor.cursor < editor.characters.count {
                    #expect(index < visible.count && visible[index] == editor.characters[editor.cursor])
                }
            }
        }
    }

    @Test(arguments: [("a", 1), ("é", 1), ("e\u{301}", 1), ("日", 2), ("한", 2), ("🎉", 2), ("❤️", 2), ("\u{301}", 0)])
    func columns(character: String, columns: Int) {
        #expect(LineEditor.columns(of: Character(character)) == columns)
    }

    @Test func wideCharactersPutTheCursorTwoColumnsOn() {
        var editor = editor(after: [.text("日本語")])
        #expect(editor.render(width: 80) == "\r> 日本語\u{1B}[K\r\u{1B}[8C")
    }
}

/// A small deterministic generator (64-bit LCG, Knuth's MMIX constants).
struct LCG: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return state >> 11 | state << 53
    }
}
