import EchoChatCore
import Glibc
import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Testing

/// One chat across three servers and one Redis (each test starts its own),
/// the three on different strategies.
@Suite("Cluster chat", .ownThreads, .requires(.redisServer))
struct ClusterChatTests {
    struct Cluster {
        let redis: RedisProcess
        let nodes: [ServerProcess]

        /// Three nodes `a`, `b`, `c` on `strategy` and the two after it.
        init(_ strategy: Strategy, timeout: Double = 3) throws {
            redis = try RedisProcess()
            var nodes: [ServerProcess] = []
            for (index, name) in ["a", "b", "c"].enumerated() {
                nodes.append(try ClusterTests.node(name, redis.url, strategy: ClusterTests.next(strategy, index), timeout: timeout))
            }
            self.nodes = nodes
            for node in nodes { try ClusterTests.waitForNodes(node, ["a", "b", "c"]) }
        }
    }

    /// Clusters that cover every strategy between them (each mixes three):
    /// thread, pool, reactors; and reactors, async, epoll. (Of those tested.)
    static var covering: [Strategy] {
        let pair = Strategy.tested.filter { $0 == .thread || $0 == .reactors }
        return pair.isEmpty ? Strategy.tested : pair
    }

    /// Sends `command` until its reply (the next line starting with
    /// `replyPrefix`) satisfies `done`: what another server did reaches
    /// this one a moment later. Each reply is an event; bounded.
    static func ask(
        _ client: TestClient, _ command: String, replyPrefix: String, until done: (String) -> Bool
    ) throws -> String {
        var reply = ""
        var asked = 0
        let deadline = Clock.monotonicNanoseconds() + 15_000_000_000
        while Clock.monotonicNanoseconds() < deadline {
            try client.send(command + "\n")
            asked += 1
            reply = try client.readLines(until: { $0.hasPrefix(replyPrefix) }).last!
            if done(reply) { return reply }
        }
        throw TestFailure("'\(command)' never got the reply expected in 15 s (\(asked) tries); the last was \(reply)")
    }

    /// The next line that is not a join, leave or rename notice.
    static func nextMessage(_ client: TestClient) throws -> String {
        while true {
            let line = try client.readLine()
            if line.hasSuffix(" joined #lobby") || line.contains(" left #lobby") {
                continue
            }
            return line
        }
    }

