import EchoChatCore

/// One run of a `FuzzScript` against a chat server made of the real parts and
/// faked plumbing: the real `ChatCore`, one real `ConnectionMachine` per
/// connection, and in memory what the server does around them: `ChatHub`'s
/// queueing with its `max-output` rule (a line that would take a recipient's
/// queue, collected and not, past `max-output` marks it a slow consumer), the
/// socket's send buffer, the clients.
///
/// A turn is what the server does after one operation: serve the connection
/// it concerns (read what the client sent, in pieces the run's `Cutter`
/// chooses, flushing after each read as `Connection.serve` does), then
/// deliver: flush every connection until no mail is left, and read again
/// any connection that wants to and has input waiting. While a burst is
/// read, the fake kernel takes no output, so what `max-output` sees does not
/// depend on how the burst was cut; it takes output when the turn delivers.
///
/// After every turn the run checks the registry, the queues and the
/// framers; at the end, everything each client received. Problems go to
/// `problems`, never to a trap, so the caller can report them all.
final class ChatSimulation {
    let config: FuzzScript.Config
    let name: String
    let core: ChatCore
    private(set) var settings: ConnectionSettings
    private(set) var now: Int64 = 0
    /// Every connection ever opened, by serial number.
    private(set) var connections: [SimConnection] = []
    /// Connections not closed yet, oldest first.
    private(set) var live: [SimConnection] = []
    private(set) var problems: [String] = []
    /// A session ended by a failure, or stopped reading, between two pieces
    /// of one burst: the whole-input run read that burst to its end, so from
    /// here on the two runs may legitimately differ (the server handles what
    /// it has read).
    private(set) var burstCutShort = false
    private(set) var isShutDown = false
    let faults: Set<Fault>

    private var cutter: Cutter
    fileprivate var kernelTakesOutput = true
    /// At the end every client reads everything: the kernel takes it all.
    fileprivate var unboundedKernel = false
    /// Ids a connection closed under while the core still had them (a
    /// defect already reported): not handed out again, or the core would trap.
    private var ghostIDs: Set<Int> = []
    fileprivate let output = ChatOutputModel()
    fileprivate var hub: [ConnectionID: SimConnection] = [:]
    fileprivate var tap: (id: ConnectionID, lines: [[UInt8]])?
    private var step = 0

    static let second: Int64 = 1_000_000_000
    static let maxConnections = 8

    /// Deliberate defects, to prove that the checks can fail. Never set by the fuzzer.
    enum Fault: Hashable {
        /// The plumbing forgets the `max-output` rule.
        case ignoreMaxOutput
        /// A connection that fails is closed without telling the core.
        case forgetFailedSessions
        /// An ESC byte goes out before every 5th line.
        case injectEscape
        /// The chunked run loses the last byte of every piece of 2 or more.
        case loseByteBetweenPieces
    }

    init(_ script: FuzzScript, cutter: Cutter, name: String, faults: Set<Fault> = []) {
        config = script.config
        self.name = name
        self.cutter = cutter
        self.faults = faults
        core = ChatCore(maxLine: config.maxLine)
        let limits = Limits(
            maxClients: config.maxClients, maxLine: config.maxLine, maxOutput: config.maxOutput,
            idleTimeoutNanoseconds: Int64(config.idleTimeoutSeconds) * Self.second,
            lineTimeoutNanoseconds: Int64(config.lineTimeoutSeconds) * Self.second)
        settings = ConnectionSettings(
            limits: limits, closeTimeoutNanoseconds: Int64(config.closeTimeoutSeconds) * Self.second,
            lingerNanoseconds: config.linger ? ConnectionSettings.defaultLinger : 0)
        output.simulation = self
    }

    func problem(_ text: String) { problems.append("step \(step): \(text)") }

    // MARK: - Operations

    func perform(_ operation: FuzzScript.Operation) {
        guard !isShutDown else { return }
        step += 1
        switch operation {
        case .connect:
            connect()
        case .send(let selector, let bytes):
            guard let connection = pick(selector), !connection.sendingClosed else { break }
            connection.inbound += bytes
            read(connection)
        case .endOfInput(let selector):
            guard let connection = pick(selector), !connection.sendingClosed else { break }
            connection.sendingClosed = true
            read(connection)
        case .reset(let selector):
            guard let connection = pick(selector) else { break }
            connection.peerGone = true
            connection.sendingClosed = true
            withIO(connection) { machine, io in machine.failed(.connectionError, io: &io) }
        case .breakWrites(let selector):
            pick(selector)?.writesFail = true
        case .tick(let milliseconds):
            now += Int64(milliseconds) * 1_000_000
            for connection in live { withIO(connection) { machine, io in machine.tick(now: now, io: &io) } }
        case .read(let selector, let count):
            guard let connection = pick(selector) else { break }
            connection.kernelHolds -= min(count ?? .max, connection.kernelHolds)
        case .audit(let selector):
            guard let connection = pick(selector) else { break }
            audit(connection)
        case .shutdown:
            shutdown()
        }
        deliver()
        readWhatWaits()
        check()
    }

