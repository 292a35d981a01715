import EchoChatCore
import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// The limits of PROTOCOL.md §3.5 end to end, against every strategy.
@Suite("Limits", .ownThreads)
struct LimitsTests {
    @Test(arguments: Strategy.tested, ServerMode.allCases)
    func maxClientsRefusesTheNextClient(strategy: Strategy, mode: ServerMode) throws {
        let server = try ServerProcess(["--mode", mode.rawValue, "--max-clients", "2"], strategy: strategy)
        var admitted: [TestClient] = []
        for _ in 0..<2 {
            let client = try server.connect()
            if mode == .chat { _ = try client.readLine() } else {
                try client.send("x\n")
                _ = try client.readLine()  // served: it is registered now
            }
            admitted.append(client)
        }
        if mode == .chat { _ = try admitted[0].readLine() }  // guest2 joined
        let refused = try server.connect()
        #expect(try refused.readLine() == "! server full, try again later")
        #expect(try refused.readToEnd().isEmpty)  // the only thing it receives
        // A refused client takes no place: after one leaves, the next is admitted.
        admitted[1].close()
        if mode == .chat {
            #expect(try admitted[0].readLine() == "* guest2 left #lobby")
            let next = try server.connect()
            #expect(try next.readLine() == "* welcome guest2, you are in #lobby (2 here); /help lists commands")
            try next.send("/stats\n")
            let stats = try parseStats(try next.readLine())
            #expect(stats["refused"] == "1")
            #expect(stats["clients"] == "2")
            #expect(stats["connections_total"] == "3")
        } else {
            // The server notices the close asynchronously: retry until admitted (bounded).
            var served = false
            for _ in 0..<50 where !served {
                let next = try server.connect()
                try? next.send("again\n")
                if let line = try? next.readLine() {
                    served = line == "again"
                    #expect(line == "again" || line == "! server full, try again later")
                }
            }
            #expect(served)
        }
    }

    @Test(arguments: Strategy.tested)
    func idleTimeoutInChat(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat", "--idle-timeout", "0.5"], strategy: strategy)
        let (watcher, _) = try server.joinChat()
        let (sleeper, nick) = try server.joinChat()
        _ = try watcher.readLine()
        // The watcher keeps talking (ping-pong with /who, no sleeping) until it
        // sees the sleeper leave; the sleeper says nothing and is dropped.
        let box = UncheckedBox(watcher)
        let watching = Background<String?> {
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline {
                try box.value.send("/who\n")
                let lines = try box.value.readLines(until: { $0.hasPrefix("* #lobby:") })
                if let left = lines.first(where: { $0.contains(" left ") }) { return left }
            }
            return nil
        }
        let started = Date()
        #expect(try sleeper.readLine() == "* idle timeout")
        #expect(try sleeper.isClosedByServer())
        #expect(Date().timeIntervalSince(started) >= 0.3)
        #expect(try watching.value(timeout: 15) == "* \(nick) left #lobby (idle timeout)")
    }

