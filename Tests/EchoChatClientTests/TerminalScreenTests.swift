import EchoChatClient
import Testing

@Suite("Terminal screen")
struct TerminalScreenTests {
    private func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test func anIncomingLineIsDrawnAboveThePromptAndTheInputIsRedrawn() {
        var screen = TerminalScreen(width: 80, colors: false)
        _ = screen.start()
        _ = screen.typed(bytes("hello"))
        #expect(screen.received(bytes("<bob> hi\n")) == "\r\u{1B}[K<bob> hi\r\n\r> hello\u{1B}[K\r\u{1B}[7C")
    }

    /// What a user sees, whole input or one byte at a time alike: the
    /// server's lines in order above, the half-typed line intact below with
    /// the cursor after it, and the finished line sent whole.
    @Test(arguments: [false, true])
    func typingSurvivesIncomingLines(byteByByte: Bool) {
        var screen = TerminalScreen(width: 40, colors: false)
        var drawn = screen.start()
        var actions: [TerminalScreen.Action] = []
        func type(_ text: String) {
            for chunk in byteByByte ? bytes(text).map({ [$0] }) : [bytes(text)] {
                let update = screen.typed(chunk)
                drawn += update.screen
                actions += update.actions
            }
        }
        func receive(_ text: String) {
            for chunk in byteByByte ? bytes(text).map({ [$0] }) : [bytes(text)] { drawn += screen.received(chunk) }
        }
        type("héllo wor")
        receive("* bob joined #lobby\n<bob> hi there\r\n")
        var model = ScreenModel(columns: 40, feeding: bytes(drawn))
        #expect(model.nonEmptyRows == ["* bob joined #lobby", "<bob> hi there", "> héllo wor"])
        #expect(model.cursorRow == "> héllo wor")
        #expect(model.column == 11)
        #expect(actions.isEmpty)

        type("ld\r")
        receive("<bob> bye\n")
        model = ScreenModel(columns: 40, feeding: bytes(drawn))
        #expect(model.nonEmptyRows == ["* bob joined #lobby", "<bob> hi there", "> héllo world", "<bob> bye", ">"])
        #expect(model.column == 2)
        #expect(actions == [.send(bytes("héllo world\n"))])
    }

    @Test func anUnfinishedServerLineWaitsForItsEnd() {
        var screen = TerminalScreen(width: 80, colors: false)
        #expect(screen.received(bytes("<bob> hal")) == "")
        #expect(screen.received(bytes("f\n")).hasPrefix("\r\u{1B}[K<bob> half\r\n"))
        _ = screen.received(bytes("no line end"))
        #expect(screen.finish("echochat: connection closed by server")
            == "\r\u{1B}[Kno line end\r\n\r\u{1B}[Kechochat: connection closed by server\r\n")
    }

    @Test func aServerCannotSendEscapeSequencesToTheTerminal() {
        var screen = TerminalScreen(width: 80, colors: false)
        let drawn = screen.received([0x1B] + bytes("[2Jred\u{07}\u{9B}31m ") + [0xFF] + bytes("\n"))
        #expect(drawn.hasPrefix("\r\u{1B}[K[2Jred31m \u{FFFD}\r\n"))
    }

    @Test func aLineWithNoEndIsShownOnceItIsTooLong() {
        var screen = TerminalScreen(width: 80, colors: false)
        let drawn = screen.received(Array(repeating: UInt8(ascii: "x"), count: TerminalScreen.maxPendingLine + 5))
        #expect(drawn.hasPrefix("\r\u{1B}[K" + String(repeating: "x", count: TerminalScreen.maxPendingLine) + "\r\n"))
        #expect(screen.finish(nil) == "\r\u{1B}[Kxxxxx\r\n\r\u{1B}[K")
    }

    @Test func controlDEndsInputAndThePromptGoes() {
        var screen = TerminalScreen(width: 80, colors: false)
        _ = screen.start()
        let update = screen.typed(bytes("\u{04}more"))
        #expect(update.actions == [.endInput])
        #expect(update.screen == "\r\u{1B}[K")
        #expect(!screen.inputOpen)
        #expect(screen.received(bytes("* bye\n")) == "\r\u{1B}[K* bye\r\n")
        #expect(screen.typed(bytes("x\r")) == ("", []))
    }

    @Test func controlCAndControlZStopTheBatch() {
        var screen = TerminalScreen(width: 80, colors: false)
        #expect(screen.typed(bytes("ab\u{03}cd\r")).actions == [.interrupt])
        #expect(screen.editor.text == "ab")
        #expect(screen.typed(bytes("\u{1A}x")).actions == [.suspend])
        #expect(screen.editor.text == "ab")
        #expect(screen.clearInput() == "\r\u{1B}[K")
        #expect(screen.redraw() == "\r> ab\u{1B}[K\r\u{1B}[4C")
    }

    @Test func severalLinesInOneKeyBatchAreSentInOrder() {
        var screen = TerminalScreen(width: 80, colors: false)
        let update = screen.typed(bytes("/nick al\u{7F}\u{7F}bo\r\r//shrug\r"))
        #expect(update.actions == [.send(bytes("/nick bo\n")), .send(bytes("\n")), .send(bytes("//shrug\n"))])
        let model = ScreenModel(columns: 80, feeding: bytes(update.screen))
        #expect(model.nonEmptyRows == ["> /nick bo", ">", "> //shrug", ">"])
    }

    @Test func clearScreenRedrawsThePrompt() {
        var screen = TerminalScreen(width: 80, colors: false)
        _ = screen.typed(bytes("abc"))
        #expect(screen.typed(bytes("\u{0C}")).screen == "\u{1B}[H\u{1B}[2J\r> abc\u{1B}[K\r\u{1B}[5C")
    }

    @Test func coloursOnlyWhenAsked() {
        var plain = TerminalScreen(width: 80, colors: false)
        var colored = TerminalScreen(width: 80, colors: true)
        let lines = bytes("<bob> hi\n[pm from bob] psst\n* notice\n! error\n")
        #expect(!containsColor(plain.received(lines)))
        let drawn = colored.received(lines)
        let bob = LineStyle.nickColor("bob")
        #expect(drawn.contains("<\u{1B}[\(bob)mbob\u{1B}[0m> hi"))
        #expect(drawn.contains("\u{1B}[35m[pm from \u{1B}[0m\u{1B}[\(bob)mbob\u{1B}[0m\u{1B}[35m]\u{1B}[0m psst"))
        #expect(drawn.contains("\u{1B}[36m* notice\u{1B}[0m"))
        #expect(drawn.contains("\u{1B}[1;31m! error\u{1B}[0m"))
        #expect(colored.finish("echochat: connection closed by server").contains(
            "\u{1B}[2mechochat: connection closed by server\u{1B}[0m"))
    }
}

