import EchoChatCore
import EchoChatPOSIX

/// The chat engine for every strategy: the core and the id -> connection
/// registry behind one lock. A line is queued on each recipient's `shared`
/// hand-off while the hub lock is held, so every recipient sees lines in the
/// order the core produced them; nothing here writes to a socket. The first
/// line a recipient gets since its owner last collected makes it a delivery,
/// which the caller wakes after the lock is released (the strategy's way), so
/// one burst of lines to one recipient costs one wake-up and, later, one send.
///
/// `max-output` holds at the moment a line is queued: a recipient whose queue
/// (collected and not) would pass it is marked a slow consumer and gets no more.
/// Lock order: hub, then connection.
final class ChatHub: Sendable {
    private let state: Lock<State>
    /// Bytes queued on all connections and not yet collected by their owners.
    let waiting = SharedCount()
    /// Above this much queued, a recipient's owner should flush before the
    /// batch ends, while the kernel buffer can take it.
    static let urgentBytes = 64 * 1024
    /// Above this much queued in all, owners should flush what they were
    /// woken for now rather than at the end of their batch: a storm of joins
    /// or leaves (each line to every member) must reach the kernel buffers,
    /// which can hold it, instead of piling up here.
    static let backlogBudget = 16 * 1024 * 1024

    /// `pacesSenders`: a sender waits for recipients that another thread
    /// has not yet taken half of `max-output` from (`receive`).
    init(
        limits: Limits, files: FileStore? = nil, cluster: ClusterLink? = nil, pacesSenders: Bool = false,
        stats: @escaping @Sendable () -> TransportStats
    ) {
        let core = ChatCore(
            maxLine: limits.maxLine, fileSharing: files?.sharing, catalog: files?.catalog ?? FileCatalog(), node: cluster?.node,
            clock: Clock.wallMilliseconds)
        state = Lock(
            State(
                core: core, maxOutput: limits.maxOutput, waiting: waiting, stats: stats, cluster: cluster, files: files,
                pacesSenders: pacesSenders))
    }

    /// Whether owners should flush their deliveries before their batch ends.
    var isBacklogged: Bool { waiting.value.load(ordering: .relaxed) > Self.backlogBudget }

    var clientCount: Int { state.withLock { $0.core.clientCount } }

    /// Admission and welcome in one step, so two threads can never both see
    /// room for one more client. False: the server is full.
    func admit(_ connection: Connection, limits: Limits, deliveries: inout Deliveries) -> Bool {
        run(&deliveries) { state in
            guard limits.admits(connectedClients: state.core.clientCount) else { return false }
            state.connections[connection.id] = connection
            state.core.connect(connection.id, output: state)
            return true
        }
    }

    /// Hands at most `maxLines` lines to the core, under the lock once,
    /// stopping early once the sender's own queue is past half of `max-output`,
    /// or once it was found too slow (its session ends at its next flush;
    /// nothing more it sent is acted on).
    func receive(
        _ bytes: UnsafeRawBufferPointer, from connection: Connection, maxLines: Int, queuedBytes: Int,
        deliveries: inout Deliveries
    ) -> ChatIntake {
        run(&deliveries) { state in
            let limits = Limits(maxOutput: state.maxOutput)
            state.sender = connection
            defer {
                state.sender = nil
                state.backlogged = []
            }
            let intake = state.core.receive(bytes, from: connection.id, output: state, maxLines: maxLines) {
                guard state.backlogged.isEmpty else { return false }
                let (pending, aborted) = connection.shared.withLock { ($0.pending.count, $0.abort != nil) }
                return !aborted && !limits.chatInputBlocked(queuedBytes: queuedBytes + pending)
            }
            // A recipient these lines filled past half of max-output, which
            // its owner has not taken yet: the sender waits until it has (or
            // the lines are dropped), as a sender in one event loop waits
            // while the loop writes to the others.
            var waits = false
            for recipient in state.backlogged {
                let registered = recipient.shared.withLock { other in
                    guard !other.closed, other.abort == nil, limits.chatInputBlocked(queuedBytes: other.pending.count) else { return false }
                    other.blockedSenders.append(connection)
                    return true
                }
                waits = waits || registered
            }
            return ChatIntake(
                consumed: intake.consumed, lines: intake.lines, partialLine: state.core.hasPartialLine(connection.id),
                upload: intake.upload, download: intake.download, held: intake.held || waits)
        }
    }

    // MARK: - Files (from the store's I/O thread; the connection must still be the one the core knows)

    func claimUpload(_ connection: Connection, requested: String, size: Int, avoiding: Set<String>) -> String? {
        state.withLock { state in
            guard state.connections[connection.id] === connection else { return nil }
            return state.core.claimUpload(connection.id, requested: requested, size: size, avoiding: avoiding)
        }
    }

