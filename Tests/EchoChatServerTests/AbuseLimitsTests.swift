import EchoChatCore
import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// The abuse limits of PROTOCOL.md §3.1 step 3 and §3.6 end to end, against
/// every strategy, with the hostile clients a probe of the server found.
@Suite("Abuse limits", .ownThreads)
struct AbuseLimitsTests {
    /// One client's burst of 13,107 `/who` in a 300-member room, never read,
    /// used to make everyone else wait seconds: each `/who` sorted the room
    /// with two lower-cased Strings per comparison, and a whole read of
    /// commands ran back to back. Now the reply is built once, a turn is at
    /// most a few dozen lines, and the sender is not read while its own
    /// replies pile up, so a bystander is answered at once.
    @Test(arguments: Strategy.tested)
    func aWhoBurstInABigRoomDoesNotHoldUpABystander(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat", "--max-clients", "1000"], strategy: strategy, openFileLimit: 2048)
        let (bystander, _) = try server.joinChat()
        try bystander.send("/join quiet\n")
        _ = try bystander.readLine()
        // 300 members who read nothing (their join notices fit their buffers).
        var members: [TestClient] = []
        for _ in 0..<300 { members.append(try server.connect()) }
        let (attacker, _) = try server.joinChat(receiveBuffer: .small)
        let burst = String(repeating: "/who\n", count: 65_536 / 5)
        let sending = Background { try attacker.send(burst) }
        // Once the burst is in the server's hands (the kernel took all of
        // it), the bystander's command must come back quickly. Several
        // samples; the worst one counts.
        try sending.value(timeout: 10)
        var worst = 0.0
        for _ in 0..<5 {
            let start = Date()
            try bystander.send("/stats\n")
            let reply = try bystander.readLine()
            worst = max(worst, Date().timeIntervalSince(start))
            #expect(reply.hasPrefix("* stats: "))
        }
        // Before: 2-20 s depending on the strategy. A generous bound that
        // still fails if the burst runs ahead of the bystander.
        #expect(worst < 1.5, "a bystander waited \(worst) s behind a /who burst")
        // The attacker is not cut off: it is served at the pace it reads.
        #expect(try attacker.readLine().hasPrefix("* #lobby: "))
        attacker.close()
        for member in members { member.close() }
    }

    /// An echo client that sends without ever reading is backpressured,
    /// so it is never idle and never reaches EOF; `send-timeout` frees it.
    @Test(arguments: Strategy.tested)
    func anEchoClientThatNeverReadsIsFreedBySendTimeout(strategy: Strategy) throws {
        let server = try ServerProcess(
            ["--mode", "echo", "--max-output", "64K", "--send-timeout", "1", "--idle-timeout", "0.5", "--log-level", "debug"],
            strategy: strategy)
        let baseline = try openDescriptors(of: server.pid)
        let hog = try server.connect(timeout: 10, receiveBuffer: .small)
        let chunk = [UInt8](repeating: 0x61, count: 64 * 1024)
        // Writes block once the server stops reading; the server closes the
        // connection after the send timeout, which fails the blocked write.
        let start = Date()
        var failed = false
        for _ in 0..<1000 where !failed {
            do { try hog.send(chunk) } catch { failed = true }
        }
        #expect(failed, "the server never closed a client that does not read")
        #expect(Date().timeIntervalSince(start) < 9)
        let freed = server.log.waitFor({ $0.contains("sendTimeout") }, timeout: 5)
        #expect(freed != nil, "log:\n\(server.log.text.suffix(2000))")
        hog.close()
        // The server logs `closed fd N` after close(2): then its descriptors are back to what they were.
        #expect(server.log.waitFor({ $0.hasSuffix(" closed fd \(freedDescriptor(freed))") }, timeout: 5) != nil)
        #expect(try openDescriptors(of: server.pid) <= baseline)
    }

    @Test(arguments: Strategy.tested)
    func aChatClientWhoseOutputNobodyTakesLeavesWithSendTimeout(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat", "--max-output", "64M", "--send-timeout", "1"], strategy: strategy)
        let (talker, _) = try server.joinChat()
        let (stuck, nick) = try server.joinChat(receiveBuffer: .small)
        _ = try talker.readLine()
        // About 8 MB for `stuck`: more than the kernel buffers hold, far less
        // than max-output, so only the send timeout can free it.
        let line = String(repeating: "y", count: 4000)
        for index in 0..<2000 { try talker.send("\(line) \(index)\n") }
        let left = try talker.readLines(until: { $0.contains(" left ") }).last
        #expect(left == "* \(nick) left #lobby (send timeout)")
        try talker.send("/stats\n")
        let stats = try parseStats(try talker.readLine())
        #expect(stats["send_timeouts"] == "1")
        #expect(stats["slow_consumers"] == "0")
        withExtendedLifetime(stuck) {}  // open, unread, until the end
    }

