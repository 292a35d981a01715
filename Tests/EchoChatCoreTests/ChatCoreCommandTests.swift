import Testing

@testable import EchoChatCore

/// PROTOCOL.md §3.4: every command with valid and invalid arguments. Every
/// step runs on several cores fed in different chunkings (see `ChatHarness`).
@Suite("ChatCore commands")
struct ChatCoreCommandTests {
    // MARK: /nick

    @Test func nickRenamesAndTellsTheRoom() {
        let chat = ChatHarness()
        chat.connect(1, 2, 3)
        chat.say(3, "/join elsewhere")
        chat.mark()
        chat.say(1, "/nick alice")
        #expect(chat.lines(1) == ["* you are now alice"])
        #expect(chat.lines(2) == ["* guest1 is now alice"])
        #expect(chat.lines(3) == [], "only the renamer's room hears it")
        chat.mark()
        chat.say(1, "hi")
        #expect(chat.lines(2) == ["<alice> hi"])
    }

    @Test func nickToTheSameNickRepliesButTellsNoOne() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.say(1, "/nick alice")
        chat.mark()
        chat.say(1, "/nick alice")
        #expect(chat.lines(1) == ["* you are now alice"])
        #expect(chat.lines(2) == [])
    }

    @Test func nickMayChangeOnlyTheCaseOfYourOwnNick() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.say(1, "/nick alice")
        chat.mark()
        chat.say(1, "/nick ALICE")
        #expect(chat.lines(1) == ["* you are now ALICE"])
        #expect(chat.lines(2) == ["* alice is now ALICE"])
        // And a guest may do the same with its guest nick.
        chat.mark()
        chat.say(2, "/nick Guest2")
        #expect(chat.lines(2) == ["* you are now Guest2"])
        #expect(chat.lines(1) == ["* guest2 is now Guest2"])
    }

    @Test func nickTakenIgnoringCase() {
        let chat = ChatHarness()
        chat.connect(1, 2, 3)
        chat.say(1, "/nick alice")
        chat.mark()
        #expect(chat.reply(2, "/nick Alice") == ["! nick taken: Alice"])
        #expect(chat.reply(2, "/nick GUEST3") == ["! nick taken: GUEST3"])
        #expect(chat.lines(1) == [] && chat.lines(3) == [])
        // Nothing changed: guest2 is still guest2.
        #expect(chat.reply(2, "/who") == ["* #lobby: alice, guest2, guest3 (3)"])
    }

    @Test func aReleasedNickCanBeTaken() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.say(1, "/nick alice")
        #expect(chat.reply(2, "/nick guest1") == ["* you are now guest1"])
        chat.say(1, "/nick bob")
        #expect(chat.reply(2, "/nick Alice") == ["* you are now Alice"])
    }

    @Test(arguments: ["bad!", "é", String(repeating: "n", count: 33), "a.b", "#alice", "a\u{FFFD}", "ümlaut",
                      "semi;colon", "x+y"])
    func nickInvalid(name: String) {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        #expect(chat.reply(1, "/nick \(name)") == ["! invalid nick: \(name)"])
        #expect(chat.lines(2) == [])
        #expect(chat.reply(1, "/who") == ["* #lobby: guest1, guest2 (2)"])
    }

    @Test(arguments: [String(repeating: "n", count: 32), "a", "0", "_", "-", "Az09_-", "ZZ"])
    func nickValidEdges(name: String) {
        let chat = ChatHarness()
        chat.connect(1)
        #expect(chat.reply(1, "/nick \(name)") == ["* you are now \(name)"])
    }

    @Test(arguments: ["/nick", "/nick ", "/nick    ", "/nick a b", "/nick  a  b  "])
    func nickUsage(line: String) {
        let chat = ChatHarness()
        chat.connect(1)
        #expect(chat.reply(1, line) == ["! usage: /nick NAME"])
    }

    @Test func nickArgumentMaySitBetweenExtraSpaces() {
        let chat = ChatHarness()
        chat.connect(1)
        #expect(chat.reply(1, "/nick    alice   ") == ["* you are now alice"])
    }

    // MARK: /join

    @Test func joinWithAndWithoutHashIgnoringCaseInTheCreatorsSpelling() {
        let chat = ChatHarness()
        chat.connect(1, 2, 3)
        chat.mark()
        chat.say(1, "/join #Rust")
        #expect(chat.lines(1) == ["* you joined #Rust (1 here)"])
        #expect(chat.lines(2) == ["* guest1 left #lobby"])
        #expect(chat.lines(3) == ["* guest1 left #lobby"])
        chat.mark()
        chat.say(2, "/join rUST")
        #expect(chat.lines(2) == ["* you joined #Rust (2 here)"])
        #expect(chat.lines(1) == ["* guest2 joined #Rust"])
        #expect(chat.lines(3) == ["* guest2 left #lobby"])
        chat.mark()
        chat.say(1, "now in rust")
        #expect(chat.lines(2) == ["<guest1> now in rust"])
        #expect(chat.lines(3) == [])
    }

    @Test func joinTheRoomYouAreIn() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        #expect(chat.reply(1, "/join #lobby") == ["* you are already in #lobby"])
        #expect(chat.reply(1, "/join LOBBY") == ["* you are already in #lobby"])
        chat.say(1, "/join #Side")
        chat.mark()
        #expect(chat.reply(1, "/join #SIDE") == ["* you are already in #Side"])
        #expect(chat.reply(1, "/join side") == ["* you are already in #Side"])
        #expect(chat.lines(2) == [])
    }

    @Test(arguments: ["#", "##a", "bad!", "é", String(repeating: "r", count: 33), "#" + String(repeating: "r", count: 33),
                      "a.b", "a#", "#a#b"])
    func joinInvalid(room: String) {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        #expect(chat.reply(1, "/join \(room)") == ["! invalid room: \(room)"])
        #expect(chat.lines(2) == [])
        #expect(chat.reply(1, "/who") == ["* #lobby: guest1, guest2 (2)"])
    }

    @Test(arguments: [String(repeating: "r", count: 32), "#" + String(repeating: "r", count: 32), "x", "#x", "_-09AZaz"])
    func joinValidEdges(room: String) {
        let chat = ChatHarness()
        chat.connect(1)
        let shown = room.hasPrefix("#") ? room : "#" + room
        #expect(chat.reply(1, "/join \(room)") == ["* you joined \(shown) (1 here)"])
    }

    @Test(arguments: ["/join", "/join ", "/join    ", "/join a b", "/join #a #b"])
    func joinUsage(line: String) {
        let chat = ChatHarness()
        chat.connect(1)
        #expect(chat.reply(1, line) == ["! usage: /join ROOM"])
    }

    @Test func anEmptyRoomDisappearsAndIsCreatedAgain() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.say(1, "/join #Side")
        #expect(chat.core.roomCount == 2)
        chat.say(1, "/join lobby")
        #expect(chat.core.roomCount == 1)
        #expect(chat.reply(1, "/rooms") == ["* rooms: #lobby (2)"])
        // Created again, in the new creator's spelling.
        #expect(chat.reply(2, "/join SIDE") == ["* you joined #SIDE (1 here)"])
    }

    @Test func theLobbyDisappearsTooAndTheNextClientCreatesItAgain() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.say(1, "/join a")
        chat.say(2, "/join A")
        #expect(chat.reply(1, "/rooms") == ["* rooms: #a (2)"])
        #expect(chat.core.roomCount == 1)
        chat.mark()
        chat.connect(3)
        #expect(chat.lines(3) == ["* welcome guest3, you are in #lobby (1 here); /help lists commands"])
        #expect(chat.lines(1) == [] && chat.lines(2) == [], "nobody else is in the new #lobby")
        #expect(chat.reply(1, "/rooms") == ["* rooms: #a (2), #lobby (1)"])
    }

    @Test func aLobbyRecreatedByJoinKeepsItsCreatorsSpelling() {
        let chat = ChatHarness()
        chat.connect(1)
        chat.say(1, "/join x")
        #expect(chat.reply(1, "/join LOBBY") == ["* you joined #LOBBY (1 here)"])
        chat.mark()
        chat.connect(2)
        #expect(chat.lines(2) == ["* welcome guest2, you are in #LOBBY (2 here); /help lists commands"])
        #expect(chat.lines(1) == ["* guest2 joined #LOBBY"])
    }

    // MARK: /who and /rooms

    @Test func whoListsTheRoomSortedByLowercasedBytes() {
        let chat = ChatHarness()
        chat.connect(1, 2, 3, 4, 5, 6, 7)
        for (id, nick) in [(1, "Zed"), (2, "bob"), (3, "_x"), (4, "Alice"), (5, "-y"), (6, "9z")] {
            chat.say(id, "/nick \(nick)")
        }
        chat.say(7, "/join elsewhere")
        // Plain byte order would put "Alice" and "Zed" before "_x"; lower-cased it comes first.
        #expect(chat.reply(2, "/who") == ["* #lobby: -y, 9z, _x, Alice, bob, Zed (6)"])
        #expect(chat.reply(7, "/who") == ["* #elsewhere: guest7 (1)"])
    }

    @Test func whoRepliesOnlyToTheAsker() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.say(1, "/who")
        #expect(chat.lines(1) == ["* #lobby: guest1, guest2 (2)"])
        #expect(chat.lines(2) == [])
    }

    @Test func roomsListsEveryRoomSortedByLowercasedBytes() {
        let chat = ChatHarness()
        chat.connect(1, 2, 3, 4, 5, 6)
        chat.say(2, "/join Zulu")
        chat.say(3, "/join #beta")
        chat.say(4, "/join Alpha")
        chat.say(5, "/join _x")
        chat.say(6, "/join ALPHA")
        #expect(chat.reply(1, "/rooms") == ["* rooms: #_x (1), #Alpha (2), #beta (1), #lobby (1), #Zulu (1)"])
        #expect(chat.core.roomCount == 5)
    }

    // MARK: /msg

    @Test func msgReachesANickInAnyRoomIgnoringCase() {
        let chat = ChatHarness()
        chat.connect(1, 2, 3)
        chat.say(1, "/nick alice")
        chat.say(2, "/nick Bob")
        chat.say(2, "/join far")
        chat.mark()
        chat.say(1, "/msg bOB are you there?")
        #expect(chat.lines(2) == ["[pm from alice] are you there?"])
        #expect(chat.lines(1) == ["* sent to Bob"])
        #expect(chat.lines(3) == [])
        chat.mark()
        chat.say(2, "/MSG ALICE yes")
        #expect(chat.lines(1) == ["[pm from Bob] yes"])
        #expect(chat.lines(2) == ["* sent to alice"])
    }

    @Test(arguments: [
        ("/msg guest2 two  spaces  inside  ", "two  spaces  inside  "),
        ("/msg    guest2    leading spaces go", "leading spaces go"),
        ("/msg guest2 \ttab first", "\ttab first"),
        ("/msg guest2 //not a command", "//not a command"),
        ("/msg guest2 /quit", "/quit"),
        ("/msg guest2 héllo 😀", "héllo 😀"),
        ("/msg guest2 x", "x"),
    ])
    func msgKeepsTheTextByteForByte(line: String, text: String) {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.say(1, line)
        #expect(chat.lines(2) == ["[pm from guest1] \(text)"])
        #expect(chat.lines(1) == ["* sent to guest2"])
        #expect(chat.closed == [])
    }

    @Test func msgToAnUnknownNick() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        #expect(chat.reply(1, "/msg Nobody hello") == ["! no such nick: Nobody"])
        #expect(chat.reply(1, "/msg bad!nick hello") == ["! no such nick: bad!nick"])
        #expect(chat.lines(2) == [])
    }

    @Test(arguments: ["/msg", "/msg ", "/msg    ", "/msg guest2", "/msg guest2 ", "/msg guest2     "])
    func msgUsage(line: String) {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        #expect(chat.reply(1, line) == ["! usage: /msg NICK text"])
        #expect(chat.lines(2) == [])
    }

    // MARK: /stats

    @Test func statsReportsTheCoreAndTransportCounters() {
        let chat = ChatHarness()
        chat.connect(1)  // out: welcome
        chat.connect(2)  // out: welcome, joined
        chat.say(1, "hi")  // in 1, out 4
        // in 2 (this line), out 4 (the stats line itself is not yet counted)
        #expect(chat.reply(2, "/stats") == [
            "* stats: mode=chat strategy=recorder clients=2 rooms=1 uptime_s=12 connections_total=34 refused=5 "
                + "messages_in=2 messages_out=4 bytes_in=6789 bytes_out=10111 refused_per_address=0 workers=3 files=0 files_bytes=0"
        ])
        chat.say(1, "/join other")  // in 3, out 5 (stats) + left + you joined = 7
        chat.say(1, "")  // in 4: a blank line is a line received
        #expect(chat.reply(1, "/STATS") == [
            "* stats: mode=chat strategy=recorder clients=2 rooms=2 uptime_s=12 connections_total=34 refused=5 "
                + "messages_in=5 messages_out=7 bytes_in=6789 bytes_out=10111 refused_per_address=0 workers=3 files=0 files_bytes=0"
        ])
        #expect(chat.core.messagesIn == 5)
        #expect(chat.core.messagesOut == 8)
    }

    @Test func statsCountsLinesTooLongAsReceivedAndTheirReplyAsSent() {
        let chat = ChatHarness(maxLine: 4)
        chat.connect(1)
        chat.receive(1, "too long line\n")
        #expect(chat.core.messagesIn == 1)
        #expect(chat.core.messagesOut == 2)
    }

    @Test func statsRepliesOnlyToTheAsker() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.say(1, "/stats")
        #expect(chat.lines(1).count == 1)
        #expect(chat.lines(1).first?.hasPrefix("* stats: mode=chat strategy=recorder clients=2 rooms=1 ") == true)
        #expect(chat.lines(2) == [])
    }

    // MARK: /help

    @Test func helpListsEveryCommandAndEndsWithEndOfHelp() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        let help = chat.reply(1, "/help")
        #expect(help.count > 1)
        #expect(help.last == "* end of help")
        #expect(help.allSatisfy { $0.hasPrefix("* ") })
        for command in ["/nick", "/join", "/who", "/rooms", "/msg", "/stats", "/help", "/quit"] {
            #expect(help.contains { $0.contains(command + " ") }, "help does not list \(command)")
        }
        #expect(help.filter { $0 == "* end of help" }.count == 1)
        #expect(chat.lines(2) == [])
    }

    // MARK: /quit

    @Test func quitSaysByeThenCloses() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.say(1, "/quit")
        #expect(chat.actions == [
            .sent(ConnectionID(1), "* bye"),
            .sent(ConnectionID(2), "* guest1 left #lobby"),
            .closed(ConnectionID(1)),
        ])
        #expect(chat.core.clientCount == 1)
    }

    @Test(arguments: [
        ("/quit gone fishing", "* guest1 left #lobby (gone fishing)"),
        ("/quit    later", "* guest1 left #lobby (later)"),
        ("/QUIT bye", "* guest1 left #lobby (bye)"),
        ("/quit ", "* guest1 left #lobby"),
        ("/quit     ", "* guest1 left #lobby"),
    ])
    func quitWithAReason(line: String, notice: String) {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.say(1, line)
        #expect(chat.lines(1) == ["* bye"])
        #expect(chat.lines(2) == [notice])
        #expect(chat.closed == [1])
    }

    @Test func quitReleasesTheNickAndTheRoom() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.say(1, "/nick alice")
        chat.say(1, "/join solo")
        chat.say(1, "/quit")
        #expect(chat.reply(2, "/rooms") == ["* rooms: #lobby (1)"])
        #expect(chat.reply(2, "/nick alice") == ["* you are now alice"])
    }

    // MARK: Unknown commands and case

    @Test(arguments: [
        ("/frob", "/frob"),
        ("/frob with arguments", "/frob"),
        ("/FrOb", "/FrOb"),
        ("/", "/"),
        ("/ nick alice", "/"),
        ("/nickname alice", "/nickname"),
        ("/quitnow", "/quitnow"),
        ("/nick\talice", "/nick\talice"),
        ("/é", "/é"),
        ("/fr\u{1B}ob", "/frob"),
    ])
    func unknownCommandIsEchoedAsTyped(line: String, word: String) {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.mark()
        chat.say(1, line)
        #expect(chat.lines(1) == ["! unknown command: \(word) (try /help)"])
        #expect(chat.lines(2) == [])
        #expect(chat.closed == [])
    }

    @Test(arguments: [
        ("/NICK alice", ["* you are now alice"]),
        ("/Nick alice", ["* you are now alice"]),
        ("/JOIN a", ["* you joined #a (1 here)"]),
        ("/jOiN", ["! usage: /join ROOM"]),
        ("/WHO", ["* #lobby: guest1, guest2 (2)"]),
        ("/Rooms", ["* rooms: #lobby (2)"]),
        ("/MSG GUEST2 hi", ["* sent to guest2"]),
        ("/Msg", ["! usage: /msg NICK text"]),
        ("/QUIT", ["* bye"]),
    ])
    func commandNamesAreCaseInsensitive(line: String, reply: [String]) {
        let chat = ChatHarness()
        chat.connect(1, 2)
        #expect(chat.reply(1, line) == reply)
    }

    /// Case-insensitivity is ASCII-only: the Kelvin sign (U+212A) lower-cases
    /// to `k` in Unicode, but it is not a `K`.
    @Test func caseInsensitivityIsASCIIOnly() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.say(2, "/nick bok")
        chat.mark()
        #expect(chat.reply(1, "/nic\u{212A} x") == ["! unknown command: /nic\u{212A} (try /help)"])
        #expect(chat.reply(1, "/msg bo\u{212A} hi") == ["! no such nick: bo\u{212A}"])
        #expect(chat.lines(2) == [])
    }

    @Test func errorRepliesSpelledOut() {
        let chat = ChatHarness()
        chat.connect(1, 2)
        chat.say(2, "/nick bob")
        #expect(chat.reply(1, "/nick bad!") == ["! invalid nick: bad!"])
        #expect(chat.reply(1, "/nick BOB") == ["! nick taken: BOB"])
        #expect(chat.reply(1, "/join #") == ["! invalid room: #"])
        #expect(chat.reply(1, "/msg carol hi") == ["! no such nick: carol"])
        #expect(chat.reply(1, "/frob") == ["! unknown command: /frob (try /help)"])
        #expect(chat.reply(1, "/") == ["! unknown command: / (try /help)"])
        #expect(chat.reply(1, "/nick") == ["! usage: /nick NAME"])
        #expect(chat.reply(1, "/join") == ["! usage: /join ROOM"])
        #expect(chat.reply(1, "/msg") == ["! usage: /msg NICK text"])
    }

    @Test func helpIsCaseInsensitive() {
        let chat = ChatHarness()
        chat.connect(1)
        #expect(chat.reply(1, "/HELP").last == "* end of help")
    }
}