    func unclaimUpload(_ connection: Connection, name: String) {
        state.withLock { state in
            let id = state.connections[connection.id] === connection ? connection.id : ConnectionID(-1)
            state.core.unclaimUpload(id, name: name)
        }
    }

    /// `* stored` to the sender, `* nick shared` to its room: the connections to wake.
    func uploadStored(_ connection: Connection, name: String, size: Int, sha256: String) -> Deliveries {
        var deliveries = Deliveries()
        run(&deliveries) { state in
            guard state.connections[connection.id] === connection else { return }
            state.core.uploadStored(connection.id, name: name, size: size, sha256: sha256, output: state)
        }
        return deliveries
    }

    /// Files in the upload directory that another server (or a person) put
    /// there; returns how many were not listed before.
    func filesFound(_ files: [FileCatalog.Entry]) -> Int {
        state.withLock { state in files.count { state.core.fileFound($0.name, size: $0.size) } }
    }

    /// Every file in the upload directory: `ChatCore.directoryListed`.
    func directoryListed(_ files: [FileCatalog.Entry]) -> (listed: Int, unlisted: Int) {
        state.withLock { $0.core.directoryListed(files) }
    }

    /// A download found `name` gone from the directory: `ChatCore.fileMissing`.
    func fileMissing(_ name: String) -> Bool {
        state.withLock { $0.core.fileMissing(name) }
    }

    func uploadFailed(_ connection: Connection, size: Int, reason: String) -> Deliveries {
        var deliveries = Deliveries()
        run(&deliveries) { state in
            guard state.connections[connection.id] === connection else { return }
            state.core.uploadFailed(connection.id, size: size, reason: reason, output: state)
        }
        return deliveries
    }

    func rateLimited(_ connection: Connection, linesPerSecond: Int, notify: Bool, deliveries: inout Deliveries) {
        guard notify else { return }
        run(&deliveries) { state in
            state.core.rateLimited(connection.id, linesPerSecond: linesPerSecond, notify: true, output: state)
        }
    }

    func endOfInput(from connection: Connection, deliveries: inout Deliveries) {
        run(&deliveries) { state in state.core.endOfInput(from: connection.id, output: state) }
    }

    func disconnect(_ connection: Connection, reason: DisconnectReason, deliveries: inout Deliveries) {
        run(&deliveries) { state in state.core.disconnect(connection.id, reason: reason, output: state) }
    }

    /// A line to every client (the cluster link's notices), queued for
    /// their owners: the connections to wake.
    func tellEveryone(_ line: [UInt8]) -> Deliveries {
        var deliveries = Deliveries()
        run(&deliveries) { state in state.core.tellEveryone(line, output: state) }
        return deliveries
    }

    // MARK: - The cluster (from the link, on the thread servicing it)

    /// The link is up: from now on events go out; the other servers are
    /// asked for their clients and told ours.
    func clusterUp() {
        var deliveries = Deliveries()
        run(&deliveries) { state in
            state.cluster?.outbox(accepting: true)
            state.core.clusterUp(output: state)
        }
    }

    /// The link is down: nothing goes out, the other servers' clients are
    /// forgotten, the nick claims in flight are decided here: the
    /// connections to wake.
    func clusterDown() -> Deliveries {
        var deliveries = Deliveries()
        run(&deliveries) { state in
            state.cluster?.outbox(accepting: false)
            state.core.clusterDown(output: state)
        }
        return deliveries
    }

    /// Redis confirmed that this server hears room `key`'s channel: the
    /// clients waiting to join it join. The connections to wake.
    func subscribed(room key: String) -> Deliveries {
        var deliveries = Deliveries()
        run(&deliveries) { state in state.core.subscribed(room: key, output: state) }
        return deliveries
    }

    /// Events another server published: the connections to wake.
    func apply(_ events: [ClusterEvent]) -> Deliveries {
        var deliveries = Deliveries()
        run(&deliveries) { state in
            for event in events { state.core.apply(event, output: state) }
        }
        return deliveries
    }

    /// The link applied what had reached this server: the commands waiting
    /// for it run. The connections to wake.
    func eventsApplied() -> Deliveries {
        var deliveries = Deliveries()
        run(&deliveries) { state in state.core.eventsApplied(output: state) }
        return deliveries
    }

    /// Redis refused one of this server's claims: the connections to wake.
    func claimRefused(_ event: ClusterEvent) -> Deliveries {
        var deliveries = Deliveries()
        run(&deliveries) { state in state.core.claimRefused(event, output: state) }
        return deliveries
    }

    /// Redis's membership keys answered this server (or counted a room
    /// for its `hello` or `join`): the connections to wake.
    func answered(_ id: ConnectionID, _ answer: ClusterAnswer) -> Deliveries {
        var deliveries = Deliveries()
        run(&deliveries) { state in state.core.answered(id, answer, output: state) }
        return deliveries
    }