    @Test("rooms, nicks, /who, /rooms and /msg span the servers; a lost server's clients leave", arguments: Strategy.tested)
    func oneChat(strategy: Strategy) throws {
        let cluster = try Cluster(strategy)
        let (a, b, c) = (cluster.nodes[0], cluster.nodes[1], cluster.nodes[2])

        let (alice, first) = try a.joinChat()
        #expect(first == "guest1")
        // Guest numbers span the servers: b's first client is guest2 (its
        // claim follows a's in the stream, so b has heard of guest1 by then).
        let (bob, second) = try b.joinChat()
        #expect(second == "guest2")
        #expect(try bob.syncWho() == "* #lobby: guest1, guest2 (2)")
        #expect(try alice.readLine() == "* guest2 joined #lobby")
        try alice.send("/nick alice\n/join dev\n")
        #expect(try alice.readLines(until: { $0.hasPrefix("* you are now") }).last == "* you are now alice")
        #expect(try alice.readLine() == "* you joined #dev (1 here)")

        _ = try Self.ask(bob, "/rooms", replyPrefix: "* rooms: ", until: { $0.contains("#dev (1)") })
        try bob.send("/nick ALICE\n/nick bob\n/join DEV\n")
        #expect(try bob.readLine() == "! nick taken: ALICE")
        #expect(try bob.readLine() == "* you are now bob")
        #expect(try bob.readLine() == "* you joined #dev (2 here)")
        #expect(try alice.readLine() == "* bob joined #dev")

        let carol = try c.joinChat().client
        _ = try Self.ask(carol, "/rooms", replyPrefix: "* rooms: ", until: { $0.contains("#dev (2)") })
        try carol.send("/nick carol\n/join dev\n")
        #expect(try carol.readLine() == "* you are now carol")
        #expect(try carol.readLine() == "* you joined #dev (3 here)")
        #expect(try alice.readLine() == "* carol joined #dev")
        #expect(try bob.readLine() == "* carol joined #dev")

        try alice.send("hi all\n")
        #expect(try bob.readLine() == "<alice> hi all")
        #expect(try carol.readLine() == "<alice> hi all")
        #expect(try bob.syncWho() == "* #dev: alice, bob, carol (3)")
        try carol.send("/rooms\n/msg ALICE psst\n")
        #expect(try carol.readLine() == "* rooms: #dev (3)")
        #expect(try carol.readLine() == "* sent to alice")
        #expect(try alice.readLine() == "[pm from carol] psst")
        try bob.send("/msg nobody x\n/quit see you\n")
        #expect(try bob.readLine() == "! no such nick: nobody")
        #expect(try bob.readLine() == "* bye")
        #expect(try alice.readLine() == "* bob left #dev (see you)")
        #expect(try carol.readLine() == "* bob left #dev (see you)")

        // A node killed: its clients leave everywhere, their nicks are free again.
        #expect(c.signal(.kill))
        _ = try? c.waitForExit(timeout: 10)
        #expect(try alice.readLine() == "* carol left #dev (server lost)")
        try alice.send("/msg carol x\n/who\n")
        #expect(try alice.readLine() == "! no such nick: carol")
        #expect(try alice.readLine() == "* #dev: alice (1)")
        let dave = try b.joinChat().client
        // b hears of c's loss a moment after a may have.
        _ = try Self.ask(dave, "/rooms", replyPrefix: "* rooms: ", until: { $0.contains("#dev (1)") })
        try dave.send("/nick carol\n/join dev\n")
        #expect(try dave.readLine() == "* you are now carol")
        #expect(try dave.readLine() == "* you joined #dev (2 here)")
        #expect(try alice.readLine() == "* carol joined #dev")

        // A node stopped: its clients leave at once, everywhere, while its
        // own shutdown still waits (up to 2 s) for dave to close his side.
        let stopped = Clock.monotonicNanoseconds()
        #expect(b.signal(.terminate))
        #expect(try alice.readLine() == "* carol left #dev (server shutting down)")
        let goodbye = Double(Clock.monotonicNanoseconds() - stopped) / 1e9
        #expect(goodbye < 1, "the goodbye took \(goodbye) s")
        #expect(try b.waitForExit(timeout: 10) == 0)
        _ = dave
        try alice.send("/rooms\n")
        let rooms = try alice.readLines(until: { $0.hasPrefix("* rooms: ") }).last!
        #expect(rooms == "* rooms: #dev (1)", "rooms after b stopped: \(rooms)")
        #expect(try a.stop() == 0)
    }

