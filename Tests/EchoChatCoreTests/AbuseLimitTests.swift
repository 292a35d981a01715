import Testing

@testable import EchoChatCore

private let second: Int64 = 1_000_000_000
private let millisecond: Int64 = 1_000_000

private func chatSettings(
    maxOutput: Int = 1 << 20, line: Int64 = 0, send: Int64 = 0, rate: Int = 0, burst: Int = 0
) -> ConnectionSettings {
    ConnectionSettings(limits: Limits(
        maxOutput: maxOutput, lineTimeoutNanoseconds: line, sendTimeoutNanoseconds: send, rateLimit: rate, rateBurst: burst))
}

/// Runs a paused machine's timers and turns, from one deadline to the next,
/// until the lines it read wait no more (or `limit`); returns the time then.
private func drainWaitingLines(_ machine: inout ConnectionMachine, _ io: inout FakeIO, within limit: Int64) -> Int64 {
    var now: Int64 = 0
    while !machine.input.isEmpty && now < limit {
        now = machine.nextDeadline ?? now + 10 * millisecond
        machine.tick(now: now, io: &io)
        machine.takeTurn(now: now, io: &io)
        machine.flush(now: now, io: &io)
    }
    return now
}

/// `count` numbered lines `/nick nK` (each gets a reply), as one read.
private func nickLines(_ count: Int, from first: Int = 0) -> [UInt8] {
    (first..<first + count).flatMap { bytes("/nick n\($0)\n") }
}

/// The `* you are now nK` replies among the written lines, as their numbers.
private func renames(in io: FakeIO) -> [Int] {
    io.lines.compactMap { line in line.hasPrefix("* you are now n") ? Int(line.dropFirst(15)) : nil }
}

@Suite("Abuse limits: fairness")
struct FairnessTests {
    @Test func aReadIsHandledAtMostLinesPerTurnAtATime() {
        var io = FakeIO(chat: true)
        var machine = ConnectionMachine(mode: .chat, settings: chatSettings(), now: 0)
        machine.flush(now: 0, io: &io)  // the welcome
        let turn = Limits.linesPerTurn
        nickLines(2 * turn + 5).withUnsafeBytes { machine.received($0, now: 0, io: &io) }
        machine.flush(now: 0, io: &io)
        #expect(renames(in: io) == Array(0..<turn))
        // The rest waits, unread past it, until the owner gives it a turn.
        #expect(!machine.wantsRead)
        #expect(machine.wantsTurn)
        machine.takeTurn(now: 0, io: &io)
        machine.flush(now: 0, io: &io)
        #expect(renames(in: io) == Array(0..<2 * turn))
        machine.takeTurn(now: 0, io: &io)
        machine.flush(now: 0, io: &io)
        #expect(renames(in: io) == Array(0..<2 * turn + 5))
        #expect(!machine.wantsTurn)
        #expect(machine.wantsRead)
        #expect(io.lineBudgets.allSatisfy { $0 == turn })
    }

    @Test func aClientWhoseQueueIsPastHalfOfMaxOutputIsNotReadUntilItDrains() {
        var io = FakeIO(chat: true)
        var machine = ConnectionMachine(mode: .chat, settings: chatSettings(maxOutput: 400), now: 0)
        io.maxOutput = 400
        io.room = 0  // it reads nothing
        machine.flush(now: 0, io: &io)
        let welcome = machine.output.count
        #expect(welcome < 200)
        nickLines(20).withUnsafeBytes { machine.received($0, now: 0, io: &io) }
        machine.flush(now: 0, io: &io)
        // Handling stopped as soon as its own replies passed half of max-output.
        #expect(machine.output.count > 200)
        #expect(machine.output.count <= 400)
        #expect(!machine.wantsRead)
        #expect(!machine.wantsTurn)
        #expect(machine.wantsWrite)
        #expect(machine.phase == .open)  // not a slow consumer: it only pays with its own time
        let handledWhileBlocked = io.lineBudgets.count
        machine.takeTurn(now: 0, io: &io)
        #expect(io.lineBudgets.count == handledWhileBlocked)
        io.room = nil  // it reads again
        machine.flush(now: 0, io: &io)
        while machine.wantsTurn {
            machine.takeTurn(now: 0, io: &io)
            machine.flush(now: 0, io: &io)
        }
        #expect(renames(in: io) == Array(0..<20))
    }
}

extension FairnessTests {
    /// Once the engine finds a client too slow, nothing more it sent is
    /// acted on (broadcast to its room): its session ends at the next flush.
    @Test func aClientFoundTooSlowHasNoMoreLinesHandledInItsTurn() {
        var io = FakeIO(chat: true)
        var machine = ConnectionMachine(mode: .chat, settings: chatSettings(), now: 0)
        machine.flush(now: 0, io: &io)
        io.mail.abort = .slowConsumer  // as the hub marks it when a line would pass max-output
        nickLines(10).withUnsafeBytes { machine.received($0, now: 0, io: &io) }
        #expect(io.lineBudgets.count == 1)
        #expect(io.core!.messagesIn == 1)  // the line during which it was found slow, and no other
        machine.flush(now: 0, io: &io)
        #expect(io.closes == [.failed(.slowConsumer)])
    }
}

