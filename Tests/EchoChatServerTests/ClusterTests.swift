import Foundation
import EchoChatCore
import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Testing

/// The cluster link against a real Redis (`redis-server`, started by each
/// test on a free port) and real servers: presence, lost and departing
/// nodes, Redis outages, and a Redis that answers garbage or nothing.
@Suite("Cluster link", .ownThreads, .requires(.redisServer))
struct ClusterTests {
    /// A chat server joined to `redis` as `node`.
    static func node(
        _ node: String, _ redis: String, strategy: Strategy, timeout: Double = 3, extra: [String] = []
    ) throws -> ServerProcess {
        try ServerProcess(
            ["--mode", "chat", "--cluster", redis, "--node-id", node, "--cluster-timeout", String(timeout)] + extra,
            strategy: strategy)
    }

    /// The strategy after `strategy`, so a cluster mixes them.
    static func next(_ strategy: Strategy, _ step: Int) -> Strategy {
        let all = Strategy.allCases
        return all[(all.firstIndex(of: strategy)! + step) % all.count]
    }

    /// Waits for the server to log that it sees exactly `nodes`; `after`:
    /// only in a line logged after the first `after` lines.
    static func waitForNodes(_ server: ServerProcess, _ nodes: [String], timeout: Double = 10, after: Int = 0) throws {
        let line = "cluster: \(nodes.count) nodes: \(nodes.sorted().joined(separator: ", "))"
        guard server.log.waitFor({ $0.hasSuffix(line) }, timeout: timeout, after: after) != nil else {
            throw TestFailure("no '\(line)' within \(timeout) s; log:\n\(server.log.text)")
        }
    }

    static func stats(_ client: TestClient) throws -> [String: String] {
        try client.send("/stats\n")
        return try parseStats(try client.readLines(until: { $0.hasPrefix("* stats: ") }).last!)
    }

    @Test("nodes see each other; a killed node is lost once, a stopped one says goodbye", arguments: Strategy.tested)
    func presence(strategy: Strategy) throws {
        let redis = try RedisProcess()
        // Exactly one "lost", and the counts, need every surviving node's
        // heartbeat on time: under ThreadSanitizer, beside two other test
        // processes, 3 s was once not enough (two of four cases failed in
        // one CI run, and passed alone and under load again).
        let timeout: Double = isSanitized ? 8 : 3
        let a = try Self.node("a", redis.url, strategy: strategy, timeout: timeout)
        let b = try Self.node("b", redis.url, strategy: Self.next(strategy, 1), timeout: timeout)
        let c = try Self.node("c", redis.url, strategy: Self.next(strategy, 2), timeout: timeout)
        for server in [a, b, c] { try Self.waitForNodes(server, ["a", "b", "c"]) }
        let client = try a.joinChat().client
        let stats = try Self.stats(client)
        #expect(stats["node"] == "a" && stats["nodes"] == "3", "\(stats)")

        let watcher = try redis.client()
        #expect(try watcher.command(["SUBSCRIBE", "echochat:cluster"]).elements?.first?.text == "subscribe")
        // SIGKILL: no goodbye. The survivors notice within cluster-timeout,
        // and exactly one of them announces it.
        #expect(c.signal(.kill))
        _ = try? c.waitForExit(timeout: 10)
        try Self.waitForNodes(a, ["a", "b"], timeout: timeout + 5)
        try Self.waitForNodes(b, ["a", "b"], timeout: timeout + 5)
        #expect(try Self.stats(client)["nodes"] == "2")
        #expect(try watcher.messages(quietFor: 1.5) == ["lost c"])
        let checker = try redis.client()
        #expect(try checker.command(["SISMEMBER", "echochat:nodes", "c"]) == .integer(0))

        // SIGTERM: the goodbye is at once, before the presence key could expire.
        #expect(try b.stop() == 0)
        #expect(try checker.command(["EXISTS", "echochat:node:b"]) == .integer(0))
        #expect(try checker.command(["SISMEMBER", "echochat:nodes", "b"]) == .integer(0))
        #expect(try watcher.messages(quietFor: 0.5) == ["bye b"])
        try Self.waitForNodes(a, ["a"])
        #expect(try a.stop() == 0)
    }

