import Testing

@testable import EchoChatCore

/// A recording `ConnectionIO`: a pretend kernel that takes at most `room`
/// bytes (then would block), and for chat a real `ChatCore` in which this
/// connection is client #1 (what the core sends to it lands in `mailbox`).
final class FakeIO: ConnectionIO, ChatOutput {
    /// Bytes the kernel will still take; nil = unlimited.
    var room: Int?
    /// The most one write takes (a reader that keeps pace); nil = all it may.
    var perWrite: Int?
    var failWrites = false
    var written: [UInt8] = []
    var writesAfterClose = 0
    var shutdowns = 0
    var closes: [CloseCause] = []
    var sessionsEnded = 0
    var expiries: [DisconnectReason] = []
    var disconnects: [DisconnectReason] = []
    /// `chatRateLimited` calls: whether each was to notify the client.
    var rateLimits: [Bool] = []
    /// `maxLines` of every `chatReceive`.
    var lineBudgets: [Int] = []
    var mailbox = ByteQueue()
    var mail = Mail()
    let core: ChatCore?
    static let id = ConnectionID(1)

    /// Files: an in-memory store that answers at once (in the next `collect`).
    var files: [String: [UInt8]] = [:]
    var uploading: (name: String, size: Int, bytes: [UInt8])?
    var downloading: (bytes: [UInt8], offset: Int)?
    var fileCalls: [String] = []
    /// The store fails the upload after this many bytes (a full disk).
    var failUploadAfter: Int?

    /// Cluster events the core published (with `node`).
    var published: [ClusterEvent] = []

    /// `node`: a clustered core, its link up (`published` starts empty);
    /// the client's guest claim has come back (it is welcomed) unless
    /// `welcomed` is false (then `published` holds the claim).
    init(
        chat: Bool, maxLine: Int = 4096, fileSharing: FileSharing? = nil, catalog: FileCatalog = FileCatalog(), node: String? = nil,
        welcomed: Bool = true
    ) {
        core = chat ? ChatCore(maxLine: maxLine, fileSharing: fileSharing, catalog: catalog, node: node) : nil
        if node != nil { core?.clusterUp(output: self) }
        published = []
        core?.connect(Self.id, output: self)
        guard welcomed else { return }
        for event in published { core?.apply(event, output: self) }
        published = []
    }