@Suite("Server lines and colours")
struct LineStyleTests {
    @Test(arguments: [
        ("<alice> hello", ServerLine.roomMessage(nick: "alice", text: "hello")),
        ("<alice> <bob> hi> x", .roomMessage(nick: "alice", text: "<bob> hi> x")),
        ("[pm from bob] are you there?", .privateMessage(nick: "bob", text: "are you there?")),
        ("* bob joined #lobby", .notice("bob joined #lobby")),
        ("! nick taken: bob", .error("nick taken: bob")),
        ("<> empty nick", .other("<> empty nick")),
        ("<a b> spaced", .other("<a b> spaced")),
        ("<alice>no space", .other("<alice>no space")),
        ("[pm from ] x", .other("[pm from ] x")),
        ("*no space", .other("*no space")),
        ("hello", .other("hello")),
        ("", .other("")),
    ])
    func classification(line: String, kind: ServerLine) {
        #expect(ServerLine(line) == kind)
    }

    @Test func fnv1aMatchesTheReferenceVectors() {
        #expect(LineStyle.fnv1a(Array("".utf8)) == 0x811C_9DC5)
        #expect(LineStyle.fnv1a(Array("a".utf8)) == 0xE40C_292C)
        #expect(LineStyle.fnv1a(Array("foobar".utf8)) == 0xBF9C_F968)
    }

    @Test func nickColoursAreStableAndIgnoreCase() {
        // 0xBF9CF968 % 6 == 4: the same on every run and every machine
        // (Swift's hashValue would differ from one process to the next).
        #expect(LineStyle.nickColor("foobar") == LineStyle.nickPalette[4])
        #expect(LineStyle.nickColor("FooBar") == LineStyle.nickColor("foobar"))
        let colors = Set(["alice", "bob", "carol", "dave", "eve", "mallory", "trent", "peggy"].map(LineStyle.nickColor))
        #expect(colors.count >= 3)
        #expect(colors.isSubset(of: LineStyle.nickPalette))
    }

    @Test func withoutColoursLinesAreUnchanged() {
        let style = LineStyle(colors: false)
        for line in ["<bob> hi", "[pm from bob] x", "* n", "! e", "plain"] {
            #expect(style.render(line) == line)
        }
        #expect(style.renderClientLine("echochat: x") == "echochat: x")
    }
}