    /// Slowloris: bytes without their LF. The line timeout is on by default
    /// in chat (60 s); shortened here, it closes the client whatever pace it keeps.
    @Test(arguments: Strategy.tested)
    func slowlorisIsClosedByTheLineTimeout(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat", "--line-timeout", "1"], strategy: strategy)
        let (watcher, _) = try server.joinChat()
        let (loris, nick) = try server.joinChat()
        _ = try watcher.readLine()
        let dripping = Background {
            // A byte every 0.2 s until the server says something (its
            // `* line timeout`) or closes: waiting on that, not on a clock.
            for byte in "GET / HTTP/1.1 Host: x".utf8 {
                guard (try? loris.send([byte])) != nil else { return }
                let heard = (try? Poll.readable([loris.socket.descriptor], timeoutMilliseconds: 200)) ?? [true]
                if heard.first == true { return }
            }
        }
        #expect(try watcher.readLine() == "* \(nick) left #lobby (line timeout)")
        _ = try dripping.value(timeout: 10)
        try watcher.send("/stats\n")
        #expect(try parseStats(try watcher.readLine())["line_timeouts"] == "1")
    }

    @Test func theLineAndSendTimeoutsAreOnByDefault() throws {
        let result = try runProgram(ServerProcess.binary, ["--mode", "chat", "--check-config"])
        #expect(result.status == 0)
        let settings = result.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ") }
        #expect(settings.contains("line-timeout = 60 # default"), "\(result.stdout)")
        #expect(settings.contains("send-timeout = 60 # default"), "\(result.stdout)")
        #expect(settings.contains("rate-limit = 0 # default"), "\(result.stdout)")
    }

    /// U+202E would reverse the text after the sender's nick on others'
    /// screens; U+2028 would break the line in two. §3.1 step 3 removes them.
    @Test(arguments: Strategy.tested)
    func separatorsAndBidiControlsNeverReachOthers(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: strategy)
        let (reader, _) = try server.joinChat()
        let (writer, nick) = try server.joinChat()
        _ = try reader.readLine()
        try writer.send("hi \u{202E}olleh\u{2066} \u{2028}x\u{2029}\u{200F}\u{061C}y\n")
        #expect(try reader.readLine() == "<\(nick)> hi olleh xy")
        try writer.send("/msg guest1 \u{202D}pm\n")
        #expect(try reader.readLine() == "[pm from \(nick)] pm")
    }

    /// A flooder past the rate limit is read more slowly: every line arrives,
    /// in order, paced; it is told once; a bystander is not slowed.
    @Test(arguments: Strategy.tested)
    func aFlooderIsReadMoreSlowlyAndLosesNothing(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat", "--rate-limit", "20", "--rate-burst", "5"], strategy: strategy)
        let (reader, _) = try server.joinChat()
        let (flooder, nick) = try server.joinChat()
        _ = try reader.readLine()
        let (bystander, _) = try server.joinChat()
        try bystander.send("/join elsewhere\n")
        _ = try bystander.readLines(until: { $0.hasPrefix("* you joined") })
        _ = try reader.readLines(until: { $0.contains(" left ") })
        _ = try flooder.readLines(until: { $0.contains(" left ") })
        let start = Date()
        try flooder.send((0..<45).map { "line \($0)\n" }.joined())
        // The bystander is answered while the flood is paced.
        let asked = Date()
        try bystander.send("/stats\n")
        #expect(try bystander.readLine().hasPrefix("* stats: "))
        #expect(Date().timeIntervalSince(asked) < 1)
        for index in 0..<45 { #expect(try reader.readLine() == "<\(nick)> line \(index)") }
        // 5 at once, then 20 per second: the last 40 take at least 2 s.
        #expect(Date().timeIntervalSince(start) >= 1.8)
        #expect(try flooder.readLine() == "* slow down: at most 20 lines per second")
        try flooder.send("/stats\n")
        let stats = try parseStats(try flooder.readLine())  // told once: the next line is the reply
        #expect(Int(stats["rate_limited"] ?? "") ?? 0 >= 1)
    }
}

/// The number of descriptors `pid` has open.
func openDescriptors(of pid: Int32) throws -> Int {
    try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
}

/// The `fd N` a `closing fd N: …` log line names (-1 if none).
func freedDescriptor(_ line: String?) -> Int {
    guard let line, let range = line.range(of: "closing fd ") else { return -1 }
    return Int(line[range.upperBound...].prefix { $0.isNumber }) ?? -1
}
