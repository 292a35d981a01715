import Testing

@testable import EchoChatCore

/// PROTOCOL.md §3.5 limits, the `/stats` key order (§3.4), the fixed replies
/// strategies send themselves, and the output queue.
@Suite("Limits, stats and ByteQueue")
struct LimitsAndQueueTests {
    // MARK: Limits

    @Test func defaultsMatchTheProtocol() {
        let limits = Limits()
        #expect(limits.maxClients == 10_000)
        #expect(limits.maxLine == 4096)
        #expect(limits.maxOutput == 1_048_576)
        #expect(limits.idleTimeoutNanoseconds == 0)
        #expect(limits.lineTimeoutNanoseconds == 0)
        #expect(!limits.hasTimers)
    }

    @Test(arguments: [(0, true), (1, true), (2, false), (3, false), (1_000, false)])
    func admitsWhileFewerThanMaxClientsAreConnected(connected: Int, admitted: Bool) {
        #expect(Limits(maxClients: 2).admits(connectedClients: connected) == admitted)
    }

    @Test func admitsNobodyWhenMaxClientsIsZero() {
        #expect(!Limits(maxClients: 0).admits(connectedClients: 0))
    }

    @Test(arguments: [(0, false), (99, false), (100, false), (101, true), (1 << 30, true)])
    func aSlowConsumerIsOnePastMaxOutput(queued: Int, slow: Bool) {
        #expect(Limits(maxOutput: 100).isSlowConsumer(queuedBytes: queued) == slow)
    }

    @Test(arguments: [(0, 100), (1, 99), (40, 60), (99, 1), (100, 0), (101, 0), (10_000, 0)])
    func echoReadBudgetIsWhatFitsUnderMaxOutput(queued: Int, budget: Int) {
        #expect(Limits(maxOutput: 100).echoReadBudget(queuedBytes: queued) == budget)
    }

    @Test(arguments: [(100, 0, true), (100, 50, true), (100, 51, false), (100, 100, false),
                      (101, 50, true), (101, 51, false), (1, 0, true), (1, 1, false)])
    func echoResumesAtHalfOfMaxOutput(maxOutput: Int, queued: Int, resumes: Bool) {
        #expect(Limits(maxOutput: maxOutput).echoMayResume(queuedBytes: queued) == resumes)
    }

    @Test func idleAfterTheTimeoutWithNoInput() {
        let limits = Limits(idleTimeoutNanoseconds: 10)
        #expect(limits.hasTimers)
        #expect(!limits.isIdle(lastInput: 100, now: 100, reading: true))
        #expect(!limits.isIdle(lastInput: 100, now: 109, reading: true))
        #expect(limits.isIdle(lastInput: 100, now: 110, reading: true))
        #expect(limits.isIdle(lastInput: 100, now: 1_000_000, reading: true))
    }

    @Test func notIdleWhileTheServerIsNotReading() {
        let limits = Limits(idleTimeoutNanoseconds: 10)
        #expect(!limits.isIdle(lastInput: 100, now: 110, reading: false))
        #expect(!limits.isIdle(lastInput: 0, now: .max, reading: false))
    }

    @Test func idleTimeoutZeroIsOff() {
        let limits = Limits(idleTimeoutNanoseconds: 0)
        #expect(!limits.isIdle(lastInput: 0, now: 1 << 62, reading: true))
        #expect(!limits.isIdle(lastInput: 0, now: 0, reading: true))
    }

    @Test func lineTimedOutAfterThePartialLineWaitedLongEnough() {
        let limits = Limits(lineTimeoutNanoseconds: 10)
        #expect(limits.hasTimers)
        #expect(!limits.isLineTimedOut(partialSince: nil, now: 1 << 62), "no partial line")
        #expect(!limits.isLineTimedOut(partialSince: 100, now: 109))
        #expect(limits.isLineTimedOut(partialSince: 100, now: 110))
        #expect(limits.isLineTimedOut(partialSince: 100, now: 500))
    }

