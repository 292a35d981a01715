import EchoChatCore
import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Synchronization
import Testing

/// Many clients at once, against every strategy. Bounded in count and time;
/// every socket has a receive timeout.
@Suite("Stress", .ownThreads)
struct StressTests {
    /// 1,000 echo clients connected at the same time, each served.
    @Test(arguments: Strategy.tested)
    func thousandConcurrentEchoClients(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: strategy)
        var clients: [TestClient] = []
        for _ in 0..<1000 { clients.append(try server.connect(timeout: 20)) }
        for (index, client) in clients.enumerated() { try client.send("client \(index)\n") }
        for (index, client) in clients.enumerated() { #expect(try client.readLine() == "client \(index)") }
        try clients[0].send("all still here\n")
        #expect(try clients[0].readLine() == "all still here")
    }

    /// 200 chat clients in one room; each sends a few lines at once while
    /// reading. Every client must get every other client's lines exactly
    /// once, in each sender's order, and never its own.
    @Test(arguments: Strategy.tested)
    func twoHundredChatClientsGetExactlyWhatTheyShould(strategy: Strategy) throws {
        let clientCount = 200
        let perSender = 5
        let server = try ServerProcess(["--mode", "chat"], strategy: strategy)
        var clients: [(client: TestClient, nick: String)] = []
        for _ in 0..<clientCount { clients.append(try server.joinChat()) }
        // Everyone hears the later joins first; after that the room is quiet.
        for (index, entry) in clients.enumerated() {
            for later in clients[(index + 1)...] {
                #expect(try entry.client.readLine() == "* \(later.nick) joined #lobby")
            }
        }
        let workers = clients.enumerated().map { index, entry in
            let box = UncheckedBox(entry.client)
            let nick = entry.nick
            return Background<[String]> {
                let client = box.value
                for sequence in 0..<perSender { try client.send("m \(nick) \(sequence)\n") }
                var problems: [String] = []
                var nextFrom: [String: Int] = [:]
                for _ in 0..<((clientCount - 1) * perSender) {
                    let line = try client.readLine()
                    let parts = line.split(separator: " ")
                    guard parts.count == 4, parts[1] == "m", parts[0] == "<\(parts[2])>", let sequence = Int(parts[3])
                    else {
                        problems.append("client \(index) got unexpected line \(line)")
                        continue
                    }
                    let sender = String(parts[2])
                    if sender == nick { problems.append("client \(index) got its own line \(line)") }
                    if sequence != nextFrom[sender, default: 0] {
                        problems.append("client \(index) got \(sender)'s \(sequence), expected \(nextFrom[sender, default: 0])")
                    }
                    nextFrom[sender] = sequence + 1
                }
                if nextFrom.count != clientCount - 1 { problems.append("client \(index) heard \(nextFrom.count) senders") }
                return problems
            }
        }
        var problems: [String] = []
        for worker in workers { problems += try worker.value(timeout: 120) }
        #expect(problems.isEmpty, "\(problems.prefix(10))")
        // Nothing more arrived: the next reply each client gets is its own /who answer.
        for entry in clients.prefix(5) { #expect(try entry.client.syncWho().hasPrefix("* #lobby: ")) }
    }
}