    /// Readiness is level-triggered: a connection that stopped reading with
    /// input waiting (or its EOF) is read again once it wants to, after the
    /// deliveries that made it want to.
    private func readWhatWaits() {
        var rounds = 0
        while let connection = live.first(where: {
            $0.wantsTurn || ($0.wantsRead && ($0.hasUnreadInput || $0.hasUnreadEndOfInput))
        }) {
            rounds += 1
            if rounds > 1000 { return problem("reading never settles") }
            if connection.wantsTurn {
                takeTurns(connection)  // lines read earlier, before reading more
            } else {
                read(connection)
            }
            deliver()
        }
    }

    /// The end of the script: every client reads everything, the server
    /// delivers all it can; then every transcript is checked.
    func finish() {
        if !isShutDown {
            step += 1
            unboundedKernel = true
            deliver()
            readWhatWaits()
            for connection in live where connection.wantsWrite && !connection.writesFail {
                problem("\(connection) still has \(connection.outputCount) bytes queued with room in the kernel")
            }
        }
        for connection in connections {
            let cutOff: Bool
            switch connection.closeCause {
            case nil, .finished?, .lingerEnded?: cutOff = false
            case .failed?, .closeTimeout?, .shutdownDeadline?: cutOff = true
            }
            for text in Invariants.transcriptProblems(
                connection.received, admitted: connection.admitted, cutOff: cutOff)
            {
                problems.append("\(connection) received: \(text)")
            }
        }
    }

    private func pick(_ selector: Int) -> SimConnection? {
        live.isEmpty ? nil : live[selector % live.count]
    }

    private func connect() {
        guard live.count < Self.maxConnections else { return }  // out of descriptors: not accepted
        var id = 1
        while live.contains(where: { $0.id.rawValue == id }) || ghostIDs.contains(id) { id += 1 }
        let connectionID = ConnectionID(id)
        let admitted = settings.limits.admits(connectedClients: core.clientCount)
        let machine =
            admitted
            ? ConnectionMachine(mode: .chat, settings: settings, now: now)
            : ConnectionMachine(refusing: Replies.serverFull, mode: .chat, settings: settings, now: now)
        let connection = SimConnection(serial: connections.count + 1, id: connectionID, machine: machine)
        connection.openedAtStep = step
        connections.append(connection)
        live.append(connection)
        if admitted {
            hub[connectionID] = connection
            core.connect(connectionID, output: output)
        }
    }

    /// The server reads what the client sent, while the machine wants to
    /// read, in the pieces the cutter chooses; after each read it flushes,
    /// and the kernel takes nothing until the turn delivers.
    private func read(_ connection: SimConnection) {
        kernelTakesOutput = false
        defer { kernelTakesOutput = true }
        while !connection.isClosed && connection.wantsRead && connection.inboundHead < connection.inbound.count {
            let available = connection.inbound.count - connection.inboundHead
            let size = connection.readBudget(cutter.nextPiece(available: available))
            guard size > 0 else { break }
            let start = connection.inboundHead
            connection.inboundHead += size
            var end = start + size
            if faults.contains(.loseByteBetweenPieces) && name == "chunked" && size >= 2 { end -= 1 }
            let last = connection.inboundHead == connection.inbound.count
            let now = self.now
            withIO(connection) { machine, io in
                connection.inbound.withUnsafeBytes { machine.received(UnsafeRawBufferPointer(rebasing: $0[start..<end]), now: now, io: &io) }
                machine.flush(now: now, io: &io)
            }
            takeTurns(connection)
            if !last {
                // The whole-input run read all of it in one go; if this run
                // stops here for its own reasons (a failure, a pause), what
                // follows legitimately differs.
                if case .failed? = connection.closeCause { burstCutShort = true }
                if connection.phase == .open && !connection.wantsRead && !connection.inputClosed {
                    burstCutShort = true
                }
            }
        }
        if connection.inboundHead == connection.inbound.count {
            connection.inbound.removeAll()
            connection.inboundHead = 0
        }
        if connection.hasUnreadEndOfInput && connection.inbound.isEmpty && connection.wantsRead {
            connection.endOfInputRead = true
            withIO(connection) { machine, io in machine.endOfInput(now: now, io: &io) }
        }
    }