    @Test("200 clients on three servers: every line reaches every other client once, in the order sent", arguments: Strategy.tested)
    func exactlyOnceInOrder(strategy: Strategy) throws {
        let cluster = try Cluster(strategy)
        let count = 200
        let lines = 5
        var clients: [TestClient] = []
        for index in 0..<count { clients.append(try cluster.nodes[index % 3].joinChat(timeout: 10).client) }
        // Everyone is known everywhere before anyone speaks.
        for node in 0..<3 {
            do {
                _ = try Self.ask(clients[node], "/who", replyPrefix: "* #lobby: ", until: { $0.hasSuffix("(\(count))") })
            } catch {
                throw TestFailure("\(error)\nlogs:\n" + cluster.nodes.map(\.log.text).joined(separator: "\n---\n"))
            }
        }
        for round in 0..<lines {
            for (index, client) in clients.enumerated() { try client.send("s\(index) \(round)\n") }
        }
        for (index, client) in clients.enumerated() {
            var next = [Int](repeating: 0, count: count)
            var received = 0
            while received < (count - 1) * lines {
                let line = try Self.nextMessage(client)
                guard line.hasPrefix("<"), let close = line.firstIndex(of: ">") else {
                    Issue.record("client \(index) got \(line)")
                    continue
                }
                let words = line[line.index(close, offsetBy: 2)...].split(separator: " ")
                guard words.count == 2, let sender = Int(words[0].dropFirst()), let round = Int(words[1]) else {
                    Issue.record("client \(index) got \(line)")
                    continue
                }
                #expect(sender != index, "client \(index) got its own line back")
                #expect(round == next[sender], "client \(index): from s\(sender) line \(round), expected \(next[sender])")
                next[sender] = round + 1
                received += 1
            }
            try client.send("/who\n")
            let rest = try client.readLines(until: { $0.hasPrefix("* #lobby: ") })
            #expect(rest.allSatisfy { !$0.hasPrefix("<") }, "client \(index) got more than it should: \(rest)")
        }
        for node in cluster.nodes { #expect(try node.stop() == 0) }
    }
}

extension ClusterChatTests {
    /// A server paused past `cluster-timeout` (SIGSTOP: a starved or
    /// suspended machine) is declared lost, its clients leave; resumed, it
    /// announces them again and they are back everywhere.
    @Test("a node paused past the timeout is lost, then comes back with its clients", arguments: Array(Strategy.tested.prefix(1)))
    func pausedNodeComesBack(strategy: Strategy) throws {
        let cluster = try Cluster(strategy, timeout: 2)
        let (a, b) = (cluster.nodes[0], cluster.nodes[1])
        let alice = try a.joinChat().client
        try alice.send("/nick alice\n")
        #expect(try alice.readLine() == "* you are now alice")
        let bob = try b.joinChat().client
        try bob.send("/nick bob\n")
        // (alice's rename may reach b just after bob's welcome: skip it)
        #expect(try bob.readLines(until: { $0.hasPrefix("* you are now") }).last == "* you are now bob")
        _ = try Self.ask(alice, "/who", replyPrefix: "* #lobby: ", until: { $0.contains("bob") })

        #expect(b.signal(Signal(rawValue: SIGSTOP)))
        #expect(try alice.readLines(until: { $0.hasPrefix("* bob left #lobby") }).last == "* bob left #lobby (server lost)")
        #expect(b.signal(Signal(rawValue: SIGCONT)))
        let who = try Self.ask(alice, "/who", replyPrefix: "* #lobby: ", until: { $0.contains("bob") })
        #expect(who.hasPrefix("* #lobby: alice, bob"), "\(who)")
        try bob.send("back\n")
        #expect(try Self.nextMessage(alice) == "<bob> back")
        for node in cluster.nodes { #expect(try node.stop() == 0) }
    }
}

extension ClusterChatTests {
    /// Redis restarted mid-chat: each server carries on alone (its clients
    /// told, its local chat going on), then the views merge, and a nick taken
    /// on both sides meanwhile stays with the client that took it first.
    @Test("Redis restarted mid-chat: alone meanwhile, then merged; a nick taken twice stays with the first", arguments: Strategy.tested)
    func outageAndMerge(strategy: Strategy) throws {
        let cluster = try Cluster(strategy)
        let (a, b) = (cluster.nodes[0], cluster.nodes[1])
        let first = try a.joinChat().client
        _ = try Self.ask(first, "/who", replyPrefix: "* #lobby: ", until: { $0.hasSuffix("(1)") })
        let second = try b.joinChat().client
        _ = try Self.ask(second, "/who", replyPrefix: "* #lobby: ", until: { $0.hasSuffix("(2)") })
        let neighbour = try b.joinChat().client

        try cluster.redis.kill()
        let lost = "* cluster link lost: only people on this server can hear you"
        #expect(try first.readLines(until: { $0.hasPrefix("* cluster link") }).last == lost)
        #expect(try second.readLines(until: { $0.hasPrefix("* cluster link") }).last == lost)
        #expect(try neighbour.readLines(until: { $0.hasPrefix("* cluster link") }).last == lost)
        // Alone: each server's /who has only its own clients, and both take "ann", a first.
        try first.send("/nick ann\n/who\n")
        #expect(try first.readLine() == "* you are now ann")
        #expect(try first.readLine() == "* #lobby: ann (1)")
        try second.send("/nick Ann\n")
        #expect(try second.readLine() == "* you are now Ann")
        #expect(try neighbour.readLines(until: { $0.contains(" is now Ann") }).last?.hasSuffix(" is now Ann") == true)
        try second.send("local only\n")
        #expect(try neighbour.readLine() == "<Ann> local only")

        try cluster.redis.restart()
        #expect(try first.readLines(until: { $0.hasPrefix("* cluster link") }).last == "* cluster link restored")
        #expect(try second.readLines(until: { $0.hasPrefix("* you are now guest") }).last?.hasSuffix(" (nick taken elsewhere)") == true)
        // (b's clients come back with their nicks, then the loser's rename follows.)
        let who = try Self.ask(first, "/who", replyPrefix: "* #lobby: ", until: { $0.hasSuffix("(3)") && !$0.contains("Ann") })
        #expect(who.hasPrefix("* #lobby: ann, guest"), "\(who)")
        try first.send("together again\n")
        #expect(try Self.nextMessage(second) == "<ann> together again")
        for node in cluster.nodes { #expect(try node.stop() == 0) }
    }
}

extension ClusterChatTests {
    /// The names of a `* #room: a, b (2)` reply, lower-cased.
    static func names(in who: String) -> [String] {
        guard let colon = who.firstIndex(of: ":"), let open = who.lastIndex(of: "(") else { return [] }
        return who[who.index(colon, offsetBy: 2)..<open].dropLast().split(separator: ", ").map { $0.lowercased() }
    }