@Suite("Abuse limits: rate limit")
struct RateLimitTests {
    @Test func theBucketAllowsTheBurstThenOneLinePerInterval() {
        let limits = Limits(rateLimit: 10, rateBurst: 3)
        var bucket = RateBucket()
        #expect(bucket.available(now: 0, limits: limits) == 3)
        bucket.spend(3, now: 0, limits: limits)
        #expect(bucket.available(now: 0, limits: limits) == 0)
        #expect(bucket.nextAllowed(now: 0, limits: limits) == 100 * millisecond)
        #expect(bucket.available(now: 99 * millisecond, limits: limits) == 0)
        #expect(bucket.available(now: 100 * millisecond, limits: limits) == 1)
        #expect(bucket.available(now: 10 * second, limits: limits) == 3)  // never more than the burst
        #expect(RateBucket().available(now: 0, limits: Limits()) == .max)  // off
        #expect(Limits(rateLimit: 7).effectiveRateBurst == 14)
    }

    @Test func aFlooderIsReadMoreSlowlyLosingNothingAndIsToldOnce() {
        var io = FakeIO(chat: true)
        var machine = ConnectionMachine(mode: .chat, settings: chatSettings(rate: 10, burst: 5), now: 0)
        machine.flush(now: 0, io: &io)
        nickLines(12).withUnsafeBytes { machine.received($0, now: 0, io: &io) }
        machine.flush(now: 0, io: &io)
        #expect(renames(in: io) == Array(0..<5))
        #expect(io.lines.filter { $0 == "* slow down: at most 10 lines per second" }.count == 1)
        #expect(io.rateLimits == [true])
        #expect(!machine.wantsRead && !machine.wantsTurn)
        #expect(machine.nextDeadline == 100 * millisecond)
        let now = drainWaitingLines(&machine, &io, within: 10 * second)
        #expect(renames(in: io) == Array(0..<12))  // every line, in order
        #expect(now == 700 * millisecond)  // one line per 100 ms after the burst
        #expect(io.lines.filter { $0.hasPrefix("* slow down") }.count == 1)  // one flood, one notice
        #expect(machine.wantsRead)
        // A second flood within the minute: paused again, but not told again.
        nickLines(20, from: 100).withUnsafeBytes { machine.received($0, now: now, io: &io) }
        machine.flush(now: now, io: &io)
        #expect(io.rateLimits == [true, false])
        #expect(io.lines.filter { $0.hasPrefix("* slow down") }.count == 1)
        // A paused client is not idle and is not timed out for its unfinished line.
        #expect(machine.phase == .open)
    }

    /// §3.6: a paused client is not idle. Its idle clock starts again when
    /// the server takes its last waiting lines, not from when they arrived.
    @Test func aPausedClientsIdleClockStartsWhenItsLinesAreTaken() {
        var io = FakeIO(chat: true)
        var settings = chatSettings(rate: 1, burst: 1)
        settings.limits.idleTimeoutNanoseconds = 2 * second
        var machine = ConnectionMachine(mode: .chat, settings: settings, now: 0)
        nickLines(7).withUnsafeBytes { machine.received($0, now: 0, io: &io) }
        machine.flush(now: 0, io: &io)
        let now = drainWaitingLines(&machine, &io, within: 20 * second)
        #expect(renames(in: io) == Array(0..<7))
        #expect(now == 6 * second)
        #expect(io.expiries.isEmpty)
        #expect(machine.nextDeadline == 8 * second)  // idle from the last line taken
        machine.tick(now: 8 * second - 1, io: &io)
        #expect(io.expiries.isEmpty)
        machine.tick(now: 8 * second, io: &io)
        #expect(io.expiries == [.idleTimeout])
    }

    @Test func turningTheLimitOffByReloadReleasesAPausedClient() {
        var io = FakeIO(chat: true)
        var machine = ConnectionMachine(mode: .chat, settings: chatSettings(rate: 1, burst: 1), now: 0)
        nickLines(3).withUnsafeBytes { machine.received($0, now: 0, io: &io) }
        machine.flush(now: 0, io: &io)
        #expect(renames(in: io) == [0])
        machine.update(chatSettings(), now: 1)
        machine.tick(now: 1, io: &io)
        machine.takeTurn(now: 1, io: &io)
        machine.flush(now: 1, io: &io)
        #expect(renames(in: io) == [0, 1, 2])
    }
}