    /// Fairness: the lines past one turn get their turns (no other client
    /// has input waiting in this sequential model), each turn a serve of its
    /// own, as a strategy gives it: the hub sees the queue the owner
    /// published after the previous one.
    private func takeTurns(_ connection: SimConnection) {
        kernelTakesOutput = false
        defer { kernelTakesOutput = true }
        var turns = 0
        while connection.wantsTurn && turns < 100_000 {
            withIO(connection) { machine, io in
                machine.takeTurn(now: now, io: &io)
                machine.flush(now: now, io: &io)
            }
            turns += 1
        }
        // Lines left waiting behind the client's own queue: paused, as a
        // chunked run's reading would be, at a point that depends on timing.
        if connection.phase == .open && !connection.inputIsEmpty { burstCutShort = true }
    }

    /// Deliveries: flush every connection until none has mail waiting.
    private func deliver() {
        var rounds = 0
        repeat {
            rounds += 1
            if rounds > 100 {
                problem("deliveries do not settle")
                return
            }
            // Only a connection with mail, or output and perhaps room in the
            // kernel, has anything to flush (the server wakes only those).
            for connection in live where connection.mailWaiting || connection.wantsWrite {
                withIO(connection) { machine, io in machine.flush(now: now, io: &io) }
            }
        } while live.contains { $0.mailWaiting && ($0.phase == .open || $0.phase == .closing) }
    }

    /// `/who` and `/rooms` from `connection`, compared with the registry.
    private func audit(_ connection: SimConnection) {
        // Only a client the server reads now (fairness may have paused it).
        guard connection.admitted, connection.phase == .open, !connection.inputClosed,
            connection.wantsRead, !connection.sendingClosed, connection.inbound.isEmpty,
            !core.hasPartialLine(connection.id), !connection.isTransferring  // an upload's content takes lines
        else { return }
        let registry = core.registrySnapshot()
        guard let who = Invariants.expectedWho(for: connection.id, in: registry) else {
            return problem("\(connection) is open but not in the registry")
        }
        // A command longer than max-line is refused as such.
        let tooLong = String(decoding: Replies.lineTooLong(max: config.maxLine).dropLast(), as: UTF8.self)
        let expected = [config.maxLine >= 4 ? who : tooLong, config.maxLine >= 6 ? Invariants.expectedRooms(in: registry) : tooLong]
        tap = (connection.id, [])
        connection.inbound += Array("/who\n/rooms\n".utf8)
        read(connection)
        let got = (tap?.lines ?? []).map { String(decoding: $0.dropLast(), as: UTF8.self) }
        tap = nil
        // Closed, or paused by fairness (its own queue past half of
        // max-output, `/rooms` still waiting its turn): a prefix is right.
        let cutShort = connection.isClosed || !connection.inputIsEmpty || connection.hasUnreadInput
        if got != expected && !(cutShort && expected.starts(with: got)) {
            problem("\(connection) asked /who and /rooms: expected \(expected), got \(got)")
        }
    }

    /// SIGTERM: everyone is told, every machine gets the deadline, time runs
    /// to it; by then every connection is closed.
    private func shutdown() {
        isShutDown = true
        core.shutdown(output: output)
        settings.shutdownDeadline = now + 5 * Self.second
        for connection in live { withIO(connection) { machine, io in machine.update(settings, now: now) } }
        deliver()
        now += 5 * Self.second
        for connection in live { withIO(connection) { machine, io in machine.tick(now: now, io: &io) } }
        if !live.isEmpty { problem("still open after the shutdown deadline: \(live)") }
        if core.clientCount != 0 { problem("the core still has \(core.clientCount) clients after shutdown") }
    }