    @Test(arguments: Strategy.tested)
    func idleTimeoutInEcho(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "echo", "--idle-timeout", "0.5"], strategy: strategy)
        let client = try server.connect()
        try client.send("still here\n")
        #expect(try client.readLine() == "still here")
        #expect(try client.isClosedByServer())  // no notice in echo mode
    }

    @Test(arguments: Strategy.tested)
    func lineTimeoutInChat(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat", "--line-timeout", "0.5"], strategy: strategy)
        let (watcher, _) = try server.joinChat()
        let (slow, nick) = try server.joinChat()
        _ = try watcher.readLine()
        try slow.send("a complete line\nand half of anoth")
        #expect(try watcher.readLine() == "<\(nick)> a complete line")
        #expect(try slow.readLine() == "* line timeout")
        #expect(try watcher.readLine() == "* \(nick) left #lobby (line timeout)")
    }

    /// A burst of lines in one write, far more than max-output, reaches a
    /// client that reads all the while, whichever thread serves it: a
    /// sender waits while a recipient that another thread serves has not
    /// taken its lines yet. (Before, reactors dropped such a reader as a
    /// slow consumer: its loop had not collected what the sender's loop
    /// kept queuing.)
    @Test(arguments: Strategy.tested)
    func aReaderThatKeepsUpGetsAWholeBurst(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat", "--max-output", "64K"], strategy: strategy)
        let (sender, senderNick) = try server.joinChat()
        let (reader, _) = try server.joinChat()
        _ = try sender.readLine()  // the reader joined
        let count = 3000
        let text = String(repeating: "z", count: 1000)
        let burst = Array((0..<count).map { "\($0) \(text)\n" }.joined().utf8)
        let writer = Sending(sender)
        let written = DispatchSemaphore(value: 0)
        Thread {
            writer.failure = Result { try writer.client.send(burst) }.failure
            written.signal()
        }.start()
        var received = 0
        while received < count {
            let line = try reader.readLine()
            guard line == "<\(senderNick)> \(received) \(text)" else {
                Issue.record("line \(received): \(line.prefix(80))")
                break
            }
            received += 1
        }
        #expect(written.wait(timeout: .now() + 30) == .success)
        #expect(writer.failure == nil)
        #expect(received == count)
        #expect(try sender.syncWho() == "* #lobby: guest1, guest2 (2)")
    }

    /// A chat client that never reads is dropped once its queue passes
    /// max-output; the sender and the rest of the room are not held up.
    @Test(arguments: Strategy.tested)
    func slowConsumerIsDisconnected(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat", "--max-output", "64K", "--metrics", "127.0.0.1:0"], strategy: strategy)
        let (sender, _) = try server.joinChat()
        let (listener, _) = try server.joinChat()
        _ = try sender.readLine()
        // Held open, reading nothing, until the server drops it.
        let (stuck, stuckNick) = try server.joinChat(receiveBuffer: .small)
        defer { withExtendedLifetime(stuck) {} }
        _ = try sender.readLine()
        _ = try listener.readLine()
        let line = String(repeating: "x", count: 1000)
        var senderSaw: String?
        var listenerSaw: String?
        // Bounded: 64 KiB of queue plus socket buffers is far below 20,000 lines.
        var sent = 0
        while sent < 20_000 && (senderSaw == nil || listenerSaw == nil) {
            try sender.send("\(line) \(sent)\n")
            var received = try listener.readLine()
            if received.contains(" left ") {
                listenerSaw = received
                received = try listener.readLine()
            }
            #expect(received == "<guest1> \(line) \(sent)")  // nothing lost, in order
            sent += 1
            if sent % 100 == 0 && senderSaw == nil {
                let reply = try sender.syncWho()
                if reply.contains(" left ") {
                    senderSaw = reply
                    #expect(try sender.readLine() == "* #lobby: guest1, guest2 (2)")
                }
            }
        }
        #expect(senderSaw == "* \(stuckNick) left #lobby (slow consumer)")
        #expect(listenerSaw == "* \(stuckNick) left #lobby (slow consumer)")
        // Counted as its connection closes, just after the room was told: scrape until then.
        var drops = try server.scrape().value("echochat_slow_consumers_total")
        for _ in 0..<50 where drops == 0 { drops = try server.scrape().value("echochat_slow_consumers_total") }
        #expect(drops == 1)
    }
}

extension Int {
    /// A small SO_RCVBUF, so a test client that reads nothing fills up quickly.
    static let small = 4096
}

/// A session that is over cannot hold its connection forever by not reading.
@Suite("Close timeout", .ownThreads)
struct CloseTimeoutTests {
    @Test(arguments: Strategy.tested)
    func aClientThatNeverReadsItsLastOutputIsClosed(strategy: Strategy) throws {
        let server = try ServerProcess(
            ["--mode", "chat", "--close-timeout", "0.5", "--max-output", "64M", "--log-level", "debug"],
            strategy: strategy)
        let (watcher, _) = try server.joinChat()
        let (stuck, nick) = try server.joinChat(receiveBuffer: .small)
        _ = try watcher.readLine()
        // About 5 MB of /help replies, more than the kernel buffers hold while
        // this client reads nothing; then it quits.
        let requests = String(repeating: "/help\n", count: 12_000)
        try stuck.send(requests + "/quit\n")
        #expect(try watcher.readLine() == "* \(nick) left #lobby")
        let gaveUp = server.log.waitFor({ $0.contains("its last output was not taken within the close timeout") }, timeout: 20)
        #expect(gaveUp != nil, "log:\n\(server.log.text.suffix(2000))")
        // The server still serves everyone else.
        #expect(try watcher.syncWho() == "* #lobby: guest1 (1)")
    }
}

/// A client written to from another thread while the test reads elsewhere.
private final class Sending: @unchecked Sendable {
    let client: TestClient
    var failure: (any Error)?
    init(_ client: TestClient) { self.client = client }
}

extension Result {
    fileprivate var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