    @Test func lineTimeoutZeroIsOff() {
        let limits = Limits(lineTimeoutNanoseconds: 0)
        #expect(!limits.isLineTimedOut(partialSince: 0, now: 1 << 62))
    }

    // MARK: Stats

    @Test func keyValuesListsTheKeysInProtocolOrder() {
        let transport = TransportStats(
            strategy: "epoll", uptimeSeconds: 3, connectionsTotal: 4, refused: 5, bytesIn: 6, bytesOut: 7,
            messagesIn: 100, messagesOut: 200)
        let stats = ServerStats(mode: .chat, clients: 1, rooms: 2, messagesIn: 8, messagesOut: 9, transport: transport)
        #expect(stats.keyValues == "mode=chat strategy=epoll clients=1 rooms=2 uptime_s=3 connections_total=4 "
            + "refused=5 messages_in=8 messages_out=9 bytes_in=6 bytes_out=7 refused_per_address=0")
        let keys = stats.keyValues.split(separator: " ").map { $0.split(separator: "=")[0] }
        #expect(keys == ["mode", "strategy", "clients", "rooms", "uptime_s", "connections_total", "refused",
                         "messages_in", "messages_out", "bytes_in", "bytes_out", "refused_per_address"])
        #expect(stats.pairs.map(\.key) == keys.map(String.init))
    }

    @Test func refusedPerAddressFollowsTheStandardKeysAndDetailIsNotShown() {
        let transport = TransportStats(
            strategy: "thread", refused: 9, refusedPerAddress: 4, extra: [.init("threads", "2")],
            detail: [.init("idle_timeouts", "3")])
        let stats = ServerStats.echo(clients: 2, transport: transport)
        #expect(stats.keyValues.hasSuffix(" refused=9 messages_in=0 messages_out=0 bytes_in=0 bytes_out=0 refused_per_address=4 threads=2"))
        #expect(!stats.keyValues.contains("idle_timeouts"))
    }

    @Test func keyValuesAppendsExtraPairsAfterTheStandardKeys() {
        let transport = TransportStats(strategy: "pool", extra: [.init("workers", "8"), .init("queue", "0")])
        let stats = ServerStats(mode: .echo, clients: 0, rooms: 0, messagesIn: 0, messagesOut: 0, transport: transport)
        #expect(stats.keyValues == "mode=echo strategy=pool clients=0 rooms=0 uptime_s=0 connections_total=0 "
            + "refused=0 messages_in=0 messages_out=0 bytes_in=0 bytes_out=0 refused_per_address=0 workers=8 queue=0")
    }

    @Test func coreStatsUseTheCoresMessageCountersAndTheTransportsRest() {
        let core = ChatCore(maxLine: 64)
        let output = RecordingOutput()
        output.opened(ConnectionID(1))
        core.connect(ConnectionID(1), output: output)
        let stats = core.stats(transport: RecordingOutput.transport)
        #expect(stats.mode == .chat)
        #expect(stats.clients == 1 && stats.rooms == 1)
        #expect(stats.messagesIn == 0 && stats.messagesOut == 1)
        #expect(stats.transport == RecordingOutput.transport)
    }

    @Test func modeNames() {
        #expect(ServerMode.echo.rawValue == "echo")
        #expect(ServerMode.chat.rawValue == "chat")
        #expect(ServerMode.allCases.count == 2)
    }

    // MARK: Replies the strategies send themselves

    @Test func fixedRepliesAreSpelledAsInTheProtocol() {
        #expect(text(Replies.serverFull) == "! server full, try again later\n")
        #expect(text(Replies.shuttingDown) == "* server shutting down\n")
        #expect(text(Replies.idleTimeout) == "* idle timeout\n")
        #expect(text(Replies.bye) == "* bye\n")
        #expect(text(Replies.lineTooLong(max: 4096)) == "! line too long (max 4096 bytes)\n")
        #expect(text(Replies.left(nick: "bob", room: "#a", reason: .slowConsumer)) == "* bob left #a (slow consumer)\n")
    }

    // MARK: ByteQueue

    private func contents(_ queue: ByteQueue) -> [UInt8] { queue.withReadableBytes { Array($0) } }

    @Test func startsEmpty() {
        let queue = ByteQueue()
        #expect(queue.isEmpty)
        #expect(queue.count == 0)
        #expect(contents(queue) == [])
    }

    @Test func appendsAndConsumesInOrder() {
        var queue = ByteQueue()
        queue.append(bytes("hello "))
        bytes("world").withUnsafeBytes { queue.append($0) }
        #expect(queue.count == 11)
        #expect(contents(queue) == bytes("hello world"))
        queue.consume(3)
        #expect(contents(queue) == bytes("lo world"))
        queue.consume(0)
        #expect(contents(queue) == bytes("lo world"))
        queue.append(bytes("!"))
        #expect(contents(queue) == bytes("lo world!"))
        queue.consume(9)
        #expect(queue.isEmpty)
        #expect(contents(queue) == [])
        queue.append(bytes("again"))
        #expect(contents(queue) == bytes("again"))
    }

    @Test func removeAllEmptiesTheQueue() {
        var queue = ByteQueue()
        queue.append([UInt8](repeating: 1, count: 10_000))
        queue.consume(5_000)
        queue.removeAll()
        #expect(queue.isEmpty && queue.count == 0)
        queue.append([7, 8])
        #expect(contents(queue) == [7, 8])
    }

    /// Random appends and partial consumes, big enough to cross the compaction
    /// threshold many times, against a plain array as the reference.
    @Test(arguments: [UInt64(1), 2, 3])
    func keepsOrderOverManyOperations(seed: UInt64) {
        var generator = SeededGenerator(seed: seed)
        var queue = ByteQueue()
        var reference: [UInt8] = []
        var next: UInt8 = 0
        for step in 0..<5_000 {
            if Bool.random(using: &generator) || reference.isEmpty {
                // Mostly small writes, sometimes a burst well past the compaction threshold.
                let length = step % 97 == 0
                    ? Int.random(in: 10_000...100_000, using: &generator) : Int.random(in: 0...3_000, using: &generator)
                let chunk = (0..<length).map { _ in
                    next &+= 1
                    return next
                }
                if Bool.random(using: &generator) {
                    queue.append(chunk)
                } else {
                    chunk.withUnsafeBytes { queue.append($0) }
                }
                reference += chunk
            } else {
                let n = Int.random(in: 0...reference.count, using: &generator)
                queue.consume(n)
                reference.removeFirst(n)
            }
            #expect(queue.count == reference.count)
            #expect(queue.isEmpty == reference.isEmpty)
            if step % 50 == 0 || reference.count < 64 {
                #expect(contents(queue) == reference, "step \(step)")
            } else {
                // Cheap check on the ends between full comparisons.
                let (first, last) = queue.withReadableBytes { ($0.first, $0.last) }
                #expect(first == reference.first && last == reference.last, "step \(step)")
            }
        }
        #expect(contents(queue) == reference)
    }

    @Test func consumingAByteAtATimeKeepsOrder() {
        var queue = ByteQueue()
        let reference = (0..<20_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        queue.append(reference)
        for index in 0..<reference.count {
            let first = queue.withReadableBytes { $0.first }
            #expect(first == reference[index])
            if first != reference[index] { break }
            queue.consume(1)
        }
        #expect(queue.isEmpty)
    }

    /// The out-of-line box behaves as a value: a copy changed later does not
    /// change the original, and clearing frees only the one cleared.
    @Test func outOfLineValuesAreCopiedOnWrite() {
        var first = OutOfLine<[Int]>()
        #expect(first.value == nil)
        first.update(creating: []) { $0.append(1) }
        var second = first
        second.update(creating: []) { $0.append(2) }
        #expect(first.value == [1] && second.value == [1, 2])
        first.clear()
        #expect(first.value == nil && second.value == [1, 2])
        let added = first.update(creating: [7]) { values -> Int in
            values.append(8)
            return values.count
        }
        #expect(added == 2 && first.value == [7, 8])
    }
}