    /// Nick claims are decided in the cluster's ordered stream (§6): clients
    /// on three servers asking for one nick at the same moment get one
    /// answer each, one of them the nick, and nobody is renamed afterwards.
    @Test(
        "six clients on three servers claim one nick at once, twenty times: one gets it, the others hear it is taken",
        arguments: Self.covering)
    func simultaneousClaims(strategy: Strategy) throws {
        let cluster = try Cluster(strategy)
        var clients: [TestClient] = []
        for index in 0..<6 { clients.append(try cluster.nodes[index % 3].joinChat().client) }
        // Everyone known everywhere.
        for client in clients.prefix(3) {
            _ = try Self.ask(client, "/who", replyPrefix: "* #lobby: ", until: { Set(Self.names(in: $0)).count == 6 })
        }
        for client in clients {
            try client.send("/who\n")
            _ = try client.readLines(until: { $0.hasPrefix("* #lobby: ") })
        }
        var renamed: [String] = []
        for round in 0..<20 {
            let nick = "Nick\(round)"
            for client in clients { try client.send("/nick \(nick)\n") }
            var winners = 0
            for client in clients {
                let lines = try client.readLines(until: { $0 == "* you are now \(nick)" || $0 == "! nick taken: \(nick)" })
                if lines.last!.hasPrefix("* you are now") { winners += 1 }
                renamed += lines.filter { $0.hasSuffix("(nick taken elsewhere)") }
            }
            #expect(winners == 1, "round \(round): \(winners) clients were given \(nick)")
        }
        #expect(renamed.isEmpty, "renamed after the fact: \(renamed)")
        // Every server lists the same six distinct nicks.
        var lists: Set<String> = []
        for client in clients.prefix(3) {
            try client.send("/who\n")
            lists.insert(try client.readLines(until: { $0.hasPrefix("* #lobby: ") }).last!)
        }
        #expect(lists.count == 1, "the servers disagree: \(lists)")
        #expect(Set(Self.names(in: lists.first!)).count == 6, "\(lists)")
        for node in cluster.nodes { #expect(try node.stop() == 0) }
    }
}

extension ClusterChatTests {
    /// Guest numbers are claimed in the ordered stream before the welcome
    /// (§6): clients connecting to three servers at the same moment are
    /// each welcomed with a number nobody else has, and nobody is renamed.
    @Test("thirty clients connect to three servers at once: thirty distinct guest numbers, no rename", arguments: Self.covering)
    func simultaneousWelcomes(strategy: Strategy) throws {
        let cluster = try Cluster(strategy)
        let count = 30
        // Connected first, all of them, then read: the welcomes race.
        var clients: [TestClient] = []
        for index in 0..<count { clients.append(try cluster.nodes[index % 3].connect()) }
        var guests: [String] = []
        var here: [Int] = []
        for client in clients {
            let welcome = try client.readLine()
            #expect(welcome.hasPrefix("* welcome guest"), "\(welcome)")
            let words = welcome.split(separator: " ")
            guests.append(String(words[2].dropLast()))
            here.append(Int(words[7].dropFirst()) ?? 0)  // "(K here);"
        }
        #expect(Set(guests) == Set((1...count).map { "guest\($0)" }), "\(guests.sorted())")
        // Each client hears of everyone its welcome did not count, joining,
        // and of nothing else (no rename); then every server lists the same
        // thirty.
        var lists: Set<String> = []
        for (index, client) in clients.enumerated() {
            var joins = 0
            while here[index] + joins < count {
                let line = try client.readLine()
                #expect(line.hasSuffix(" joined #lobby"), "client \(index) (\(guests[index])) got \(line)")
                joins += 1
            }
            lists.insert(try client.syncWho())
        }
        #expect(lists.count == 1, "the servers disagree: \(lists)")
        #expect(lists.first?.hasSuffix("(\(count))") == true, "\(lists)")
        for node in cluster.nodes { #expect(try node.stop() == 0) }
    }
}

extension ClusterChatTests {
    /// How many servers hear room `key`'s channel (Redis's own count).
    static func subscribers(_ redis: RedisTestClient, _ key: String) throws -> Int {
        Int(try redis.command(["PUBSUB", "NUMSUB", "echochat:room:" + key]).elements?.last?.integer ?? -1)
    }

