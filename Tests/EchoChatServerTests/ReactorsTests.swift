import EchoChatOptions
import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// What only the reactors strategy can get wrong: spreading connections over
/// its loops, chat between clients on different loops, and `--loops`.
@Suite("Reactors: loops, hand-offs, --loops", .ownThreads)
struct ReactorsTests {
    /// The per-loop connection counts of a `/stats` line.
    func loopCounts(_ stats: [String: String], loops: Int) -> [Int] {
        (0..<loops).map { Int(stats["loop\($0)_connections"] ?? "") ?? -1 }
    }

    @Test func connectionsLandOnEveryLoop() throws {
        let server = try ServerProcess(["--mode", "chat", "--loops", "2"], strategy: .reactors)
        var clients: [TestClient] = []
        for _ in 0..<20 {
            let (client, _) = try server.joinChat()
            clients.append(client)
        }
        // The last to join has read its welcome: every one is admitted.
        try clients[19].send("/stats\n")
        let stats = try parseStats(try clients[19].readLine())
        #expect(stats["loops"] == "2")
        let counts = loopCounts(stats, loops: 2)
        #expect(counts.reduce(0, +) == 20, "\(counts)")
        #expect(counts.allSatisfy { $0 > 0 }, "every loop holds connections: \(counts)")
        // A departure is counted on its loop. The room hears of it when the
        // session ends; the loop counts the connection until its descriptor
        // closes, a moment later: ask again (each answer is an event) until then.
        clients[0].close()
        _ = try clients[19].readLines(until: { $0.contains(" left #lobby") })
        var total = 20
        for _ in 0..<2000 where total != 19 {
            try clients[19].send("/stats\n")
            total = loopCounts(try parseStats(try clients[19].readLine()), loops: 2).reduce(0, +)
        }
        #expect(total == 19)
    }

    /// Several senders on different loops, each line to every other member:
    /// each receiver gets every sender's lines exactly once, in the order sent.
    @Test func chatAcrossLoopsIsDeliveredOnceInSenderOrder() throws {
        let members = 4
        let lines = 300
        let server = try ServerProcess(["--mode", "chat", "--loops", "2"], strategy: .reactors)
        var clients: [(client: TestClient, nick: String)] = []
        for index in 0..<members {
            let joined = try server.joinChat()
            clients.append(joined)
            // Everyone already in the room reads the join, so later reads see only chat.
            for earlier in clients.prefix(index) { _ = try earlier.client.readLines(until: { $0.contains(" joined #lobby") }) }
        }
        try clients[0].client.send("/stats\n")
        let counts = loopCounts(try parseStats(try clients[0].client.readLine()), loops: 2)
        #expect(counts.allSatisfy { $0 > 0 }, "members on both loops: \(counts)")

        let readers = clients.map { member in
            Background { () throws -> [String: [Int]] in
                var seen: [String: [Int]] = [:]
                for _ in 0..<(members - 1) * lines {
                    let line = try member.client.readLine()
                    // "<nick> n"
                    guard line.hasPrefix("<"), let close = line.firstIndex(of: ">"),
                        let number = Int(line[line.index(close, offsetBy: 2)...])
                    else { throw TestFailure("unexpected line \(line)") }
                    seen[String(line[line.index(after: line.startIndex)..<close]), default: []].append(number)
                }
                return seen
            }
        }
        let senders = clients.map { member in
            Background {
                for number in 0..<lines { try member.client.send("\(number)\n") }
            }
        }
        for sender in senders { try sender.value(timeout: 60) }
        for (index, reader) in readers.enumerated() {
            let seen = try reader.value(timeout: 60)
            for (other, member) in clients.enumerated() where other != index {
                #expect(seen[member.nick] == Array(0..<lines), "\(clients[index].nick) from \(member.nick)")
            }
            #expect(seen[clients[index].nick] == nil, "no echo of one's own lines")
        }
        // Nothing more: a duplicate would come before the reply to /who.
        #expect(try clients[0].client.syncWho().hasPrefix("* "))
    }

    /// One loop, as the epoll strategy runs it; and the shutdown notice
    /// reaches the clients of every loop once.
    @Test(arguments: [1, 3])
    func shutdownReachesEveryLoop(loops: Int) throws {
        let server = try ServerProcess(["--mode", "chat", "--loops", String(loops)], strategy: .reactors)
        var clients: [TestClient] = []
        for _ in 0..<6 {
            let (client, _) = try server.joinChat()
            for earlier in clients { _ = try earlier.readLines(until: { $0.contains(" joined #lobby") }) }
            clients.append(client)
        }
        try clients[0].send("/stats\n")
        let stats = try parseStats(try clients[0].readLine())
        #expect(stats["loops"] == String(loops))
        #expect(loopCounts(stats, loops: loops).allSatisfy { $0 == 6 / loops }, "round-robin: \(stats)")
        server.signal(.terminate)
        for client in clients {
            #expect(try client.readLine() == "* server shutting down")
            #expect(try client.isClosedByServer())
        }
        #expect(try server.waitForExit(timeout: 10) == 0)
    }

    func command(_ arguments: [String], file: String? = nil) throws(UsageError) -> ServerOptions.Command {
        try ServerOptions.parse(arguments, environment: { _ in nil }) { _ in
            guard let file else { throw TestFailure("no file") }
            return file
        }
    }

    @Test func loopsOptionAndSetting() throws {
        guard case .run(let automatic) = try command(["--strategy", "reactors"]) else { throw TestFailure("not run") }
        #expect(automatic.loops == nil)
        #expect(automatic.effectiveLoops == Threads.availableCores)
        guard case .run(let four) = try command(["--loops", "4"]) else { throw TestFailure("not run") }
        #expect(four.loops == 4 && four.effectiveLoops == 4)
        guard case .run(let auto) = try command(["--loops", "4", "--loops", "auto"]) else { throw TestFailure("not run") }
        #expect(auto.loops == nil)
        guard case .run(let fromFile) = try command(["--config", "x.conf"], file: "strategy = reactors\nloops = 2\n") else {
            throw TestFailure("not run")
        }
        #expect(fromFile.strategy == .reactors && fromFile.loops == 2)
        for bad in ["0", "-1", "1025", "two", ""] {
            #expect(throws: UsageError.self, "--loops \(bad)") { try command(["--loops", bad]) }
        }
        #expect(ServerOptions.helpText.contains("--loops"))
    }
}