    /// Nick ownership lives in Redis keys (`echochat:nick:NICK` = `NODE ID
    /// SINCE`), and Redis decides claims: a key planted by hand refuses a
    /// nick no server knows of, and a guest number.
    @Test("nick keys: Redis holds each nick's holder, refuses a claim of a held one, frees them", arguments: Strategy.tested)
    func nickKeys(strategy: Strategy) throws {
        let redis = try RedisProcess()
        // Keys live 20 s: none expires during the test, so each that goes was deleted.
        let timeout = 30.0
        let a = try Self.node("a", redis.url, strategy: strategy, timeout: timeout)
        let b = try Self.node("b", redis.url, strategy: Self.next(strategy, 1), timeout: timeout)
        // (Linked: a claim made before would be decided alone.)
        for server in [a, b] { #expect(server.log.waitFor({ $0.contains("cluster: joined through") }, timeout: 10) != nil) }
        let keys = try redis.client()
        func holder(_ nick: String) throws -> String? { try keys.command(["GET", "echochat:nick:" + nick]).text }
        // Keyspace notifications for generic commands (DEL): the test waits for the deletion itself.
        #expect(try keys.command(["CONFIG", "SET", "notify-keyspace-events", "Kg"]) == .simple("OK"))
        /// A freed key goes just after the client hears of it (the link deletes
        /// it next): true once it is gone, false if no DEL comes within 5 s.
        func freed(_ nick: String) throws -> Bool {
            let watcher = try redis.client(timeout: 5)
            _ = try watcher.command(["SUBSCRIBE", "__keyspace@0__:echochat:nick:" + nick])
            // Subscribed first, so a deletion after this look is heard.
            guard try holder(nick) != nil else { return true }
            while let parts = try? watcher.next().elements {
                if parts.count == 3, parts[0].text == "message", parts[2].text == "del" { return true }
            }
            return false
        }

        let (alice, guest) = try a.joinChat()
        #expect(try holder(guest)?.hasPrefix("a ") == true, "a welcome takes its guest nick's key")
        try alice.send("/nick Alice\n")
        #expect(try alice.readLines(until: { $0.hasPrefix("* you are now") }).last == "* you are now Alice")
        #expect(try holder("alice")?.hasPrefix("a ") == true)
        #expect(try freed(guest), "the guest nick's key goes with it")
        // It expires with the node's presence unless renewed.
        let ttl = try keys.command(["PTTL", "echochat:nick:alice"]).integer ?? -1
        #expect(ttl > 0 && ttl <= Int(timeout * 2 / 3 * 1000), "PTTL \(ttl)")

        // A key nobody's server knows of: the claim is refused all the same.
        #expect(try keys.command(["SET", "echochat:nick:dave", "elsewhere 1 1"]) == .simple("OK"))
        let (bob, _) = try b.joinChat()
        try bob.send("/nick dave\n")
        #expect(try bob.readLines(until: { $0.hasPrefix("* you are now") || $0.hasPrefix("! ") }).last == "! nick taken: dave")
        #expect(try keys.command(["DEL", "echochat:nick:dave"]) == .integer(1))
        try bob.send("/nick dave\n")
        #expect(try bob.readLines(until: { $0.hasPrefix("* you are now") || $0.hasPrefix("! ") }).last == "* you are now dave")
        #expect(try holder("dave")?.hasPrefix("b ") == true)

        // A guest number held in Redis is skipped: the welcome takes the next.
        let next = try bob.syncWho().contains("guest1") ? 2 : 1
        #expect(try keys.command(["SET", "echochat:nick:guest\(next)", "elsewhere 2 2"]) == .simple("OK"))
        let (carol, carolNick) = try a.joinChat()
        #expect(carolNick == "guest\(next + 1)")
        #expect(try holder(carolNick)?.hasPrefix("a ") == true)

        // A client that leaves frees its key; a clean stop frees its clients'.
        try carol.send("/quit\n")
        _ = try carol.readLines(until: { $0 == "* bye" })
        #expect(try freed(carolNick))
        #expect(try b.stop() == 0)
        #expect(try holder("dave") == nil)
        // A killed node's keys expire with its presence: gone by the time it is lost.
        #expect(a.signal(.kill))
        _ = try? a.waitForExit(timeout: 10)
        // (Both read at one instant: a script.)
        let both = "return {redis.call('PTTL', KEYS[1]), redis.call('PTTL', KEYS[2])}"
        let ttls = try keys.command(["EVAL", both, "2", "echochat:nick:alice", "echochat:node:a"]).elements?.compactMap(\.integer) ?? []
        #expect(ttls.count == 2 && ttls[0] > 0 && ttls[0] <= ttls[1], "nick and node PTTL: \(ttls)")
        _ = bob
    }

    /// Room membership lives in Redis keys too (`echochat:who:ROOM`,
    /// `echochat:rooms`, `echochat:in:NODE`), changed with the events that
    /// move clients, and `/who`, `/rooms` and `(K here)` read them: an entry
    /// planted by hand is listed and counted. A lost node's entries go when
    /// a survivor announces the loss; a stopped node's with its goodbye.
    @Test("membership keys: Redis holds who is in which room; /who, /rooms and (K here) read them", arguments: Strategy.tested)
    func membershipKeys(strategy: Strategy) throws {
        let redis = try RedisProcess()
        let timeout: Double = isSanitized ? 8 : 3
        let a = try Self.node("a", redis.url, strategy: strategy, timeout: timeout)
        let b = try Self.node("b", redis.url, strategy: Self.next(strategy, 1), timeout: timeout)
        for server in [a, b] { try Self.waitForNodes(server, ["a", "b"]) }
        let keys = try redis.client()
        let hash = keys.hash
        func nicks(_ room: String) throws -> [String] { try hash("echochat:who:" + room).values.sorted() }

        // (Her reads wait past the timeout: the loss is announced within it.)
        let alice = try a.joinChat(timeout: timeout + 5).client
        try alice.send("/nick alice\n/join Dev\n")
        #expect(try alice.readLines(until: { $0.hasPrefix("* you joined") }).last == "* you joined #Dev (1 here)")
        let bob = try b.joinChat().client
        try bob.send("/nick bob\n")
        #expect(try bob.readLine() == "* you are now bob")
        #expect(try nicks("dev") == ["alice"])
        #expect(try nicks("lobby") == ["bob"])
        #expect(try hash("echochat:rooms") == ["dev": "Dev", "lobby": "lobby"])
        #expect(try hash("echochat:who:dev").keys.allSatisfy { $0.hasPrefix("a ") })
        #expect(try hash("echochat:in:a").values.sorted() == ["dev"])
        #expect(try hash("echochat:in:b").values.sorted() == ["lobby"])
        // They expire unless renewed: past the timeout, so a survivor still finds a lost node's.
        for key in ["echochat:who:dev", "echochat:rooms", "echochat:in:a"] {
            let ttl = try keys.command(["PTTL", key]).integer ?? -1
            #expect(ttl > Int(timeout * 1000) && ttl <= Int(timeout * 2000), "PTTL of \(key): \(ttl)")
        }

        // What the keys say is what the servers answer.
        #expect(try keys.command(["HSET", "echochat:who:dev", "elsewhere 7", "casper"]) == .integer(1))
        #expect(try alice.syncWho() == "* #Dev: alice, casper (2)")
        try bob.send("/rooms\n/join dev\n")
        #expect(try bob.readLine() == "* rooms: #Dev (2), #lobby (1)")
        #expect(try bob.readLine() == "* you joined #Dev (3 here)")
        #expect(try alice.readLine() == "* bob joined #Dev")
        #expect(try keys.command(["HDEL", "echochat:who:dev", "elsewhere 7"]) == .integer(1))
        #expect(try bob.syncWho() == "* #Dev: alice, bob (2)")
        #expect(try hash("echochat:rooms") == ["dev": "Dev"], "#lobby went with its last member")

        // b killed: its entries go when a announces the loss.
        #expect(b.signal(.kill))
        _ = try? b.waitForExit(timeout: 10)
        #expect(try alice.readLine() == "* bob left #Dev (server lost)")
        #expect(try nicks("dev") == ["alice"])
        #expect(try keys.command(["EXISTS", "echochat:in:b"]) == .integer(0))
        // a stopped: its entries go with its goodbye.
        #expect(try a.stop() == 0)
        #expect(try keys.command(["EXISTS", "echochat:who:dev", "echochat:in:a"]) == .integer(0))
        #expect(try hash("echochat:rooms") == [:])
    }


    @Test("Redis down: clients are told, local chat goes on, the link comes back", arguments: Strategy.tested)
    func outage(strategy: Strategy) throws {
        let redis = try RedisProcess()
        let server = try Self.node("solo", redis.url, strategy: strategy, extra: ["--metrics", "127.0.0.1:0"])
        try Self.waitForNodes(server, ["solo"])
        let before = try server.scrape()
        #expect(before.value("echochat_cluster_link_up") == 1)
        #expect(before.value("echochat_cluster_link_losses_total") == 0)
        #expect(before.value("echochat_nodes") == 1)
        #expect(before.family("echochat_info")?.samples.first?.labels["node"] == "solo")
        // Its first client's hello went out; nobody else spoke yet.
        let publishedBefore = before.value("echochat_cluster_events_published_total") ?? -1
        #expect(before.value("echochat_cluster_events_received_total") == 0)
        let (first, firstNick) = try server.joinChat()
        let (second, _) = try server.joinChat()
        _ = try first.readLines(until: { $0.hasSuffix(" joined #lobby") })

        let logged = server.log.lines.count
        try redis.kill()
        let lost = "* cluster link lost: only people on this server can hear you"
        #expect(try first.readLine() == lost)
        #expect(try second.readLine() == lost)
        try first.send("still here\n")
        #expect(try second.readLine() == "<\(firstNick)> still here")
        #expect(try Self.stats(second)["nodes"] == "1")
        let during = try server.scrape()
        #expect(during.value("echochat_cluster_link_up") == 0)
        #expect(during.value("echochat_cluster_link_losses_total") == 1)

        try redis.restart()
        #expect(try first.readLine() == "* cluster link restored")
        #expect(try second.readLine() == "* cluster link restored")
        // Registered again: Redis started empty (a line since the outage,
        // not the one logged before it).
        try Self.waitForNodes(server, ["solo"], after: logged)
        #expect(try redis.client().command(["SISMEMBER", "echochat:nodes", "solo"]) == .integer(1))
        // It publishes again: a new client's hello reaches a subscriber (and
        // is counted before it leaves).
        let listener = try redis.client()
        _ = try listener.command(["SUBSCRIBE", "echochat:events"])
        _ = try server.joinChat()
        let heard = try listener.messages(quietFor: 1)
        // (Events coalesce: one message may carry several, one per line.)
        #expect(heard.flatMap { $0.split(separator: "\n") }.contains { $0.hasPrefix("hello solo ") }, "\(heard)")
        let after = try server.scrape()
        #expect(after.value("echochat_cluster_link_up") == 1)
        #expect((after.value("echochat_cluster_events_published_total") ?? 0) > publishedBefore)
        #expect((after.value("echochat_cluster_publishes_total") ?? 0) >= 1)
        #expect(try server.stop() == 0)
    }

    @Test("a Redis that answers garbage or nothing never stops the server serving", arguments: Strategy.tested)
    func brokenRedis(strategy: Strategy) throws {
        // Stalled: the kernel completes the connections in the backlog, and
        // nobody ever answers.
        let silent = try Socket.listen(host: "127.0.0.1", port: 0)
        defer { silent.close() }
        let stalled = try Self.node("s", "redis://127.0.0.1:\(try silent.localAddress().port)", strategy: strategy, timeout: 1)
        let client = try stalled.joinChat().client
        #expect(try Self.stats(client)["nodes"] == "1")
        #expect(stalled.log.waitFor({ $0.contains("Redis did not answer within 1.0 s") }, timeout: 10) != nil, "\(stalled.log.text)")
        try client.send("/who\n")
        #expect(try client.readLine().hasPrefix("* #lobby: "))
        #expect(try stalled.stop() == 0)

        // Garbage: an HTTP server where Redis should be.
        let liar = try Socket.listen(host: "127.0.0.1", port: 0)
        defer { liar.close() }
        let confused = try Self.node("g", "redis://127.0.0.1:\(try liar.localAddress().port)", strategy: strategy)
        for _ in 0..<2 {
            guard try liar.wait(readable: true, writable: false, timeoutMilliseconds: 10_000).readable,
                case .done(let peer) = try liar.accept(nonBlocking: false)
            else { throw TestFailure("the server did not connect to the fake Redis") }
            try peer.writeAll(Array("HTTP/1.1 400 Bad Request\r\n\r\n".utf8))
            peer.close()
        }
        #expect(confused.log.waitFor({ $0.contains("Redis sent an unknown reply type byte 72") }, timeout: 10) != nil, "\(confused.log.text)")
        let other = try confused.joinChat().client
        #expect(try Self.stats(other)["node"] == "g")
        #expect(try confused.stop() == 0)
    }

    /// A Redis that answers commands but never confirms a subscription:
    /// the link is not up, and after cluster-timeout it is dropped and tried again.
    @Test("a subscription never confirmed counts as a stall")
    func subscriptionNeverConfirmed() throws {
        let fake = try Socket.listen(host: "127.0.0.1", port: 0)
        defer { fake.close() }
        let server = try Self.node("s", "redis://127.0.0.1:\(try fake.localAddress().port)", strategy: .epoll, timeout: 1)
        // The link connects its command connection first, then its subscriber.
        var peers: [Socket] = []
        defer { for peer in peers { peer.close() } }
        for _ in 0..<2 {
            guard try fake.wait(readable: true, writable: false, timeoutMilliseconds: 10_000).readable,
                case .done(let peer) = try fake.accept(nonBlocking: false)
            else { throw TestFailure("the server did not connect to the fake Redis") }
            try peer.setReceiveTimeout(seconds: 0.2)
            peers.append(peer)
        }
        // Answer every command on the first; say nothing on the second.
        var decoder = RESPDecoder()
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = Clock.monotonicNanoseconds() + 10_000_000_000
        var dropped = false
        while !dropped && Clock.monotonicNanoseconds() < deadline {
            var commands: [RESPValue] = []
            switch try? buffer.withUnsafeMutableBytes({ try peers[0].read(into: $0) }) {
            case .bytes(let count)?: try decoder.decode(Array(buffer[..<count]), into: &commands)
            case .endOfFile?: dropped = true
            default: break
            }
            for command in commands {
                let reply: RESPValue = switch command.elements?.first?.text?.uppercased() {
                case "SADD", "EXISTS": .integer(1)
                case "SMEMBERS": .array([.bulk("s")])
                default: .simple("OK")
                }
                try? peers[0].writeAll(reply.encoded)
            }
        }
        #expect(dropped, "the link kept a connection whose subscription was never confirmed")
        #expect(server.log.waitFor({ $0.contains("Redis did not answer within 1.0 s") }, timeout: 5) != nil, "\(server.log.text)")
        #expect(!server.log.text.contains("cluster: joined"))
        let client = try server.joinChat().client
        #expect(try Self.stats(client)["nodes"] == "1")
        #expect(try server.stop() == 0)
    }

    /// The link has no thread of its own: the strategy's loop drives it
    /// (a standalone server and a joined one run the same threads), and a
    /// Redis given by host name is found without blocking that loop.
    @Test("the link runs on the server's own threads, and finds Redis by host name", arguments: Strategy.tested)
    func drivenByTheServersLoop(strategy: Strategy) throws {
        let redis = try RedisProcess()
        let alone = try ServerProcess(["--mode", "chat"], strategy: strategy)
        let joined = try Self.node("a", "redis://localhost:\(redis.port)", strategy: strategy)
        // Up: registered, subscribed, and the first heartbeat counted the nodes.
        try Self.waitForNodes(joined, ["a"])
        #expect(try redis.client().command(["EXISTS", "echochat:node:a"]) == .integer(1))
        #expect(try Self.threadNames(joined) == Self.threadNames(alone))
        #expect(try alone.stop() == 0)
        #expect(try joined.stop() == 0)
    }

    /// The names of a process's threads, sorted.
    static func threadNames(_ server: ServerProcess) throws -> [String] {
        let tasks = "/proc/\(server.pid)/task"
        return try FileManager.default.contentsOfDirectory(atPath: tasks).map { task in
            try String(contentsOfFile: "\(tasks)/\(task)/comm", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        }.sorted()
    }

    @Test("echo mode serves alone, saying so")
    func echoIgnoresCluster() throws {
        let server = try ServerProcess(["--mode", "echo", "--cluster", "redis://127.0.0.1:1"])
        #expect(server.log.waitFor({ $0.contains("--cluster is for chat mode; echo mode serves alone") }, timeout: 5) != nil)
        let client = try server.connect()
        try client.send("ping\n")
        #expect(try client.readLine() == "ping")
        #expect(try server.stop() == 0)
    }
}