    var text: String { String(decoding: written, as: UTF8.self) }
    var lines: [String] { text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init) }

    // ConnectionIO
    func write(_ bytes: UnsafeRawBufferPointer) -> Int? {
        if !closes.isEmpty { writesAfterClose += 1 }
        if failWrites { return nil }
        let count = min(bytes.count, room ?? .max, perWrite ?? .max)
        written.append(contentsOf: bytes[0..<count])
        if let room { self.room = room - count }
        return count
    }
    func shutdownWrite() { shutdowns += 1 }
    func close(_ cause: CloseCause) { closes.append(cause) }
    func sessionEnded() { sessionsEnded += 1 }
    func expired(_ reason: DisconnectReason) { expiries.append(reason) }
    /// The server's `max-output`, for the fairness rule.
    var maxOutput = Limits().maxOutput
    func chatReceive(_ bytes: UnsafeRawBufferPointer, maxLines: Int, queuedBytes: Int) -> ChatIntake {
        lineBudgets.append(maxLines)
        let limits = Limits(maxOutput: maxOutput)
        let intake = core!.receive(bytes, from: Self.id, output: self, maxLines: maxLines) {
            self.mail.abort == nil && !limits.chatInputBlocked(queuedBytes: queuedBytes + self.mailbox.count)
        }
        return ChatIntake(
            consumed: intake.consumed, lines: intake.lines, partialLine: core!.hasPartialLine(Self.id),
            upload: intake.upload, download: intake.download, held: intake.held)
    }
    func uploadBegin(name: String, size: Int) {
        fileCalls.append("begin \(name) \(size)")
        uploading = (name, size, [])
    }
    func uploadData(_ bytes: UnsafeRawBufferPointer) {
        guard var current = uploading else { return fileCalls.append("data after the end") }
        if let limit = failUploadAfter, current.bytes.count + bytes.count > limit {
            uploading = nil
            core!.uploadFailed(Self.id, size: current.size, reason: "No space left on device", output: self)
            mail.files.append(.uploadEnded)
            return
        }
        current.bytes += bytes
        uploading = current
        mail.files.append(.uploadWritten(bytes.count))
    }
    func uploadEnd() {
        guard let current = uploading else { return }
        fileCalls.append("end")
        uploading = nil
        if current.bytes.count != current.size { fileCalls.append("short upload") }
        let name = core!.claimUpload(Self.id, requested: current.name, size: current.size, avoiding: Set(files.keys))!
        files[name] = current.bytes
        core!.uploadStored(Self.id, name: name, size: current.size, sha256: Self.digest(current.bytes), output: self)
        mail.files.append(.uploadEnded)
    }
    func uploadAbort() {
        fileCalls.append("abort")
        uploading = nil
    }
    func downloadBegin(_ name: String) {
        fileCalls.append("download \(name)")
        guard let bytes = files[name] else { return mail.files.append(.downloadFailed) }
        downloading = (bytes, 0)
        mail.files.append(.downloadOpened(size: bytes.count, sha256: Self.digest(bytes)))
    }
    func downloadRead(max: Int) {
        guard let current = downloading else { return fileCalls.append("read without a download") }
        let end = min(current.bytes.count, current.offset + max)
        mail.files.append(.downloadData(Array(current.bytes[current.offset..<end])))
        downloading = (current.bytes, end)
    }
    func downloadEnd() {
        fileCalls.append("download end")
        downloading = nil
    }
    /// Stands in for the SHA-256 the real store computes.
    static func digest(_ bytes: [UInt8]) -> String {
        var sum: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in bytes { sum = (sum ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return String(sum, radix: 16)
    }
    func chatRateLimited(linesPerSecond: Int, notify: Bool) {
        rateLimits.append(notify)
        core?.rateLimited(Self.id, linesPerSecond: linesPerSecond, notify: notify, output: self)
    }
    func chatEndOfInput() { core!.endOfInput(from: Self.id, output: self) }
    func chatDisconnect(_ reason: DisconnectReason) {
        disconnects.append(reason)
        core?.disconnect(Self.id, reason: reason, output: self)
    }
    func collect(into output: inout ByteQueue) -> Mail {
        mailbox.withReadableBytes { output.append($0) }
        mailbox.removeAll()
        defer { mail = Mail() }
        return mail
    }

    // ChatOutput (the core talking to this one client)
    func send(_ line: [UInt8], to id: ConnectionID) { if id == Self.id { mailbox.append(line) } }
    func close(_ id: ConnectionID) { if id == Self.id { mail.closeRequested = true } }
    func transportStats() -> TransportStats { TransportStats(strategy: "test") }
    func publish(_ event: ClusterEvent, room: String?) { published.append(event) }
    func resume(_ id: ConnectionID) { if id == Self.id { mail.resumed = true } }
}

private let second: Int64 = 1_000_000_000

private func settings(
    maxOutput: Int = 1 << 20, idle: Int64 = 0, line: Int64 = 0, close: Int64 = 30 * second, linger: Int64 = 2 * second
) -> ConnectionSettings {
    ConnectionSettings(
        limits: Limits(maxOutput: maxOutput, idleTimeoutNanoseconds: idle, lineTimeoutNanoseconds: line),
        closeTimeoutNanoseconds: close, lingerNanoseconds: linger)
}

extension ConnectionMachine {
    /// Feeds `input` cut by `chunking`, each piece within the read budget,
    /// flushing after every read as the driver does.
    mutating func feed(_ input: [UInt8], _ chunking: Chunking, now: Int64, io: inout FakeIO) {
        var cutter = Chunking.Cutter(chunking)
        input.withUnsafeBytes { all in
            for piece in cutter.pieces(count: input.count) {
                var start = piece.lowerBound
                while start < piece.upperBound {
                    let budget = readBudget(piece.upperBound - start)
                    if budget == 0 {
                        // Backpressure: the client waits until the kernel drains.
                        io.room = nil
                        flush(now: now, io: &io)
                        continue
                    }
                    received(UnsafeRawBufferPointer(rebasing: all[start..<start + budget]), now: now, io: &io)
                    flush(now: now, io: &io)
                    // Fairness: lines beyond one turn wait for the next turns.
                    while wantsTurn {
                        takeTurn(now: now, io: &io)
                        flush(now: now, io: &io)
                    }
                    start += budget
                }
            }
        }
    }
}

@Suite("Connection machine: echo")
struct EchoConnectionTests {
    @Test(arguments: Chunking.standard)
    func echoesEveryByteInOrderWhateverTheChunking(chunking: Chunking) {
        var generator = SeededGenerator(seed: 3)
        let input = (0..<5000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        var io = FakeIO(chat: false)
        var machine = ConnectionMachine(mode: .echo, settings: settings(maxOutput: 700), now: 0)
        machine.feed(input, chunking, now: 0, io: &io)
        io.room = nil
        machine.flush(now: 0, io: &io)
        #expect(io.written == input)
        #expect(machine.output.isEmpty)
    }

    @Test func writesFirstAndQueuesOnlyWhatTheKernelDidNotTake() {
        var io = FakeIO(chat: false)
        var machine = ConnectionMachine(mode: .echo, settings: settings(), now: 0)
        io.room = 3
        bytes("hello\n").withUnsafeBytes { machine.received($0, now: 0, io: &io) }
        #expect(io.text == "hel")
        #expect(machine.output.count == 3)
        #expect(machine.wantsWrite)
        io.room = nil
        machine.flush(now: 0, io: &io)
        #expect(io.text == "hello\n")
        #expect(!machine.wantsWrite)
    }

    @Test func pausesAtMaxOutputAndResumesAtHalf() {
        var io = FakeIO(chat: false)
        var machine = ConnectionMachine(mode: .echo, settings: settings(maxOutput: 100, idle: 10 * second), now: 0)
        io.room = 0
        [UInt8](repeating: 0x61, count: 100).withUnsafeBytes { machine.received($0, now: 0, io: &io) }
        #expect(machine.paused)
        #expect(!machine.wantsRead)
        #expect(machine.readBudget(4096) == 0)
        io.room = 49  // 51 left: more than half
        machine.flush(now: 1, io: &io)
        #expect(machine.paused)
        io.room = 1  // 50 left: exactly half
        machine.flush(now: 2, io: &io)
        #expect(!machine.paused)
        #expect(machine.wantsRead)
        #expect(machine.readBudget(4096) == 50)
        // The idle clock restarted when reading resumed.
        #expect(machine.nextDeadline == 2 + 10 * second)
    }

    /// A client that reads as fast as the server writes: the flush stops
    /// where the queue reaches half, so reading resumes there, not after the
    /// whole queue was written.
    @Test func aFlushStopsWhereReadingMayResume() {
        var io = FakeIO(chat: false)
        var machine = ConnectionMachine(mode: .echo, settings: settings(maxOutput: 100), now: 0)
        io.room = 0
        [UInt8](repeating: 0x61, count: 100).withUnsafeBytes { machine.received($0, now: 0, io: &io) }
        #expect(machine.paused)
        io.room = nil
        io.perWrite = 10
        machine.flush(now: 1, io: &io)
        #expect(!machine.paused)
        #expect(machine.output.count == 50)
        #expect(machine.wantsRead && machine.wantsWrite)
        machine.flush(now: 2, io: &io)
        #expect(machine.output.isEmpty)
        #expect(io.written.count == 100)
    }

    @Test func endOfInputDeliversThenClosesWithoutLingering() {
        var io = FakeIO(chat: false)
        var machine = ConnectionMachine(mode: .echo, settings: settings(), now: 0)
        io.room = 2
        bytes("abcd").withUnsafeBytes { machine.received($0, now: 0, io: &io) }
        machine.endOfInput(now: 0, io: &io)
        machine.flush(now: 0, io: &io)
        #expect(io.closes.isEmpty)
        io.room = nil
        machine.flush(now: 0, io: &io)
        #expect(io.text == "abcd")
        #expect(io.closes == [.finished])
        #expect(io.shutdowns == 0)
        #expect(io.sessionsEnded == 1)
    }

    @Test func idleTimeoutFiresOnceThenTheSessionEnds() {
        var io = FakeIO(chat: false)
        var machine = ConnectionMachine(mode: .echo, settings: settings(idle: 5 * second), now: 0)
        #expect(machine.nextDeadline == 5 * second)
        machine.tick(now: 5 * second - 1, io: &io)
        #expect(io.expiries.isEmpty)
        machine.tick(now: 5 * second, io: &io)
        machine.tick(now: 6 * second, io: &io)
        #expect(io.expiries == [.idleTimeout])
        machine.flush(now: 6 * second, io: &io)
        #expect(machine.phase == .lingering)
        #expect(io.shutdowns == 1)
        machine.tick(now: 8 * second, io: &io)
        #expect(io.closes == [.lingerEnded])
    }

    @Test func aWriteErrorClosesAndDropsTheQueue() {
        var io = FakeIO(chat: false)
        var machine = ConnectionMachine(mode: .echo, settings: settings(), now: 0)
        io.failWrites = true
        bytes("x").withUnsafeBytes { machine.received($0, now: 0, io: &io) }
        #expect(io.closes == [.failed(.connectionError)])
        #expect(machine.output.isEmpty)
        #expect(!machine.wantsRead && !machine.wantsWrite && machine.nextDeadline == nil)
    }

    @Test func aRefusedConnectionGetsItsLineThenLingersUntilThePeerCloses() {
        var io = FakeIO(chat: false)
        var machine = ConnectionMachine(refusing: Replies.serverFull, mode: .echo, settings: settings(), now: 0)
        #expect(!machine.admitted && machine.wantsWrite && !machine.wantsRead)
        machine.flush(now: 0, io: &io)
        #expect(io.written == Replies.serverFull)
        #expect(machine.phase == .lingering && io.shutdowns == 1)
        bytes("ignored").withUnsafeBytes { machine.received($0, now: 0, io: &io) }
        machine.endOfInput(now: 1, io: &io)
        #expect(io.closes == [.finished])
        #expect(io.sessionsEnded == 0)  // never a client
    }

    @Test func withoutLingerARefusalClosesRightAfterItsLine() {
        var io = FakeIO(chat: false)
        var machine = ConnectionMachine(refusing: Replies.serverFull, mode: .chat, settings: settings(linger: 0), now: 0)
        machine.flush(now: 0, io: &io)
        #expect(io.written == Replies.serverFull && io.closes == [.finished] && io.shutdowns == 0)
    }

    @Test func aFinishedSessionThatNeverReadsIsClosedAtTheCloseTimeout() {
        var io = FakeIO(chat: false)
        var machine = ConnectionMachine(mode: .echo, settings: settings(close: 3 * second), now: 0)
        io.room = 0
        bytes("stuck").withUnsafeBytes { machine.received($0, now: 0, io: &io) }
        machine.endOfInput(now: second, io: &io)
        #expect(machine.nextDeadline == 4 * second)
        machine.tick(now: 4 * second, io: &io)
        #expect(io.closes == [.closeTimeout])
    }

    @Test func shutdownClosesEverythingByItsDeadline() {
        var io = FakeIO(chat: false)
        var machine = ConnectionMachine(mode: .echo, settings: settings(), now: 0)
        var stopping = settings()
        stopping.shutdownDeadline = 5 * second
        machine.update(stopping, now: second)
        #expect(machine.phase == .closing)
        machine.flush(now: second, io: &io)
        #expect(machine.phase == .lingering && machine.nextDeadline == 3 * second)  // linger 2 s < deadline
        var late = settings()
        late.shutdownDeadline = 2 * second
        machine.update(late, now: second)  // a deadline set once is not moved
        machine.tick(now: 3 * second, io: &io)
        #expect(io.closes == [.lingerEnded])
    }
}

@Suite("Connection machine: chat")
struct ChatConnectionTests {
    /// A chat session: welcome, commands, a message, an overlong line, /quit.
    static let session = bytes("/nick alice\n/who\n/rooms\nhello\n" + String(repeating: "x", count: 5000) + "\n/quit bye\n")

    @Test(arguments: Chunking.standard)
    func theSameRepliesWhateverTheChunking(chunking: Chunking) {
        var io = FakeIO(chat: true)
        var machine = ConnectionMachine(mode: .chat, settings: settings(), now: 0)
        machine.flush(now: 0, io: &io)
        machine.feed(Self.session, chunking, now: 0, io: &io)
        #expect(
            io.lines == [
                "* welcome guest1, you are in #lobby (1 here); /help lists commands", "* you are now alice",
                "* #lobby: alice (1)", "* rooms: #lobby (1)", "! line too long (max 4096 bytes)", "* bye",
            ])
        #expect(machine.phase == .lingering)
        machine.endOfInput(now: 0, io: &io)
        #expect(io.closes == [.finished])
    }

    @Test func lineTimeoutTellsTheClientOnceAndCloses() {
        var io = FakeIO(chat: true)
        var machine = ConnectionMachine(mode: .chat, settings: settings(line: 4 * second), now: 0)
        bytes("unfinished").withUnsafeBytes { machine.received($0, now: second, io: &io) }
        #expect(machine.nextDeadline == 5 * second)
        machine.tick(now: 5 * second, io: &io)
        machine.tick(now: 5 * second, io: &io)
        machine.flush(now: 5 * second, io: &io)
        #expect(io.disconnects == [.lineTimeout])
        #expect(io.lines.last == "* line timeout")
        #expect(machine.phase == .lingering)
    }

    /// The line timeout measures each line: a read that ends one line and
    /// starts the next restarts the clock, as it would had the reads been
    /// cut at the LF. (Otherwise a client streaming lines whose reads all end
    /// mid-line would be cut off after `line-timeout` of steady sending.)
    @Test func aReadThatEndsALineAndStartsAnotherRestartsTheLineClock() {
        var io = FakeIO(chat: true)
        var machine = ConnectionMachine(mode: .chat, settings: settings(line: 4 * second), now: 0)
        bytes("first").withUnsafeBytes { machine.received($0, now: 0, io: &io) }
        bytes(" line\nsecond").withUnsafeBytes { machine.received($0, now: 3 * second, io: &io) }
        #expect(machine.nextDeadline == 7 * second)
        machine.tick(now: 5 * second, io: &io)
        #expect(io.disconnects.isEmpty)
        bytes(" line").withUnsafeBytes { machine.received($0, now: 6 * second, io: &io) }
        machine.tick(now: 7 * second, io: &io)
        #expect(io.disconnects == [.lineTimeout])
    }

    @Test func aQueuePastMaxOutputIsASlowConsumer() {
        var io = FakeIO(chat: true)
        var machine = ConnectionMachine(mode: .chat, settings: settings(maxOutput: 100), now: 0)
        io.room = 0
        machine.flush(now: 0, io: &io)  // the welcome (70 bytes) stays queued
        #expect(io.closes.isEmpty)
        io.mailbox.append([UInt8](repeating: 0x61, count: 40))
        machine.flush(now: 0, io: &io)
        #expect(io.closes == [.failed(.slowConsumer)])
        #expect(io.disconnects == [.slowConsumer])
    }

    @Test func anAbortInTheMailEndsTheSession() {
        var io = FakeIO(chat: true)
        var machine = ConnectionMachine(mode: .chat, settings: settings(), now: 0)
        io.mail.abort = .slowConsumer
        machine.flush(now: 0, io: &io)
        #expect(io.closes == [.failed(.slowConsumer)])
    }

    /// Cluster (§6): a `/nick` claim travels through the stream; until the
    /// engine has decided it, the client's next lines are neither handled
    /// nor read, whatever the chunking, and no timer counts it as idle.
    @Test(arguments: Chunking.standard)
    func aNickClaimHoldsTheInputUntilItIsDecided(chunking: Chunking) {
        var io = FakeIO(chat: true, node: "a")
        var machine = ConnectionMachine(mode: .chat, settings: settings(idle: 5 * second), now: 0)
        machine.feed(bytes("/nick bob\nhello\n/join\n"), chunking, now: 0, io: &io)
        #expect(io.lines == ["* welcome guest1, you are in #lobby (1 here); /help lists commands"])
        #expect(!machine.wantsRead && !machine.wantsTurn)
        #expect(io.published == [.nick(RemoteClientID(node: "a", id: 1), since: 0, nick: "bob")])
        machine.tick(now: 60 * second, io: &io)
        #expect(io.expiries.isEmpty)
        // The claim comes back through the stream: decided, and resumed.
        io.core!.apply(io.published[0], output: io)
        machine.flush(now: 60 * second, io: &io)
        while machine.wantsTurn {
            machine.takeTurn(now: 60 * second, io: &io)
            machine.flush(now: 60 * second, io: &io)
        }
        #expect(machine.wantsRead)
        #expect(io.lines.dropFirst() == ["* you are now bob", "! usage: /join ROOM"])
        #expect(io.published.dropFirst() == [.say(RemoteClientID(node: "a", id: 1), text: bytes("hello"))])
    }
}

extension ChatConnectionTests {
    /// Cluster (§6): a guest number is claimed before the welcome; what
    /// the client sends meanwhile is neither handled nor read past one
    /// read, whatever the chunking, and is handled once it is welcomed.
    @Test(arguments: Chunking.standard)
    func theWelcomeWaitsForTheGuestClaimAndSoDoesTheInput(chunking: Chunking) {
        var io = FakeIO(chat: true, node: "a", welcomed: false)
        var machine = ConnectionMachine(mode: .chat, settings: settings(idle: 5 * second), now: 0)
        #expect(io.published == [.hello(RemoteClientID(node: "a", id: 1), since: 0, nick: "guest1", room: "lobby")])
        machine.feed(bytes("hello\n/join\n"), chunking, now: 0, io: &io)
        #expect(io.lines == [])
        #expect(!machine.wantsRead && !machine.wantsTurn)
        #expect(io.published.count == 1)
        // The claim comes back through the stream: welcomed, and resumed.
        io.core!.apply(io.published[0], output: io)
        machine.flush(now: 1, io: &io)
        while machine.wantsTurn {
            machine.takeTurn(now: 1, io: &io)
            machine.flush(now: 1, io: &io)
        }
        #expect(machine.wantsRead)
        #expect(io.lines == ["* welcome guest1, you are in #lobby (1 here); /help lists commands", "! usage: /join ROOM"])
        #expect(io.published.dropFirst() == [.say(RemoteClientID(node: "a", id: 1), text: bytes("hello"))])
    }
}

/// Random event sequences against the invariants the strategies rely on.
@Suite("Connection machine: model")
struct ConnectionModelTests {
    enum Event: CaseIterable { case read, eof, writable, kernelFull, tick, mail, close, shutdown, error, turn }

    @Test(arguments: [ConnectionMachine.Mode.echo, .chat], 1...40)
    func invariantsHoldOverRandomEvents(mode: ConnectionMachine.Mode, seed: Int) {
        var generator = SeededGenerator(seed: UInt64(seed) &* 7919)
        let maxOutput = 300
        var base = settings(maxOutput: maxOutput, idle: 7 * second, line: 5 * second, close: 4 * second, linger: 2 * second)
        base.limits.sendTimeoutNanoseconds = 6 * second
        base.limits.rateLimit = seed % 2 == 0 ? 3 : 0
        var io = FakeIO(chat: mode == .chat)
        io.maxOutput = maxOutput
        var machine = ConnectionMachine(mode: mode, settings: base, now: 0)
        var now: Int64 = 0
        var sent: [UInt8] = []  // echo: what the client sent that was read
        var shutdownAt: Int64?
        for _ in 0..<300 {
            let event = Event.allCases.randomElement(using: &generator)!
            switch event {
            case .read:
                guard machine.wantsRead else { continue }
                let count = machine.readBudget(Int.random(in: 1...120, using: &generator))
                if count == 0 { continue }
                var chunk = (0..<count).map { _ in UInt8.random(in: 0x20...0x7E, using: &generator) }
                if mode == .chat && Bool.random(using: &generator) { chunk[count - 1] = 0x0A }
                if machine.phase == .open && !machine.inputClosed { sent += chunk }
                chunk.withUnsafeBytes { machine.received($0, now: now, io: &io) }
            case .eof: if machine.wantsRead { machine.endOfInput(now: now, io: &io) }
            case .writable: io.room = Int.random(in: 0...200, using: &generator)
            case .kernelFull: io.room = 0
            case .tick: now += Int64.random(in: 0...(3 * second), using: &generator)
                machine.tick(now: now, io: &io)
            case .mail: if mode == .chat { io.mailbox.append(bytes("* note\n")) }
            case .close: machine.requestClose(now: now)
            case .shutdown:
                if shutdownAt == nil { shutdownAt = now + 3 * second }
                var stopping = base
                stopping.shutdownDeadline = shutdownAt
                machine.update(stopping, now: now)
            case .error: if Int.random(in: 0..<10, using: &generator) == 0 { machine.failed(.connectionError, io: &io) }
            case .turn: machine.takeTurn(now: now, io: &io)
            }
            machine.flush(now: now, io: &io)

            // Nothing is written after close, and close happens at most once.
            #expect(io.writesAfterClose == 0)
            #expect(io.closes.count <= 1)
            #expect(machine.isClosed == (io.closes.count == 1))
            // The queue never passes its bound (chat: or the client is gone).
            #expect(machine.output.count <= maxOutput)
            // Lines waiting for a turn: at most one read's worth, and nothing more is read meanwhile.
            #expect(machine.input.count <= 120)
            #expect(machine.input.isEmpty || !machine.wantsRead)
            // A client waiting for a turn or a refill always has a way forward.
            if !machine.input.isEmpty && machine.phase == .open { #expect(machine.wantsTurn || machine.nextDeadline != nil || machine.wantsWrite) }
            // Echo: paused exactly while the queue is above half of max-output.
            if mode == .echo && machine.phase == .open {
                #expect(!machine.paused || machine.output.count > maxOutput / 2)
            }
            // Echo: what was written is exactly a prefix of what was read, in order.
            if mode == .echo && !machine.isClosed {
                #expect(io.written == Array(sent.prefix(io.written.count)))
                #expect(io.written.count + machine.output.count == sent.count)
            }
            // A closed connection asks for nothing and has no timer.
            if machine.isClosed { #expect(!machine.wantsRead && !machine.wantsWrite && machine.nextDeadline == nil) }
            // Shutdown: nothing outlives the deadline.
            if let shutdownAt, now >= shutdownAt { #expect(machine.isClosed) }
            // Every timer fires when due: time only moves in `tick`, which
            // acts on whatever is due, so no deadline is ever left behind.
            if let deadline = machine.nextDeadline { #expect(deadline > now) }
            // Each timeout fired at most once.
            #expect(io.expiries.count <= 1)
            #expect(io.sessionsEnded <= (machine.admitted ? 1 : 0))
        }
    }
}
