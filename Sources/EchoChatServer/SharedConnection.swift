import EchoChatCore
import EchoChatPOSIX
import Synchronization

/// Wire counters shared by the threads of the thread and pool strategies:
/// relaxed atomics, each written with one uncontended add.
final class ServerCounters: Sendable {
    let connectionsTotal = Atomic<Int>(0)
    let refused = Atomic<Int>(0)
    let bytesIn = Atomic<Int>(0)
    let bytesOut = Atomic<Int>(0)
    /// Echo mode only (chat lines are counted by the core).
    let messagesIn = Atomic<Int>(0)
    let messagesOut = Atomic<Int>(0)
    /// Echo mode: admitted clients whose session is not over.
    let echoClients = Atomic<Int>(0)
    /// Thread strategy: client threads alive.
    let liveThreads = Atomic<Int>(0)

    func transport(strategy: Strategy, uptimeSeconds: Int, extra: [TransportStats.Pair]) -> TransportStats {
        TransportStats(
            strategy: strategy.rawValue, uptimeSeconds: uptimeSeconds,
            connectionsTotal: connectionsTotal.load(ordering: .relaxed), refused: refused.load(ordering: .relaxed),
            bytesIn: bytesIn.load(ordering: .relaxed), bytesOut: bytesOut.load(ordering: .relaxed),
            messagesIn: messagesIn.load(ordering: .relaxed), messagesOut: messagesOut.load(ordering: .relaxed),
            extra: extra)
    }

    func add(_ counter: borrowing Atomic<Int>, _ value: Int) {
        if value != 0 { counter.wrappingAdd(value, ordering: .relaxed) }
    }
}

/// A client connection more than one thread may touch (thread and pool
/// strategies): other threads queue chat lines for it and write them straight
/// to its socket when the kernel takes them.
///
/// Ownership: one thread at a time *serves* the connection (its own thread, or
/// the pool worker that holds it) and only that thread reads from the socket
/// or closes it. Everyone else writes only under `state`'s lock after checking
/// `closed`, and the descriptor is closed under that same lock, so no thread
/// can ever write to a descriptor number that has since been reused.
final class SharedConnection: Sendable {
    let socket: Socket
    let id: ConnectionID
    /// False for a refused connection (it only receives the server-full line).
    let admitted: Bool
    let state: Lock<State>
    /// Asks whoever serves this connection to look at it again: queued output
    /// the kernel did not take, an abort, a requested close.
    let wake: @Sendable (SharedConnection) -> Void

    struct State: Sendable {
        var output = ByteQueue()
        /// The descriptor is closed; nobody may touch the socket.
        var closed = false
        /// The core forgot this client: deliver the queue, then close.
        var closeRequested = false
        /// Set by a thread that found the client dead or too slow; its server
        /// ends the session with this reason and drops the queue.
        var abort: DisconnectReason?
        var inputClosed = false
        /// Echo: not reading because the queue reached max-output.
        var paused = false
        /// Output done, sending side shut, reading until the peer closes.
        var lingerDeadline: Int64?
        /// Pool strategy: set by the dispatcher's sweep once it sees the
        /// session over; past it, an undelivered queue is given up.
        var closeDeadline: Int64?
        var lastInput: Int64
        var partialSince: Int64?
        /// Thread strategy: the thread that serves this connection.
        var owner: WakeableThread?
        /// Thread strategy: a wake-up is already on its way to the owner.
        var wakePending = false
        /// Pool strategy: a worker holds the connection (or it is queued for one).
        var inService = false
        /// Pool strategy: readiness that arrived while in service.
        var pendingEvents: Poller.Events = []

        init(now: Int64) { lastInput = now }

        /// Admitted, not closing, not throttled: an idle timer may run.
        var isReading: Bool { !closeRequested && !inputClosed && !paused && lingerDeadline == nil && abort == nil }

        /// The flags without the queue (copying the queue would make the next
        /// append copy its whole buffer).
        var snapshot: Snapshot {
            Snapshot(
                abort: abort, closeRequested: closeRequested, inputClosed: inputClosed, queued: output.count,
                lingerDeadline: lingerDeadline, lastInput: lastInput, partialSince: partialSince, isReading: isReading)
        }
    }

    struct Snapshot {
        var abort: DisconnectReason?
        var closeRequested: Bool
        var inputClosed: Bool
        var queued: Int
        var lingerDeadline: Int64?
        var lastInput: Int64
        var partialSince: Int64?
        var isReading: Bool
    }

    enum FlushOutcome {
        case drained
        case pending
        case failed
    }

    /// Pool strategy: the epoll registration's data (generation and descriptor).
    let token: UInt64

    init(
        socket: Socket, admitted: Bool, now: Int64, token: UInt64 = 0,
        wake: @escaping @Sendable (SharedConnection) -> Void
    ) {
        self.socket = socket
        self.token = token
        self.id = ConnectionID(Int(socket.descriptor))
        self.admitted = admitted
        self.state = Lock(State(now: now))
        self.wake = wake
    }