    /// Runs `body` on the connection's machine with its IO, then forgets a
    /// connection that closed.
    private func withIO(_ connection: SimConnection, _ body: (inout ConnectionMachine, inout SimIO) -> Void) {
        guard !connection.isClosed else { return }
        var io = SimIO(simulation: self, connection: connection)
        body(&connection.machine, &io)
        if !connection.isClosed {
            connection.ownerQueued = connection.outputCount
        } else if let index = live.firstIndex(where: { $0 === connection }) {
            // Which line tips a client over max-output depends on where its
            // turns ended, and so on how its input was cut: from a slow
            // consumer on, the runs may legitimately differ.
            if connection.closeCause == .failed(.slowConsumer) { burstCutShort = true }
            live.remove(at: index)
            connection.closedAtStep = step
            if hub[connection.id] === connection {
                problem("\(connection) closed while the core still has it")
                hub[connection.id] = nil
                ghostIDs.insert(connection.id.rawValue)
            }
        }
    }

    // MARK: - Checks after every turn

    private func check() {
        checkQueues()
        // The registry and the framers change only when the core is fed bytes,
        // or does something it counts or closes.
        let activity = (fed, core.messagesOut, core.clientCount, closes)
        guard activity != lastActivity else { return }
        lastActivity = activity
        let registry = core.registrySnapshot()
        for text in Invariants.registryProblems(registry, maxLine: config.maxLine) { problem(text) }
        // The core's clients are exactly the admitted connections whose session is open.
        var sessions = 0
        for connection in live where connection.admitted && connection.phase == .open {
            sessions += 1
            if !registry.clients.contains(where: { $0.id == connection.id }) {
                problem("\(connection) has an open session the core does not know")
            }
        }
        if sessions != registry.clients.count {
            problem("\(sessions) open sessions but the core has \(registry.clients.count) clients: \(registry.clients.map { $0.id })")
        }
        if core.clientCount > config.maxClients {
            problem("\(core.clientCount) clients, max-clients is \(config.maxClients)")
        }
    }

    private var lastActivity = (-1, -1, -1, -1)
    /// Bytes handed to the core.
    fileprivate var fed = 0
    /// Connections the core has closed (`ChatOutputModel.close`).
    fileprivate var closes = 0

    private func checkQueues() {
        for connection in live where connection.admitted {
            let queued = connection.outputCount + connection.pending.count
            if queued > config.maxOutput {
                problem("\(connection) has \(queued) bytes queued, max-output is \(config.maxOutput)")
            }
        }
    }

    // MARK: - Comparing runs

    /// Remembers what each connection has received so far, how it was
    /// closed and how often its sending side was shut, so a comparison can
    /// look at that moment later. Only open connections change, so only they
    /// are marked; a closed one is final (the run makes no allocation here,
    /// as it is called before every step).
    func mark() {
        markedStep = step
        for connection in live {
            connection.marked = (connection.received.count, connection.closeCause, connection.shutdowns)
        }
    }

    private(set) var markedStep = 0

    /// What `connection` had at the last `mark()`: (bytes received, close, shutdowns).
    func marked(_ connection: SimConnection) -> (received: Int, close: CloseCause?, shutdowns: Int)? {
        if connection.openedAtStep > markedStep { return nil }  // not there yet
        if let closedAtStep = connection.closedAtStep, closedAtStep <= markedStep {
            return (connection.received.count, connection.closeCause, connection.shutdowns)
        }
        return connection.marked
    }
}

/// How a run cuts what a client sent into reads.
struct Cutter {
    private let maxPiece: Int?
    private var generator: SplitMix64

    /// Every read takes all that is there.
    static var whole: Cutter { Cutter(maxPiece: nil, seed: 0) }

    /// Reads of 1...maxPiece bytes, from a generator seeded with `seed`.
    static func random(seed: UInt64, maxPiece: Int) -> Cutter { Cutter(maxPiece: maxPiece, seed: seed) }

    private init(maxPiece: Int?, seed: UInt64) {
        self.maxPiece = maxPiece
        generator = SplitMix64(seed: seed)
    }

    mutating func nextPiece(available: Int) -> Int {
        guard let maxPiece else { return available }
        return min(available, Int(generator.next() % UInt64(maxPiece)) + 1)
    }
}