    /// Waits (bounded) until `key`'s channel has `count` subscribers: an
    /// UNSUBSCRIBE leaves after the reply to the client that left.
    static func waitForSubscribers(_ redis: RedisTestClient, _ key: String, _ count: Int) throws -> Int {
        let deadline = Clock.monotonicNanoseconds() + 10_000_000_000
        var now = try subscribers(redis, key)
        while now != count && Clock.monotonicNanoseconds() < deadline {
            _ = try? Poll.readable([], timeoutMilliseconds: 20)
            now = try subscribers(redis, key)
        }
        return now
    }

    /// Lines said in a room travel on its own channel, which only the
    /// servers with members there hear; a join is answered once its
    /// server hears the room, so every line said from the join on reaches
    /// the newcomer.
    @Test("a room's lines reach only the servers with members there, and a newcomer from its join on", arguments: Self.covering)
    func roomChannels(strategy: Strategy) throws {
        let cluster = try Cluster(strategy)
        let redis = try cluster.redis.client()
        let (a, b, c) = (cluster.nodes[0], cluster.nodes[1], cluster.nodes[2])
        let ann = try a.joinChat().client
        let bob = try b.joinChat().client
        let cat = try c.joinChat().client
        _ = try Self.ask(cat, "/who", replyPrefix: "* #lobby: ", until: { Set(Self.names(in: $0)).count == 3 })
        #expect(try Self.subscribers(redis, "lobby") == 3)
        #expect(try Self.subscribers(redis, "dev") == 0)

        try ann.send("/nick ann\n/join dev\n")
        #expect(try ann.readLines(until: { $0.hasPrefix("* you joined") }).last == "* you joined #dev (1 here)")
        #expect(try Self.subscribers(redis, "dev") == 1, "a hears #dev once its client is in")
        // ann's join reaches b through Redis, up to a round trip after ann
        // was told (docs/cluster.md): wait until b counts her there.
        _ = try Self.ask(bob, "/rooms", replyPrefix: "* rooms: ", until: { $0.contains("#dev (1)") })
        try bob.send("/join dev\n")
        #expect(try bob.readLines(until: { $0.hasPrefix("* you joined") }).last == "* you joined #dev (2 here)")
        #expect(try Self.subscribers(redis, "dev") == 2)
        // ann answers bob's arrival at once: bob hears it.
        let arrival = try ann.readLines(until: { $0.hasSuffix(" joined #dev") }).last!
        let newcomer = String(arrival.split(separator: " ")[1])
        try ann.send("welcome \(newcomer)\n")
        #expect(try Self.nextMessage(bob) == "<ann> welcome \(newcomer)")
        // A burst in #dev: bob gets all of it, in order; c, with nobody there, none.
        for index in 0..<100 { try ann.send("line \(index)\n") }
        for index in 0..<100 { #expect(try Self.nextMessage(bob) == "<ann> line \(index)") }
        try cat.send("/who\n")
        #expect(try cat.readLines(until: { $0.hasPrefix("* #lobby: ") }).allSatisfy { !$0.hasPrefix("<") })

        // Redis restarted: each server hears its rooms again before it is back.
        try cluster.redis.restart()
        for client in [ann, bob] {
            #expect(try client.readLines(until: { $0 == "* cluster link restored" }).last == "* cluster link restored")
        }
        #expect(try Self.subscribers(cluster.redis.client(), "dev") == 2)
        // (Merged once b knows ann again: a line from a client b has not
        // heard announced yet cannot be shown.)
        _ = try Self.ask(bob, "/who", replyPrefix: "* #dev: ", until: { $0.contains("ann") })
        try ann.send("back\n")
        #expect(try Self.nextMessage(bob) == "<ann> back")

        // bob leaves #dev: b stops hearing it.
        try bob.send("/join lobby\n")
        _ = try bob.readLines(until: { $0.hasPrefix("* you joined") })
        #expect(try Self.waitForSubscribers(cluster.redis.client(), "dev", 1) == 1)
        _ = try Self.ask(ann, "/who", replyPrefix: "* #dev: ", until: { $0 == "* #dev: ann (1)" })
        for node in cluster.nodes { #expect(try node.stop() == 0) }
    }

    /// What a client is told holds on every server at once: after
    /// `* you joined`, another server's `/rooms` counts it; once a client
    /// that left (`/quit`, end of input) sees its connection closed, another
    /// server's `/who` no longer lists it and its nick can be taken there.
    /// Asked once each, without retries. Before joins and closes waited for
    /// their events, 11 to 23 of 30 such checks failed here; with those
    /// waits but without the read barrier (`eventsPending`), 0 to 2 on a
    /// quiet machine and 9 under the suite's load; with both, none so far.
    /// One miss is allowed: it rests on Redis writing the event to every
    /// server in one pass, which a starved machine could stretch.
    @Test("after a join is told or a leaver's close, every server agrees at once", arguments: Self.covering)
    func toldMeansEverywhere(strategy: Strategy) throws {
        let redis = try RedisProcess()
        let a = try ClusterTests.node("a", redis.url, strategy: strategy)
        let b = try ClusterTests.node("b", redis.url, strategy: ClusterTests.next(strategy, 1))
        for node in [a, b] { try ClusterTests.waitForNodes(node, ["a", "b"]) }
        let watcher = try b.joinChat().client
        let mover = try a.joinChat().client
        let rounds = isSanitized ? 10 : 30  // (sanitized runs check the same paths; CI's time is short)
        var joinsMissed = 0
        for round in 0..<rounds {
            try mover.send("/join r\(round)\n")
            #expect(try mover.readLines(until: { $0.hasPrefix("* you joined") }).last == "* you joined #r\(round) (1 here)")
            try watcher.send("/rooms\n")
            if !(try watcher.readLines(until: { $0.hasPrefix("* rooms: ") }).last!.contains("#r\(round) (1)")) { joinsMissed += 1 }
        }
        var leaversListed = 0
        for round in 0..<rounds {
            let (leaver, nick) = try a.joinChat()
            if round % 2 == 0 { try leaver.send("/quit\n") } else { leaver.shutdownWrite() }
            _ = try leaver.readToEnd()
            try watcher.send("/who\n")
            if Self.names(in: try watcher.readLines(until: { $0.hasPrefix("* #lobby: ") }).last!).contains(nick.lowercased()) {
                leaversListed += 1
                _ = try Self.ask(watcher, "/who", replyPrefix: "* #lobby: ", until: { !Self.names(in: $0).contains(nick.lowercased()) })
            }
            try watcher.send("/nick \(nick)\n")
            #expect(try watcher.readLines(until: { $0.hasPrefix("* you are") || $0.hasPrefix("! ") }).last == "* you are now \(nick)")
        }
        print("toldMeansEverywhere(\(strategy)): /rooms missed \(joinsMissed) of \(rounds) joins just told; /who listed \(leaversListed) of \(rounds) leavers just closed")
        #expect(joinsMissed <= 1, "/rooms on the other server missed \(joinsMissed) of \(rounds) joins just told")
        #expect(leaversListed <= 1, "/who on the other server listed \(leaversListed) of \(rounds) leavers just closed")
        for node in [a, b] { #expect(try node.stop() == 0) }
    }

    /// §5 across servers: the sender's room hears of an upload on every
    /// server; a server whose upload directory is the same one lists the
    /// file and sends it, also one stored while the link was down; one with
    /// its own directory does not (files stay where they were stored).
    @Test("an upload is told to its room everywhere; servers sharing the upload directory list and send it", arguments: Self.covering)
    func filesAcrossServers(strategy: Strategy) throws {
        let redis = try RedisProcess()
        let shared = try TemporaryDirectory()
        let own = try TemporaryDirectory()
        let a = try ClusterTests.node("a", redis.url, strategy: strategy, extra: ["--upload-dir", shared.path])
        let b = try ClusterTests.node("b", redis.url, strategy: ClusterTests.next(strategy, 1), extra: ["--upload-dir", shared.path])
        let c = try ClusterTests.node("c", redis.url, strategy: ClusterTests.next(strategy, 2), extra: ["--upload-dir", own.path])
        for node in [a, b, c] { try ClusterTests.waitForNodes(node, ["a", "b", "c"]) }
        let (ann, annNick) = try a.joinChat()
        let bob = try b.joinChat().client
        let cat = try c.joinChat().client
        for client in [bob, cat] {
            _ = try Self.ask(client, "/who", replyPrefix: "* #lobby: ", until: { Set(Self.names(in: $0)).count == 3 })
        }

        let content = Array("one file, three servers\n".utf8)
        try ann.send(Array("/upload notes.txt \(content.count)\n".utf8) + content)
        let stored = try ann.readLines(until: { $0.hasPrefix("* stored ") }).last!
        #expect(stored.hasPrefix("* stored notes.txt (\(content.count) bytes, sha256 "), "\(stored)")
        for client in [bob, cat] {
            #expect(try Self.nextMessage(client) == "* \(annNick) shared notes.txt (\(content.count) bytes)")
        }

        // b's store finds it in the shared directory a moment later.
        #expect(try Self.ask(bob, "/files", replyPrefix: "* files: ", until: { $0 != "* files: none" }) == "* files: notes.txt (\(content.count))")
        try bob.send("/download notes.txt\n")
        #expect(try bob.readLine() == "* sending notes.txt \(content.count) sha256 \(stored.split(separator: " ").last!.dropLast())")
        #expect(try bob.read(count: content.count) == content)
        // The same name stored through b: numbered, as on one server.
        try bob.send(Array("/upload notes.txt 3\nabc".utf8))
        #expect(try bob.readLines(until: { $0.hasPrefix("* stored ") }).last!.hasPrefix("* stored notes-2.txt (3 bytes, "))
        _ = try Self.ask(ann, "/files", replyPrefix: "* files: ", until: { $0.contains("notes-2.txt") })

        // c stores files elsewhere: it heard of the upload, but has no such file.
        try cat.send("/files\n/download notes.txt\n")
        #expect(try cat.readLines(until: { $0.hasPrefix("* files: ") }).last == "* files: none")
        #expect(try cat.readLine() == "! no such file: notes.txt")

        // Stored while Redis was down: nobody else was told, but once the
        // links are back b looks through the directory and lists it.
        try redis.kill()
        for client in [ann, bob] {
            #expect(try client.readLines(until: { $0.hasPrefix("* cluster link") }).last?.hasPrefix("* cluster link lost") == true)
        }
        try ann.send(Array("/upload later.txt 5\nlater".utf8))
        #expect(try ann.readLines(until: { $0.hasPrefix("* stored ") }).last!.hasPrefix("* stored later.txt (5 bytes, "))
        try redis.restart()
        #expect(try bob.readLines(until: { $0.hasPrefix("* cluster link") }).last == "* cluster link restored")
        _ = try Self.ask(bob, "/files", replyPrefix: "* files: ", until: { $0.contains("later.txt (5)") })
        for node in [a, b, c] { #expect(try node.stop() == 0) }
    }
}