    /// This server's clients' nicks and holders, for their keys in Redis.
    func ownNickKeys() -> [(key: String, holder: String)] {
        state.withLock { $0.core.ownNickKeys() }
    }

    func nodeGone(_ node: String, suffix: String) -> Deliveries {
        var deliveries = Deliveries()
        run(&deliveries) { state in state.core.nodeGone(node, suffix: suffix, output: state) }
        return deliveries
    }

    func shutdown(deliveries: inout Deliveries) {
        run(&deliveries) { state in state.core.shutdown(output: state) }
    }

    func serverStats(transport: TransportStats) -> ServerStats {
        state.withLock { $0.core.stats(transport: transport) }
    }

    private func run<R>(_ deliveries: inout Deliveries, _ body: (State) -> R) -> R {
        state.withLock { state in
            swap(&state.deliveries, &deliveries)
            defer { swap(&state.deliveries, &deliveries) }
            return body(state)
        }
    }

    /// The core's `ChatOutput`: only ever used with the hub lock held.
    private final class State: ChatOutput {
        let core: ChatCore
        let maxOutput: Int
        let waiting: SharedCount
        let stats: @Sendable () -> TransportStats
        let cluster: ClusterLink?
        let files: FileStore?
        var connections: [ConnectionID: Connection] = [:]
        var deliveries = Deliveries()
        /// During `receive`: whose lines these are, and the recipients they
        /// filled past half of `max-output` (not yet collected).
        var sender: Connection?
        var backlogged: [Connection] = []
        let pacesSenders: Bool

        init(
            core: ChatCore, maxOutput: Int, waiting: SharedCount, stats: @escaping @Sendable () -> TransportStats,
            cluster: ClusterLink?, files: FileStore?, pacesSenders: Bool
        ) {
            self.core = core
            self.pacesSenders = pacesSenders
            self.maxOutput = maxOutput
            self.waiting = waiting
            self.stats = stats
            self.cluster = cluster
            self.files = files
        }

        /// Queued on the link under the hub lock, so the events leave in the core's order.
        func publish(_ event: ClusterEvent, room: String?) { cluster?.publish(event, room: room) }
        func subscribe(room key: String) { cluster?.hear(room: key, true) }
        func unsubscribe(room key: String) { cluster?.hear(room: key, false) }
        func releaseNick(_ key: String, holder: String) { cluster?.releaseNick(key, holder: holder) }
        func ask(_ query: ClusterQuery, for id: ConnectionID) { cluster?.ask(query, for: id) }
        func announce(_ events: [ClusterEvent]) { cluster?.announce(events) }
        func lookForFile(_ name: String, size: Int) { files?.submit(.look(name, size: size)) }
        func lookForFiles() { files?.lookForFiles() }
        func eventsPending() -> Bool { cluster?.eventsPending() ?? false }

        func send(_ line: [UInt8], to id: ConnectionID) {
            guard let connection = connections[id] else { return }
            let maxOutput = self.maxOutput
            var released: [Connection] = []
            var backlogging = false
            let (wake, urgent, added) = connection.shared.withLock { state -> (Bool, Bool, Int) in
                guard !state.closed, state.abort == nil, !state.peerGone else { return (false, false, 0) }
                let before = state.pending.count
                if state.ownerQueued + before + line.count > maxOutput {
                    state.abort = .slowConsumer
                    state.pending.removeAll()
                    released = state.blockedSenders
                    state.blockedSenders = []
                } else {
                    state.pending.append(line)
                    backlogging = pacesSenders && state.pending.count > maxOutput / 2
                }
                let wake = !state.mailWaiting
                state.mailWaiting = true
                let urgent = before < ChatHub.urgentBytes && state.pending.count >= ChatHub.urgentBytes
                return (wake, urgent, state.pending.count - before)
            }
            if added != 0 { waiting.value.wrappingAdd(added, ordering: .relaxed) }
            if wake { deliveries.woken.append(connection) }
            if urgent { deliveries.urgent.append(connection) }
            for blocked in released where blocked.resume() { deliveries.woken.append(blocked) }
            if backlogging, let sender, sender !== connection, !backlogged.contains(where: { $0 === connection }) {
                backlogged.append(connection)
            }
        }

        func resume(_ id: ConnectionID) {
            guard let connection = connections[id] else { return }
            let wake = connection.shared.withLock { state -> Bool in
                guard !state.closed else { return false }
                state.resumed = true
                defer { state.mailWaiting = true }
                return !state.mailWaiting
            }
            if wake { deliveries.woken.append(connection) }
        }

        func close(_ id: ConnectionID) {
            guard let connection = connections.removeValue(forKey: id) else { return }
            let wake = connection.shared.withLock { state -> Bool in
                state.closeRequested = true
                defer { state.mailWaiting = true }
                return !state.mailWaiting
            }
            if wake { deliveries.woken.append(connection) }
        }

        func transportStats() -> TransportStats { stats() }
    }
}