    /// Writes queued bytes while the kernel takes them. Call with the lock held.
    static func flush(
        _ state: inout State, _ socket: Socket, _ counters: ServerCounters, countLines: Bool
    ) -> FlushOutcome {
        while !state.output.isEmpty {
            let result: IOResult<Int>
            do {
                result = try state.output.withReadableBytes { try socket.write($0) }
            } catch {
                return .failed
            }
            guard case .done(let written) = result else { return .pending }
            if countLines {
                counters.add(counters.messagesOut, state.output.withReadableBytes {
                    countNewlines(UnsafeRawBufferPointer(rebasing: $0[0..<written]))
                })
            }
            counters.add(counters.bytesOut, written)
            state.output.consume(written)
        }
        return .drained
    }

    /// From any thread, after queueing output for this connection: write what
    /// the kernel takes now; if some is left, or the client turned out dead or
    /// too slow (chat: queue past max-output), wake whoever serves it.
    func deliver(limits: Limits, counters: ServerCounters, chat: Bool) {
        let needsOwner = state.withLock { state -> Bool in
            guard !state.closed, state.abort == nil else { return false }
            switch Self.flush(&state, socket, counters, countLines: !chat) {
            case .drained:
                return state.closeRequested
            case .pending:
                if chat && admitted && limits.isSlowConsumer(queuedBytes: state.output.count) {
                    state.abort = .slowConsumer
                    state.output.removeAll()
                }
                return true
            case .failed:
                state.abort = .connectionError
                state.output.removeAll()
                return true
            }
        }
        if needsOwner { wake(self) }
    }

    // MARK: - Serving (called only by the thread that serves the connection)

    /// Echo: reads what the backpressure budget allows and writes it straight
    /// back from `buffer` when nothing is queued before it; the kernel's
    /// leftovers are queued. EOF asks for a close after the queue drains.
    func readEcho(into buffer: UnsafeMutableRawBufferPointer, limits: Limits, counters: ServerCounters, now: Int64) {
        let queued = state.withLock { $0.output.count }
        let budget = min(buffer.count, limits.echoReadBudget(queuedBytes: queued))
        guard budget > 0 else { return }
        let target = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<budget])
        let result: ReadResult
        do { result = try socket.read(into: target) } catch { return fail(.connectionError) }
        switch result {
        case .wouldBlock:
            return
        case .endOfFile:
            state.withLock { state in
                state.inputClosed = true
                state.closeRequested = true
            }
        case .bytes(let count):
            let bytes = UnsafeRawBufferPointer(rebasing: target[0..<count])
            counters.add(counters.bytesIn, count)
            counters.add(counters.messagesIn, countNewlines(bytes))
            let failed = state.withLock { state -> Bool in
                state.lastInput = now
                var offset = 0
                if state.output.isEmpty {
                    do {
                        if case .done(let written) = try socket.write(bytes) { offset = written }
                    } catch { return true }
                    counters.add(counters.bytesOut, offset)
                    counters.add(counters.messagesOut, countNewlines(UnsafeRawBufferPointer(rebasing: bytes[0..<offset])))
                }
                if offset < count { state.output.append(UnsafeRawBufferPointer(rebasing: bytes[offset...])) }
                if limits.echoReadBudget(queuedBytes: state.output.count) == 0 { state.paused = true }
                return false
            }
            if failed { fail(.connectionError) }
        }
    }

    /// Chat: reads once and hands the bytes to the hub; EOF is the client's
    /// half-close. Tracks an unfinished line for the line timeout.
    func readChat(into buffer: UnsafeMutableRawBufferPointer, hub: ChatHub, limits: Limits, counters: ServerCounters, now: Int64) {
        let result: ReadResult
        do { result = try socket.read(into: buffer) } catch { return fail(.connectionError) }
        switch result {
        case .wouldBlock:
            return
        case .endOfFile:
            state.withLock { $0.inputClosed = true }
            hub.endOfInput(from: self)
        case .bytes(let count):
            counters.add(counters.bytesIn, count)
            state.withLock { $0.lastInput = now }
            hub.receive(UnsafeRawBufferPointer(rebasing: buffer[0..<count]), from: self)
            if limits.lineTimeoutNanoseconds > 0 {
                let partial = hub.hasPartialLine(self)
                state.withLock { state in
                    if !partial {
                        state.partialSince = nil
                    } else if state.partialSince == nil {
                        state.partialSince = now
                    }
                }
            }
        }
    }

    /// Writes what is queued (the serving thread, on writability). Echo: a
    /// paused client resumes once its queue is down to half, and its idle
    /// clock restarts (a client the server was not reading is not idle).
    func flushQueued(limits: Limits, counters: ServerCounters, chat: Bool, now: Int64) {
        let failed = state.withLock { state -> Bool in
            if case .failed = Self.flush(&state, socket, counters, countLines: !chat) { return true }
            if state.paused && limits.echoMayResume(queuedBytes: state.output.count) {
                state.paused = false
                state.lastInput = now
            }
            return false
        }
        if failed { fail(.connectionError) }
    }

    /// Lingering: reads and discards; false once the peer has closed (or failed).
    func drainLingering(into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        while true {
            switch try? socket.read(into: buffer) {
            case .bytes?: continue
            case .wouldBlock?: return true
            case .endOfFile?, nil: return false
            }
        }
    }

    /// The session must end for `reason`; the queue is dropped.
    func fail(_ reason: DisconnectReason) {
        state.withLock { state in
            if state.abort == nil { state.abort = reason }
            state.output.removeAll()
        }
    }

    /// Output delivered after a requested close: true if the socket can be
    /// closed now (the peer already sent EOF); otherwise shuts the sending
    /// side and starts lingering until `deadline`.
    func finishClose(deadline: Int64) -> Bool {
        state.withLock { state in
            if state.inputClosed { return true }
            socket.shutdownWrite()
            state.lingerDeadline = deadline
            return false
        }
    }

    /// Closes the descriptor, once, under the lock.
    func closeSocket() {
        state.withLock { state in
            guard !state.closed else { return }
            state.closed = true
            state.output.removeAll()
            socket.close()
        }
    }
}

