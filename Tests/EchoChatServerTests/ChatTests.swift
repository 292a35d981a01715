import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// Chat mode (PROTOCOL.md §3) end to end, against every strategy.
@Suite("Chat mode", .ownThreads)
struct ChatTests {
    @Test(arguments: Strategy.tested)
    func welcomeJoinAndBroadcast(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: strategy)
        let alice = try server.connect()
        #expect(try alice.readLine() == "* welcome guest1, you are in #lobby (1 here); /help lists commands")
        let bob = try server.connect()
        #expect(try bob.readLine() == "* welcome guest2, you are in #lobby (2 here); /help lists commands")
        #expect(try alice.readLine() == "* guest2 joined #lobby")
        try alice.send("hello, bob\r\n")
        #expect(try bob.readLine() == "<guest1> hello, bob")
        #expect(try alice.syncWho() == "* #lobby: guest1, guest2 (2)")  // no echo to the sender
        try bob.send("//shrug\n")
        #expect(try alice.readLine() == "<guest2> /shrug")
    }

    @Test(arguments: Strategy.tested)
    func nickCommand(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: strategy)
        let (alice, _) = try server.joinChat()
        let (bob, _) = try server.joinChat()
        _ = try alice.readLine()  // bob joined
        try alice.send("/nick Alice\n")
        #expect(try alice.readLine() == "* you are now Alice")
        #expect(try bob.readLine() == "* guest1 is now Alice")
        try bob.send("/nick alice\n/nick bad!name\n/nick\n/nick a b\n")
        #expect(try bob.readLines(4) == [
            "! nick taken: alice", "! invalid nick: bad!name", "! usage: /nick NAME", "! usage: /nick NAME",
        ])
        try alice.send("/NICK alice\n/nick alice\n")
        #expect(try alice.readLines(2) == ["* you are now alice", "* you are now alice"])
        #expect(try bob.readLine() == "* Alice is now alice")  // only the case changed; then no change at all
        #expect(try bob.syncWho() == "* #lobby: alice, guest2 (2)")
        // guest1 was freed when alice renamed herself: it is handed out again.
        let (_, carolNick) = try server.joinChat()
        #expect(carolNick == "guest1")
    }

    @Test(arguments: Strategy.tested)
    func joinWhoAndRooms(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: strategy)
        let (alice, _) = try server.joinChat()
        let (bob, _) = try server.joinChat()
        _ = try alice.readLine()
        try alice.send("/join #Dev\n")
        #expect(try alice.readLine() == "* you joined #Dev (1 here)")
        #expect(try bob.readLine() == "* guest1 left #lobby")
        try bob.send("/join dev\n")
        #expect(try bob.readLine() == "* you joined #Dev (2 here)")  // the creator's spelling
        #expect(try alice.readLine() == "* guest2 joined #Dev")
        try bob.send("/join DEV\n/join #bad.room\n/join\n/join a b\n")
        #expect(try bob.readLines(4) == [
            "* you are already in #Dev", "! invalid room: #bad.room", "! usage: /join ROOM", "! usage: /join ROOM",
        ])
        try bob.send("/rooms\n")
        #expect(try bob.readLine() == "* rooms: #Dev (2)")  // #lobby emptied and disappeared
        let (carol, _) = try server.joinChat()
        try carol.send("/nick Zed\n/join b\n")
        _ = try carol.readLines(2)
        let (dave, _) = try server.joinChat()
        try dave.send("/rooms\n")
        #expect(try dave.readLine() == "* rooms: #b (1), #Dev (2), #lobby (1)")
        try alice.send("/nick zoe\n")
        _ = try alice.readLine()
        _ = try bob.readLine()
        #expect(try bob.syncWho() == "* #Dev: guest2, zoe (2)")
    }

    @Test(arguments: Strategy.tested)
    func privateMessages(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: strategy)
        let (alice, _) = try server.joinChat()
        let (bob, _) = try server.joinChat()
        _ = try alice.readLine()
        try bob.send("/nick Bob\n/join elsewhere\n")
        _ = try bob.readLines(2)
        _ = try alice.readLines(2)  // renamed, left
        try alice.send("/msg bOB   psst:  two  spaces kept \n")
        #expect(try bob.readLine() == "[pm from guest1] psst:  two  spaces kept ")
        #expect(try alice.readLine() == "* sent to Bob")
        try alice.send("/msg nobody hi\n/msg Bob\n/msg\n")
        #expect(try alice.readLines(3) == ["! no such nick: nobody", "! usage: /msg NICK text", "! usage: /msg NICK text"])
    }

    @Test(arguments: Strategy.tested)
    func statsHelpAndUnknownCommands(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: strategy)
        let (alice, _) = try server.joinChat()
        try alice.send("/stats\n")
        let stats = try parseStats(try alice.readLine())
        for key in ["mode", "strategy", "clients", "rooms", "uptime_s", "connections_total", "refused",
                    "messages_in", "messages_out", "bytes_in", "bytes_out"] {
            #expect(stats[key] != nil, "missing \(key)")
        }
        #expect(stats["mode"] == "chat")
        #expect(stats["strategy"] == strategy.rawValue)
        #expect(stats["clients"] == "1")
        #expect(stats["rooms"] == "1")
        #expect(stats["connections_total"] == "1")
        #expect(stats["messages_in"] == "1")
        #expect(Int(stats["bytes_in"] ?? "") == 7)
        switch strategy {
        case .pool:
            #expect(stats["workers"] == "4")
            #expect(Int(stats["queue_depth"] ?? "") != nil)
        case .thread:
            #expect(stats["threads"] == "1")
        case .reactors:
            #expect(stats["loops"] == "3")
            #expect((0..<3).compactMap { Int(stats["loop\($0)_connections"] ?? "") }.reduce(0, +) == 1)
        case .epoll, .async:
            break
        }
        try alice.send("/help\n")
        let help = try alice.readLines(until: { $0 == "* end of help" })
        for command in ["/nick", "/join", "/who", "/rooms", "/msg", "/stats", "/help", "/quit"] {
            #expect(help.contains { $0.hasPrefix("* ") && $0.contains(command) }, "help lacks \(command)")
        }
        try alice.send("/Frobnicate now\n/\n")
        #expect(try alice.readLines(2) == ["! unknown command: /Frobnicate (try /help)", "! unknown command: / (try /help)"])
    }

    @Test(arguments: Strategy.tested)
    func leavingReasons(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: strategy)
        let (watcher, _) = try server.joinChat()
        func joinAndLeave(_ leave: (TestClient) throws -> Void) throws -> String {
            let (client, nick) = try server.joinChat()
            #expect(try watcher.readLine() == "* \(nick) joined #lobby")
            try leave(client)
            return try watcher.readLine().replacingOccurrences(of: nick, with: "NICK")
        }
        let quitWithReason = try joinAndLeave { client in
            try client.send("/quit gone fishing\n")
            #expect(try client.readLine() == "* bye")
            #expect(try client.isClosedByServer())
        }
        #expect(quitWithReason == "* NICK left #lobby (gone fishing)")
        let quit = try joinAndLeave { client in
            try client.send("/quit\n")
            #expect(try client.readLine() == "* bye")
        }
        #expect(quit == "* NICK left #lobby")
        #expect(try joinAndLeave { $0.close() } == "* NICK left #lobby")
        #expect(try joinAndLeave { try $0.reset() } == "* NICK left #lobby (connection error)")
    }

    @Test(arguments: Strategy.tested)
    func linesAfterQuitAreIgnored(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: strategy)
        let (watcher, _) = try server.joinChat()
        let (client, nick) = try server.joinChat()
        _ = try watcher.readLine()
        try client.send("/quit\nthis is never delivered\n")
        #expect(try client.readLine() == "* bye")
        #expect(try client.isClosedByServer())
        #expect(try watcher.readLine() == "* \(nick) left #lobby")
        #expect(try watcher.syncWho() == "* #lobby: guest1 (1)")
    }

    @Test(arguments: Strategy.tested)
    func halfCloseHandlesEveryLineThenLeaves(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: strategy)
        let (watcher, _) = try server.joinChat()
        let (client, nick) = try server.joinChat()
        _ = try watcher.readLine()
        try client.send("first\n/who\nunterminated last line")
        client.shutdownWrite()
        #expect(try client.readLine() == "* #lobby: guest1, guest2 (2)")
        #expect(try client.isClosedByServer())
        #expect(try watcher.readLines(3) == [
            "<\(nick)> first", "<\(nick)> unterminated last line", "* \(nick) left #lobby",
        ])
    }

    @Test(arguments: Strategy.tested)
    func lineTooLongIsRefusedAndDiscarded(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat", "--max-line", "16"], strategy: strategy)
        let (watcher, _) = try server.joinChat()
        let (client, nick) = try server.joinChat()
        _ = try watcher.readLine()
        try client.send("exactly 16 bytes\r\n")
        #expect(try watcher.readLine() == "<\(nick)> exactly 16 bytes")
        try client.send("seventeen bytes!!")
        #expect(try client.readLine() == "! line too long (max 16 bytes)")
        try client.send(" and more of the same line that is discarded\nafter\n")
        #expect(try watcher.readLine() == "<\(nick)> after")
        #expect(try client.syncWho() == "* #lobby: guest1, guest2 (2)")  // error sent once; still connected
    }

    @Test(arguments: Strategy.tested)
    func inputHygiene(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: strategy)
        let (watcher, _) = try server.joinChat()
        let (client, nick) = try server.joinChat()
        _ = try watcher.readLine()
        // ESC, BEL, DEL, a C1 control (U+009B), invalid UTF-8, then blank lines.
        try client.send([0x1B] + Array("[31mred".utf8) + [0x07, 0x7F, 0xC2, 0x9B, 0xFF, 0x41, 0x0A])
        try client.send(" \t \n\n\u{7}\n")
        #expect(try watcher.readLine() == "<\(nick)> [31mred\u{FFFD}A")
        #expect(try watcher.syncWho() == "* #lobby: guest1, guest2 (2)")  // blank lines were ignored
    }

    // Skipped without netcat-openbsd; a failure under CI=true.
    @Test(.requires(.nc), arguments: Strategy.tested)
    func netcatJoinsTheChat(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: strategy)
        let (watcher, _) = try server.joinChat()
        let output = try runNetcat(port: server.port, input: "/nick ncuser\nhello from nc\n/who\n")
        #expect(output == """
            * welcome guest2, you are in #lobby (2 here); /help lists commands
            * you are now ncuser
            * #lobby: guest1, ncuser (2)

            """)
        #expect(try watcher.readLines(4) == [
            "* guest2 joined #lobby", "* guest2 is now ncuser", "<ncuser> hello from nc", "* ncuser left #lobby",
        ])
    }
}