@Suite("Abuse limits: send timeout")
struct SendTimeoutTests {
    @Test func echoOutputThatNobodyTakesClosesTheConnectionSilently() {
        var io = FakeIO(chat: false)
        var settings = chatSettings(maxOutput: 100, send: 5 * second)
        settings.limits.idleTimeoutNanoseconds = 2 * second  // a paused client is never idle
        var machine = ConnectionMachine(mode: .echo, settings: settings, now: 0)
        io.room = 0
        [UInt8](repeating: 0x61, count: 100).withUnsafeBytes { machine.received($0, now: 0, io: &io) }
        #expect(machine.paused)
        #expect(machine.nextDeadline == 5 * second)
        machine.tick(now: 4 * second, io: &io)
        #expect(machine.phase == .open)
        machine.tick(now: 5 * second, io: &io)
        #expect(io.closes == [.failed(.sendTimeout)])
        #expect(io.written.isEmpty)
    }

    @Test func anyProgressRestartsTheClock() {
        var io = FakeIO(chat: false)
        var machine = ConnectionMachine(mode: .echo, settings: chatSettings(send: 5 * second), now: 0)
        io.room = 0
        bytes("hello\n").withUnsafeBytes { machine.received($0, now: 0, io: &io) }
        io.room = 2
        machine.flush(now: 4 * second, io: &io)  // it took two bytes
        machine.tick(now: 8 * second, io: &io)
        #expect(machine.phase == .open)
        #expect(machine.nextDeadline == 9 * second)
        io.room = nil
        machine.flush(now: 8 * second, io: &io)
        #expect(machine.nextDeadline == nil)  // nothing waits: no clock
        #expect(io.text == "hello\n")
    }

    @Test func chatTellsTheRoomSendTimeout() {
        let core = ChatCore(maxLine: 100)
        let room = RecordingOutput()
        for id in [1, 2] {
            room.opened(ConnectionID(id))
            core.connect(ConnectionID(id), output: room)
        }
        core.disconnect(ConnectionID(1), reason: .sendTimeout, output: room)
        #expect(room.lines[ConnectionID(2)]?.last == "* guest1 left #lobby (send timeout)")
        // The client itself is not told: it is not reading.
        #expect(room.lines[ConnectionID(1)] == ["* welcome guest1, you are in #lobby (1 here); /help lists commands", "* guest2 joined #lobby"])
    }
}

@Suite("Abuse limits: cheap lists")
struct CheapListTests {
    @Test func whoAndRoomsStayRightAcrossEveryChange() {
        let core = ChatCore(maxLine: 100)
        let output = RecordingOutput()
        let ids = (1...4).map(ConnectionID.init)
        for id in ids {
            output.opened(id)
            core.connect(id, output: output)
        }
        func ask(_ line: String, _ id: ConnectionID = ConnectionID(1)) -> String {
            bytes(line + "\n").withUnsafeBytes { _ = core.receive($0, from: id, output: output) }
            return output.lines[id]!.last!
        }
        #expect(ask("/who") == "* #lobby: guest1, guest2, guest3, guest4 (4)")
        _ = ask("/nick Zed", ConnectionID(2))
        #expect(ask("/who") == "* #lobby: guest1, guest3, guest4, Zed (4)")
        _ = ask("/nick alpha", ConnectionID(3))
        #expect(ask("/who") == "* #lobby: alpha, guest1, guest4, Zed (4)")
        _ = ask("/join Side", ConnectionID(4))
        #expect(ask("/who") == "* #lobby: alpha, guest1, Zed (3)")
        #expect(ask("/rooms") == "* rooms: #lobby (3), #Side (1)")
        core.disconnect(ConnectionID(4), reason: .connectionError, output: output)
        #expect(ask("/rooms") == "* rooms: #lobby (3)")
        core.disconnect(ConnectionID(2), reason: .connectionError, output: output)
        #expect(ask("/who") == "* #lobby: alpha, guest1 (2)")
        #expect(ask("/rooms") == "* rooms: #lobby (2)")
        #expect(output.violations.isEmpty)
    }

    @Test func receiveStopsAfterMaxLinesAndReportsWhatItTook() {
        let core = ChatCore(maxLine: 100)
        let output = RecordingOutput()
        output.opened(ConnectionID(1))
        core.connect(ConnectionID(1), output: output)
        let input = bytes("/who\n/who\n/who\npartial")
        let intake = input.withUnsafeBytes { core.receive($0, from: ConnectionID(1), output: output, maxLines: 2) }
        #expect(intake == ChatCore.Intake(consumed: 10, lines: 2))
        let rest = Array(input[10...])
        let second = rest.withUnsafeBytes { core.receive($0, from: ConnectionID(1), output: output, maxLines: 2) }
        #expect(second == ChatCore.Intake(consumed: rest.count, lines: 1))
        #expect(core.hasPartialLine(ConnectionID(1)))
        #expect(output.lines[ConnectionID(1)]!.filter { $0.hasPrefix("* #lobby") }.count == 3)
    }
}