/// SplitMix64, seeded: the harness's (and its tests') reproducible randomness.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// One connection: the server's side (its machine, the hub's hand-off) and
/// the client's (what it sent and has not been read, what it received).
final class SimConnection: CustomStringConvertible {
    let serial: Int
    let id: ConnectionID
    /// The machine lives at a fixed address, as in the server's
    /// `Connection`: reading `connection.wantsRead` through a class
    /// property would otherwise copy the whole machine (a retain and a
    /// release per reference it holds) on every question the harness asks.
    private let storage: UnsafeMutablePointer<ConnectionMachine>
    var machine: ConnectionMachine {
        _read { yield storage.pointee }
        _modify { yield &storage.pointee }
    }
    /// The questions the harness asks, each read in place through an inout
    /// access: the getter, called on a class's property or through a
    /// pointer, is passed a copy of the whole machine.
    private func peek<T>(_ question: (inout ConnectionMachine) -> T) -> T { question(&storage.pointee) }
    var phase: ConnectionMachine.Phase { peek { $0.phase } }
    var wantsRead: Bool { peek { $0.wantsRead } }
    var wantsTurn: Bool { peek { $0.wantsTurn } }
    var wantsWrite: Bool { peek { $0.wantsWrite } }
    var inputClosed: Bool { peek { $0.inputClosed } }
    var inputIsEmpty: Bool { peek { $0.input.isEmpty } }
    var outputCount: Int { peek { $0.output.count } }
    var isTransferring: Bool { peek { $0.isTransferring } }
    func readBudget(_ capacity: Int) -> Int { peek { $0.readBudget(capacity) } }
    let admitted: Bool

    // The client.
    var inbound: [UInt8] = []
    var inboundHead = 0
    var sendingClosed = false
    /// The server has read the EOF after `sendingClosed`.
    var endOfInputRead = false
    var hasUnreadInput: Bool { inboundHead < inbound.count }
    var hasUnreadEndOfInput: Bool { sendingClosed && !endOfInputRead && !isClosed }
    /// Everything the server wrote, in order.
    var received: [UInt8] = []
    /// Written and not yet read by the client (what fills the socket buffer).
    var kernelHolds = 0
    var writesFail = false
    var peerGone = false

    // What the machine did.
    var closeCause: CloseCause?
    var shutdowns = 0
    var sessionsEnded = 0

    // The hub's hand-off (`Connection.Shared`).
    var pending = ByteQueue()
    var ownerQueued = 0
    var closeRequested = false
    var abort: DisconnectReason?
    var mailWaiting = false
    var linesSent = 0

    // For comparing runs (`ChatSimulation.mark`).
    var openedAtStep = 0
    var closedAtStep: Int?
    var marked: (received: Int, close: CloseCause?, shutdowns: Int) = (0, nil, 0)

    init(serial: Int, id: ConnectionID, machine: ConnectionMachine) {
        self.serial = serial
        self.id = id
        storage = .allocate(capacity: 1)
        storage.initialize(to: machine)
        admitted = machine.admitted
    }

    deinit {
        storage.deinitialize(count: 1)
        storage.deallocate()
    }

    var isClosed: Bool { closeCause != nil }
    var description: String { "connection \(serial) (id \(id.rawValue)\(admitted ? "" : ", refused"))" }
}

/// `ChatHub.State`: the core's output, queueing on each connection's hand-off.
final class ChatOutputModel: ChatOutput {
    // The simulation owns this object and outlives it: no reference counting
    // on every line (the harness runs millions of times).
    unowned(unsafe) var simulation: ChatSimulation!

    /// Only a clustered core holds a client's input for a nick claim.
    func resume(_ id: ConnectionID) { simulation!.problem("the standalone core resumed \(id), which it never held") }

    func send(_ line: [UInt8], to id: ConnectionID) {
        let simulation = self.simulation!
        if let tap = simulation.tap, tap.id == id { simulation.tap!.lines.append(line) }
        guard let connection = simulation.hub[id] else {
            return simulation.problem("the core sent to \(id), which it had closed or never had: \(String(decoding: line, as: UTF8.self))")
        }
        if line.last != 0x0A || line.dropLast().contains(0x0A) {
            simulation.problem("the core sent a line that is not one LF-terminated line: \(line)")
        }
        guard !connection.isClosed, connection.abort == nil, !connection.peerGone else { return }
        var line = line
        connection.linesSent += 1
        if simulation.faults.contains(.injectEscape) && connection.linesSent % 5 == 0 { line.insert(0x1B, at: 0) }
        let maxOutput = simulation.config.maxOutput
        if !simulation.faults.contains(.ignoreMaxOutput) && connection.ownerQueued + connection.pending.count + line.count > maxOutput {
            connection.abort = .slowConsumer
            connection.pending.removeAll()
        } else {
            connection.pending.append(line)
        }
        if connection.ownerQueued + connection.pending.count > maxOutput {
            simulation.problem("\(connection) has \(connection.ownerQueued + connection.pending.count) bytes queued, max-output is \(maxOutput)")
        }
        connection.mailWaiting = true
    }

