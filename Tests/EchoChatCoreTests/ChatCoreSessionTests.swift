import Testing

@testable import EchoChatCore

/// PROTOCOL.md §3.3 (session), §3.1 through the core, disconnects and §4.
/// Every step runs on several cores at once, each fed in a different chunking
/// (whole, byte by byte, seeded random pieces), which must all agree.
@Suite("ChatCore session")
struct ChatCoreSessionTests {
    // MARK: Welcome and guest nicks

    @Test func welcomesTheFirstClientWithExactlyOneLine() {
        let chat = ChatHarness()
        chat.connect(1)
        #expect(chat.lines(1) == ["* welcome guest1, you are in #lobby (1 here); /help lists commands"])
        #expect(chat.core.clientCount == 1)
        #expect(chat.core.roomCount == 1)
    }

    @Test func countsTheNewcomerAndTellsTheRoom() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.connect(3)
        #expect(chat.lines(3) == ["* welcome guest3, you are in #lobby (3 here); /help lists commands"])
        #expect(chat.lines(1) == ["* guest3 joined #lobby"])
        #expect(chat.lines(2) == ["* guest3 joined #lobby"])
        // The welcome comes before the others hear about it.
        #expect(chat.actions.first == .sent(ConnectionID(3), "* welcome guest3, you are in #lobby (3 here); /help lists commands"))
    }

    @Test func numbersGuestsFromOne() {
        let chat = ChatHarness()
        chat.connect(10, 20, 30)
        #expect(chat.lines(10).first == "* welcome guest1, you are in #lobby (1 here); /help lists commands")
        #expect(chat.lines(20).first == "* welcome guest2, you are in #lobby (2 here); /help lists commands")
        #expect(chat.lines(30).first == "* welcome guest3, you are in #lobby (3 here); /help lists commands")
    }

    /// The nick a fresh connection gets.
    private func nextGuest(_ chat: ChatHarness, id: Int, sourceLocation: SourceLocation = #_sourceLocation) -> String? {
        chat.mark()
        chat.connect(id, sourceLocation: sourceLocation)
        guard let welcome = chat.lines(id).first, welcome.hasPrefix("* welcome ") else { return nil }
        return String(welcome.dropFirst("* welcome ".count).prefix { $0 != "," })
    }

    @Test func reusesTheSmallestFreeGuestNumberAfterADisconnect() {
        let chat = ChatHarness()
        chat.connect(1, 2, 3, 4)
        chat.endOfInput(2)
        chat.disconnect(3, .connectionError)
        #expect(nextGuest(chat, id: 5) == "guest2")
        #expect(nextGuest(chat, id: 6) == "guest3")
        #expect(nextGuest(chat, id: 7) == "guest5")
        chat.say(1, "/quit")
        #expect(nextGuest(chat, id: 8) == "guest1")
    }

    @Test func reusesAGuestNumberAfterItsHolderRenamesAway() {
        let chat = ChatHarness()
        chat.connect(1, 2, 3)
        chat.say(2, "/nick bob")
        #expect(nextGuest(chat, id: 4) == "guest2")
        #expect(nextGuest(chat, id: 5) == "guest4")
    }

    @Test func aUserNamedLikeAGuestBlocksThatNumberIgnoringCase() {
        let chat = ChatHarness()
        chat.connect(1)
        chat.say(1, "/nick Guest3")
        #expect(nextGuest(chat, id: 2) == "guest1")
        #expect(nextGuest(chat, id: 3) == "guest2")
        #expect(nextGuest(chat, id: 4) == "guest4")
        // Once Guest3 renames away, 3 is free again.
        chat.say(1, "/nick carol")
        #expect(nextGuest(chat, id: 5) == "guest3")
        // Taking a higher guest number by hand also blocks it, until released.
        chat.say(1, "/nick GUEST6")
        #expect(nextGuest(chat, id: 6) == "guest5")
        #expect(nextGuest(chat, id: 7) == "guest7")
        chat.endOfInput(1)
        #expect(nextGuest(chat, id: 8) == "guest6")
        #expect(nextGuest(chat, id: 9) == "guest8")
    }

    @Test func onlyAnEqualNickBlocksAGuestNumber() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.say(1, "/nick guest01")
        chat.say(2, "/nick guest1x")
        // "guest01" and "guest1x" are not "guest1" ignoring case.
        #expect(nextGuest(chat, id: 3) == "guest1")
    }

    @Test func aRenamedGuestKeepsItsNumberTakenByCaseOnlyChange() {
        let chat = ChatHarness()
        chat.connect(1)
        chat.say(1, "/nick GUEST1")
        #expect(nextGuest(chat, id: 2) == "guest2")
    }

    /// Random connects, disconnects and renames (to guest-like nicks in any
    /// case and to other names), checking every new guest nick against the
    /// rule itself: the smallest N >= 1 no connected nick equals ignoring case.
    @Test(arguments: [UInt64(5), 6])
    func guestNumbersFollowTheRuleUnderRandomChurn(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        let chat = ChatHarness()
        var nicks: [Int: String] = [:]  // connected id -> nick
        var nextID = 1
        func smallestFree() -> String {
            let taken = Set(nicks.values.map { $0.lowercased() })
            return "guest\((1...).first { !taken.contains("guest\($0)") }!)"
        }
        for _ in 0..<300 {
            let ids = nicks.keys.sorted()
            switch Int.random(in: 0..<10, using: &generator) {
            case 0..<4:
                let expected = smallestFree()
                let id = nextID
                nextID += 1
                #expect(nextGuest(chat, id: id) == expected)
                nicks[id] = expected
            case 4..<7 where !ids.isEmpty:
                let id = ids.randomElement(using: &generator)!
                let number = Int.random(in: 1...8, using: &generator)
                let name = Bool.random(using: &generator)
                    ? (Bool.random(using: &generator) ? "GUEST\(number)" : "Guest\(number)") : "name\(number)"
                let takenByOther = nicks.contains { $0.key != id && $0.value.lowercased() == name.lowercased() }
                let reply = chat.reply(id, "/nick \(name)")
                if takenByOther {
                    #expect(reply == ["! nick taken: \(name)"])
                } else {
                    #expect(reply == ["* you are now \(name)"])
                    nicks[id] = name
                }
            default:
                guard let id = ids.randomElement(using: &generator) else { continue }
                if Bool.random(using: &generator) { chat.endOfInput(id) } else { chat.say(id, "/quit") }
                nicks[id] = nil
            }
        }
        #expect(chat.core.clientCount == nicks.count)
    }

    // MARK: Messages

    @Test func broadcastsToTheRoomExceptTheSender() {
        let chat = ChatHarness()
        chat.connect(1, 2, 3)
        chat.mark()
        chat.say(1, "hello there")
        #expect(chat.lines(1) == [])
        #expect(chat.lines(2) == ["<guest1> hello there"])
        #expect(chat.lines(3) == ["<guest1> hello there"])
    }

    @Test func aMessageStaysInItsRoom() {
        let chat = ChatHarness()
        chat.connect(1, 2, 3)
        chat.say(3, "/join side")
        chat.mark()
        chat.say(1, "lobby only")
        chat.say(3, "side only")
        #expect(chat.lines(2) == ["<guest1> lobby only"])
        #expect(chat.lines(3) == [])
        #expect(chat.lines(1) == [])
    }

    @Test func keepsTheTextByteForByte() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.say(1, "  two  spaces\tand tab, héllo 😀  ")
        #expect(chat.lines(2) == ["<guest1>   two  spaces\tand tab, héllo 😀  "])
    }

    @Test(arguments: [("//shrug", "<guest1> /shrug"), ("//", "<guest1> /"), ("///x", "<guest1> //x"),
                      ("// /nick x", "<guest1> / /nick x")])
    func doubleSlashSendsAMessageStartingWithSlash(line: String, expected: String) {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.say(1, line)
        #expect(chat.lines(2) == [expected])
        #expect(chat.lines(1) == [])
    }

    @Test func aLineStartingWithASpaceIsAMessageNotACommand() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.say(1, " /quit")
        #expect(chat.lines(2) == ["<guest1>  /quit"])
        #expect(chat.closed == [])
    }

    @Test func handlesManyLinesInOneReceive() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.receive(1, "one\r\ntwo\n\nthree\n")
        #expect(chat.lines(2) == ["<guest1> one", "<guest1> two", "<guest1> three"])
    }

    @Test func holdsAPartialLineUntilItsLF() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.receive(1, "hel")
        #expect(chat.lines(2) == [])
        #expect(chat.hasPartialLine(1))
        chat.receive(1, "lo\r")
        #expect(chat.lines(2) == [])
        chat.receive(1, "\nwor")
        #expect(chat.lines(2) == ["<guest1> hello"])
        #expect(chat.hasPartialLine(1))
        chat.receive(1, "ld\n")
        #expect(chat.lines(2) == ["<guest1> hello", "<guest1> world"])
        #expect(!chat.hasPartialLine(1))
        #expect(!chat.hasPartialLine(99), "unknown connection")
    }

    // MARK: Hygiene through the core

    @Test(arguments: ["", " ", "\t", "  \t ", "\r", "\u{1B}", "\u{07}\u{07}", " \u{7F} ", "\u{85}", "\u{00}"])
    func ignoresLinesThatAreBlankAfterCleaning(line: String) {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.say(1, line)
        #expect(chat.actions == [])
        #expect(chat.core.messagesIn == 1, "a blank line is still a line received")
    }

    @Test func cleansLinesBeforeTheRoomSeesThem() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.say(1, "\u{1B}[31mred\u{1B}[0m a\rb \u{9B}2J")
        chat.receive(1, [0x78, 0xFF, 0xC3, 0x79, 0x00, 0x0A])
        #expect(chat.lines(2) == ["<guest1> [31mred[0m ab 2J", "<guest1> x\u{FFFD}\u{FFFD}y"])
    }

    @Test func cleansCommandsBeforeParsingThem() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.say(1, "/ni\u{1B}ck al\u{07}ice\r")
        #expect(chat.lines(1) == ["* you are now alice"])
        #expect(chat.lines(2) == ["* guest1 is now alice"])
    }

    // MARK: Line too long

    @Test(arguments: [1, 16, 4096])
    func repliesLineTooLongWithTheConfiguredMaxAndStaysOpen(maxLine: Int) {
        let chat = ChatHarness(maxLine: maxLine)
        chat.connect(1, 2)
        chat.mark()
        let next = String("next".prefix(maxLine))
        chat.receive(1, String(repeating: "x", count: maxLine + 1) + " more\n\(next)\n")
        #expect(chat.lines(1) == ["! line too long (max \(maxLine) bytes)"])
        #expect(chat.lines(2) == ["<guest1> \(next)"])
        #expect(chat.closed == [])
    }

    @Test func lineTooLongLiteral() {
        let chat = ChatHarness()
        chat.connect(1)
        #expect(chat.reply(1, String(repeating: "y", count: 5000)) == ["! line too long (max 4096 bytes)"])
    }

    @Test func aLineOfExactlyMaxLineGoesThrough() {
        let chat = ChatHarness(maxLine: 16)
        chat.connect(1, 2)
        chat.mark()
        let line = String(repeating: "z", count: 16)
        chat.receive(1, line + "\n" + line + "\r\n")
        #expect(chat.lines(1) == [])
        #expect(chat.lines(2) == ["<guest1> \(line)", "<guest1> \(line)"])
    }

    @Test func sendsLineTooLongOnceBeforeTheLFArrives() {
        let chat = ChatHarness(maxLine: 8)
        chat.connect(1, 2)
        chat.mark()
        chat.receive(1, "123456789")
        #expect(chat.lines(1) == ["! line too long (max 8 bytes)"])
        #expect(chat.hasPartialLine(1))
        chat.receive(1, String(repeating: "a", count: 1000))
        chat.receive(1, "still discarded\nkept\n")
        #expect(chat.lines(1) == ["! line too long (max 8 bytes)"])
        #expect(chat.lines(2) == ["<guest1> kept"])
    }

    // MARK: End of input (half-close)

    @Test func endOfInputProcessesTheUnterminatedLineThenLeavesThenCloses() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.receive(1, "first\nlast words")
        chat.endOfInput(1)
        #expect(chat.actions == [
            .sent(ConnectionID(2), "<guest1> first"),
            .sent(ConnectionID(2), "<guest1> last words"),
            .sent(ConnectionID(2), "* guest1 left #lobby"),
            .closed(ConnectionID(1)),
        ])
        #expect(chat.core.clientCount == 1)
    }

    @Test func endOfInputDeliversRepliesBeforeClosing() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.receive(1, "/who")
        chat.endOfInput(1)
        #expect(chat.actions == [
            .sent(ConnectionID(1), "* #lobby: guest1, guest2 (2)"),
            .sent(ConnectionID(2), "* guest1 left #lobby"),
            .closed(ConnectionID(1)),
        ])
    }

    @Test func endOfInputAfterAnUnterminatedQuitLeavesOnce() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.receive(1, "/quit see you")
        chat.endOfInput(1)
        #expect(chat.actions == [
            .sent(ConnectionID(1), "* bye"),
            .sent(ConnectionID(2), "* guest1 left #lobby (see you)"),
            .closed(ConnectionID(1)),
        ])
    }

    @Test func endOfInputDoesNotDeliverTheRestOfADiscardedLine() {
        let chat = ChatHarness(maxLine: 8)
        chat.connect(1, 2)
        chat.mark()
        chat.receive(1, "0123456789abcdef")
        chat.endOfInput(1)
        #expect(chat.lines(1) == ["! line too long (max 8 bytes)"])
        #expect(chat.lines(2) == ["* guest1 left #lobby"])
        #expect(chat.closed == [1])
    }

    @Test func endOfInputWithABlankLastLineJustLeaves() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.receive(1, "  ")
        chat.endOfInput(1)
        #expect(chat.actions == [.sent(ConnectionID(2), "* guest1 left #lobby"), .closed(ConnectionID(1))])
    }

    @Test func endOfInputOfTheLastClientRemovesTheRoom() {
        let chat = ChatHarness()
        chat.connect(1)
        chat.mark()
        chat.endOfInput(1)
        #expect(chat.actions == [.closed(ConnectionID(1))])
        #expect(chat.core.clientCount == 0)
        #expect(chat.core.roomCount == 0)
    }

    // MARK: /quit

    @Test func linesAfterQuitInTheSameReceiveAreIgnored() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.receive(1, "before\n/quit\nafter\n/nick ghost\npartial")
        #expect(chat.actions == [
            .sent(ConnectionID(2), "<guest1> before"),
            .sent(ConnectionID(1), "* bye"),
            .sent(ConnectionID(2), "* guest1 left #lobby"),
            .closed(ConnectionID(1)),
        ])
        chat.mark()
        chat.receive(1, "late\n")
        chat.endOfInput(1)
        chat.disconnect(1, .connectionError)
        #expect(chat.actions == [], "a closed connection is forgotten")
    }

    @Test func aReusedConnectionIDStartsFresh() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.receive(1, "half a li")
        chat.disconnect(1, .connectionError)
        chat.connect(1)
        chat.mark()
        chat.say(1, "new line")
        #expect(chat.lines(2) == ["<guest1> new line"])
    }

    // MARK: Disconnect reasons

    @Test(arguments: [
        (DisconnectReason.connectionError, [String](), "* guest1 left #lobby (connection error)"),
        (.idleTimeout, ["* idle timeout"], "* guest1 left #lobby (idle timeout)"),
        (.lineTimeout, ["* line timeout"], "* guest1 left #lobby (line timeout)"),
        (.slowConsumer, [], "* guest1 left #lobby (slow consumer)"),
        (.endOfInput, [], "* guest1 left #lobby"),
        (.quit(nil), [], "* guest1 left #lobby"),
        (.quit("gone fishing"), [], "* guest1 left #lobby (gone fishing)"),
    ])
    func disconnectTellsTheRoomWhy(reason: DisconnectReason, toClient: [String], toRoom: String) {
        let chat = ChatHarness()
        chat.connect(1, 2, 3)
        chat.mark()
        chat.disconnect(1, reason)
        #expect(chat.lines(1) == toClient)
        #expect(chat.lines(2) == [toRoom])
        #expect(chat.lines(3) == [toRoom])
        #expect(chat.closed == [1])
        // What the client is told comes before it is closed.
        let closeIndex = chat.actions.firstIndex(of: .closed(ConnectionID(1)))
        for line in toClient {
            #expect(chat.actions.firstIndex(of: .sent(ConnectionID(1), line))! < closeIndex!)
        }
        #expect(chat.core.clientCount == 2)
    }

    @Test func idleTimeoutIsSentBeforeTheClose() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.disconnect(1, .idleTimeout)
        #expect(chat.actions == [
            .sent(ConnectionID(1), "* idle timeout"),
            .sent(ConnectionID(2), "* guest1 left #lobby (idle timeout)"),
            .closed(ConnectionID(1)),
        ])
    }

    @Test func disconnectOfAnUnknownConnectionDoesNothing() {
        let chat = ChatHarness()
        chat.connect(1)
        chat.mark()
        chat.disconnect(7, .slowConsumer)
        chat.endOfInput(7)
        chat.receive(7, "hello\n")
        #expect(chat.actions == [])
        #expect(chat.core.messagesIn == 0)
    }

    @Test(arguments: [DisconnectReason.connectionError, .idleTimeout, .lineTimeout, .slowConsumer])
    func aDisconnectedClientIsForgotten(reason: DisconnectReason) {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.say(1, "/nick alice")
        chat.disconnect(1, reason)
        #expect(chat.reply(2, "/msg alice hi") == ["! no such nick: alice"])
        #expect(chat.reply(2, "/who") == ["* #lobby: guest2 (1)"])
    }

    @Test func disconnectReasonSuffixes() {
        #expect(DisconnectReason.endOfInput.suffix == "")
        #expect(DisconnectReason.quit(nil).suffix == "")
        #expect(DisconnectReason.quit("bye now").suffix == " (bye now)")
        #expect(DisconnectReason.connectionError.suffix == " (connection error)")
        #expect(DisconnectReason.idleTimeout.suffix == " (idle timeout)")
        #expect(DisconnectReason.lineTimeout.suffix == " (line timeout)")
        #expect(DisconnectReason.slowConsumer.suffix == " (slow consumer)")
    }

    // MARK: Shutdown

    @Test func shutdownTellsEveryoneClosesAllAndSendsNoLeftNotices() {
        let chat = ChatHarness()
        chat.connect(3, 1, 2)
        chat.say(2, "/join other")
        chat.receive(1, "unfinished")
        chat.mark()
        chat.shutdown()
        #expect(chat.lines(1) == ["* server shutting down"])
        #expect(chat.lines(2) == ["* server shutting down"])
        #expect(chat.lines(3) == ["* server shutting down"])
        #expect(Set(chat.closed) == [1, 2, 3])
        #expect(chat.closed.count == 3)
        #expect(!chat.actions.contains { if case .sent(_, let line) = $0 { line.contains(" left #") } else { false } })
        // Each connection's notice comes before its close.
        for id in [1, 2, 3] {
            let sent = chat.actions.firstIndex(of: .sent(ConnectionID(id), "* server shutting down"))!
            let closed = chat.actions.firstIndex(of: .closed(ConnectionID(id)))!
            #expect(sent < closed)
        }
        #expect(chat.core.clientCount == 0)
        #expect(chat.core.roomCount == 0)
    }

    @Test func afterShutdownTheCoreStartsOver() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.shutdown()
        chat.mark()
        chat.connect(5)
        #expect(chat.lines(5) == ["* welcome guest1, you are in #lobby (1 here); /help lists commands"])
    }
}