/// Chat for many threads: the core and the id -> connection registry behind
/// one lock. Lines are queued on the recipients *inside* the lock, so every
/// recipient sees lines in the order the core produced them; the writes to the
/// sockets happen *after* the lock is released, so no thread ever holds the
/// registry while it waits for the kernel. Lock order: hub, then connection.
final class ChatHub: Sendable {
    private let registry: Lock<Registry>
    /// The start-up limits: max-line and max-output never change at run time.
    private let limits: Limits
    private let counters: ServerCounters
    private let stats: @Sendable () -> TransportStats

    struct Registry {
        let core: ChatCore
        var connections: [ConnectionID: SharedConnection] = [:]
    }

    init(limits: Limits, counters: ServerCounters, stats: @escaping @Sendable () -> TransportStats) {
        self.limits = limits
        self.counters = counters
        self.stats = stats
        self.registry = Lock(Registry(core: ChatCore(maxLine: limits.maxLine)))
    }

    var clientCount: Int { registry.withLock { $0.core.clientCount } }

    /// Admission and welcome in one step, so two acceptors can never both see
    /// room for one more client. False: the server is full.
    func admit(_ connection: SharedConnection, limits: Limits) -> Bool {
        let admitted = run { registry, output in
            guard limits.admits(connectedClients: registry.core.clientCount) else { return false }
            registry.connections[connection.id] = connection
            output.connections[connection.id] = connection
            registry.core.connect(connection.id, output: output)
            return true
        }
        return admitted
    }

    func receive(_ bytes: UnsafeRawBufferPointer, from connection: SharedConnection) {
        run { registry, output in registry.core.receive(bytes, from: connection.id, output: output) }
    }

    func endOfInput(from connection: SharedConnection) {
        run { registry, output in registry.core.endOfInput(from: connection.id, output: output) }
    }

    func disconnect(_ connection: SharedConnection, reason: DisconnectReason) {
        run { registry, output in registry.core.disconnect(connection.id, reason: reason, output: output) }
    }

    func shutdown() {
        run { registry, output in registry.core.shutdown(output: output) }
    }

    func hasPartialLine(_ connection: SharedConnection) -> Bool {
        registry.withLock { $0.core.hasPartialLine(connection.id) }
    }

    func serverStats() -> ServerStats {
        let transport = stats()
        return registry.withLock { $0.core.stats(transport: transport) }
    }

    /// Runs a core event under the lock, then delivers to every touched connection.
    @discardableResult
    private func run<R>(_ body: (inout Registry, Collector) -> R) -> R {
        let (result, touched) = registry.withLock { registry -> (R, [SharedConnection]) in
            let output = Collector(connections: registry.connections, stats: stats)
            let result = body(&registry, output)
            for id in output.forgotten { registry.connections[id] = nil }
            return (result, output.touched)
        }
        for connection in touched { connection.deliver(limits: limits, counters: counters, chat: true) }
        return result
    }

    /// The core's `ChatOutput` for one event: queues on the recipients (under
    /// their locks) and remembers whom to deliver to afterwards.
    private final class Collector: ChatOutput {
        var connections: [ConnectionID: SharedConnection]
        let stats: @Sendable () -> TransportStats
        var touched: [SharedConnection] = []
        var forgotten: [ConnectionID] = []

        init(connections: [ConnectionID: SharedConnection], stats: @escaping @Sendable () -> TransportStats) {
            self.connections = connections
            self.stats = stats
        }

        func send(_ line: [UInt8], to id: ConnectionID) {
            guard let connection = connections[id] else { return }
            connection.state.withLock { state in
                if !state.closed && state.abort == nil { state.output.append(line) }
            }
            if touched.last !== connection { touched.append(connection) }
        }

        func close(_ id: ConnectionID) {
            guard let connection = connections[id] else { return }
            connection.state.withLock { $0.closeRequested = true }
            forgotten.append(id)
            if touched.last !== connection { touched.append(connection) }
        }

        func transportStats() -> TransportStats { stats() }
    }
}