    func close(_ id: ConnectionID) {
        let simulation = self.simulation!
        guard let connection = simulation.hub.removeValue(forKey: id) else {
            return simulation.problem("the core closed \(id), which it had closed or never had")
        }
        connection.closeRequested = true
        connection.mailWaiting = true
        simulation.closes += 1
    }

    func transportStats() -> TransportStats { TransportStats(strategy: "fuzz") }
}

/// The machine's actions against the fake kernel and the hub model.
struct SimIO: ConnectionIO {
    let simulation: ChatSimulation
    let connection: SimConnection

    mutating func write(_ bytes: UnsafeRawBufferPointer) -> Int? {
        if connection.isClosed { simulation.problem("\(connection) written after close") }
        if connection.writesFail {
            connection.peerGone = true
            return nil
        }
        guard simulation.kernelTakesOutput else { return 0 }
        let room =
            simulation.unboundedKernel
            ? bytes.count : simulation.config.socketBuffer.map { max(0, $0 - connection.kernelHolds) } ?? bytes.count
        let count = min(room, bytes.count)
        connection.received.append(contentsOf: bytes[0..<count])
        connection.kernelHolds += count
        return count
    }

    mutating func shutdownWrite() { connection.shutdowns += 1 }

    mutating func close(_ cause: CloseCause) {
        if connection.isClosed { simulation.problem("\(connection) closed twice") }
        connection.closeCause = cause
    }

    mutating func sessionEnded() {
        connection.sessionsEnded += 1
        if connection.sessionsEnded > 1 || !connection.admitted { simulation.problem("\(connection) ended its session twice") }
    }

    mutating func expired(_ reason: DisconnectReason) {}

    mutating func chatReceive(_ bytes: UnsafeRawBufferPointer, maxLines: Int, queuedBytes: Int) -> ChatIntake {
        let limits = Limits(maxOutput: simulation.config.maxOutput)
        let connection = self.connection
        let intake = simulation.core.receive(bytes, from: connection.id, output: simulation.output, maxLines: maxLines) {
            connection.abort == nil && !limits.chatInputBlocked(queuedBytes: queuedBytes + connection.pending.count)
        }
        simulation.fed += intake.consumed
        if intake.held { simulation.problem("the standalone core held \(connection)'s input for a nick claim") }
        return ChatIntake(
            consumed: intake.consumed, lines: intake.lines, partialLine: simulation.core.hasPartialLine(connection.id),
            upload: intake.upload, download: intake.download)
    }

    mutating func chatRateLimited(linesPerSecond: Int, notify: Bool) {
        simulation.core.rateLimited(connection.id, linesPerSecond: linesPerSecond, notify: notify, output: simulation.output)
    }

    mutating func chatEndOfInput() {
        simulation.core.endOfInput(from: connection.id, output: simulation.output)
    }

    mutating func chatDisconnect(_ reason: DisconnectReason) {
        if simulation.faults.contains(.forgetFailedSessions) && reason == .connectionError { return }
        simulation.core.disconnect(connection.id, reason: reason, output: simulation.output)
    }

    // File sharing is off in the simulation: an `/upload`'s content is read
    // and dropped (the framing is fuzzed), and nothing may reach a store.
    mutating func uploadBegin(name: String, size: Int) { simulation.problem("\(connection) began storing an upload with sharing off") }
    mutating func uploadData(_ bytes: UnsafeRawBufferPointer) { simulation.problem("\(connection) stored upload bytes with sharing off") }
    mutating func uploadEnd() { simulation.problem("\(connection) ended an upload with sharing off") }
    mutating func uploadAbort() { simulation.problem("\(connection) aborted an upload with sharing off") }
    mutating func downloadBegin(_ name: String) { simulation.problem("\(connection) began a download with sharing off") }
    mutating func downloadRead(max: Int) { simulation.problem("\(connection) read a download with sharing off") }
    mutating func downloadEnd() { simulation.problem("\(connection) ended a download with sharing off") }

    mutating func collect(into output: inout ByteQueue) -> Mail {
        if output.isEmpty {
            swap(&output, &connection.pending)
        } else if !connection.pending.isEmpty {
            connection.pending.withReadableBytes { output.append($0) }
            connection.pending.removeAll()
        }
        connection.mailWaiting = false
        defer {
            connection.closeRequested = false
            connection.abort = nil
        }
        return Mail(closeRequested: connection.closeRequested, abort: connection.abort)
    }
}
