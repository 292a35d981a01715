import EchoChatCore
import EchoChatPOSIX
import Synchronization

/// The pool strategy: one dispatcher thread and a fixed pool of workers
/// (`--workers`, default: the CPUs this process may run on, at least 2).
///
/// - Threads: the caller of `run()` is the dispatcher. It alone waits in
///   epoll_wait(2), accepts, and runs the timers. N workers take ready
///   connections from a queue (a lock-protected FIFO and a semaphore: the
///   listener/queue/workers shape of memcached's thread.c).
/// - Ownership: a connection is *in service* from the moment the dispatcher
///   queues it until a worker re-arms it, and only that worker reads it or
///   closes it. Registrations are EPOLLONESHOT, so readiness is reported once
///   and the connection is silent in epoll until re-armed; readiness that
///   still arrives while in service (a re-arm raced with an event) is merged
///   into `pendingEvents` and handled by the same worker, never by a second one.
///   Other workers may only queue chat lines on it and write them, under its
///   lock (`SharedConnection`). No client ever waits for another to leave:
///   a worker handles one read's worth and gives the connection back.
/// - Blocking: the dispatcher in epoll_wait, idle workers on the semaphore.
///   Sockets are non-blocking; a worker never waits for a client.
/// - Capacity: descriptors and memory, as for epoll; throughput is bounded by
///   the hand-off from the dispatcher to a worker (one wake-up per event).
/// - Shutdown: the dispatcher closes the listener, has the hub queue the chat
///   notice and request every close, schedules every connection, and waits
///   (serving events) until all are closed or `shutdown-timeout` passes; then
///   it stops the workers and joins them.
public final class PoolServer: ServerStrategy, @unchecked Sendable {
    // @unchecked Sendable: immutable properties, Atomics, Locks and
    // thread-safe descriptors; `live`, `acceptor`, `generation`, `stopDeadline` and
    // `acceptPausedUntil` belong to the dispatcher thread (inside `run`).

    private let context: ServerContext
    /// The dispatcher's copy of the settings SIGHUP may change (workers keep their own).
    private var live: LiveSettings
    private let listener: Socket
    private let poller: Poller
    private let requests: ControlRequests
    private let counters = ServerCounters()
    private let hub: ChatHub?
    private let queue = WorkQueue<Task>()
    private let workerCount: Int
    private let connections = Lock<[UInt64: SharedConnection]>([:])
    private let lingering = Atomic<Int>(0)
    /// Read by workers to bound lingering once shutdown has begun.
    private let shutdownDeadline = Atomic<Int64>(0)

    private var acceptor: Acceptor
    private var generation: UInt32 = 0
    private var acceptPausedUntil: Int64?

    private static let listenerToken = UInt64(UInt32.max)
    private static let requestsToken = UInt64(UInt32.max) - 1
    private static let lingerNanoseconds: Int64 = 2_000_000_000
    private static let sweepInterval: Int64 = 100_000_000
    private static let coarseSweepInterval: Int64 = 1_000_000_000
    private static let readSize = 64 * 1024

    enum Task: Sendable {
        case ready(SharedConnection, Poller.Events)
        case expire(SharedConnection, DisconnectReason?)
        case stop
    }

    public init(context: ServerContext, listener: Socket) throws(SystemError) {
        self.context = context
        self.live = LiveSettings(context.settings)
        self.listener = listener
        self.acceptor = Acceptor(listener: listener, logger: context.logger)
        self.poller = try Poller()
        self.requests = try ControlRequests()
        self.workerCount = context.configuration.effectiveWorkers
        let counters = self.counters
        let queue = self.queue
        let workers = workerCount
        self.hub = context.configuration.mode == .chat
            ? ChatHub(limits: context.configuration.limits, counters: counters) {
                Self.transportStats(counters, context, workers: workers, queue: queue)
            } : nil
        try poller.register(listener.descriptor, for: .readable, data: Self.listenerToken)
        try poller.register(requests.wakeup.descriptor, for: .readable, data: Self.requestsToken)
    }

    deinit {
        poller.close()
    }

    public func requestShutdown() {
        requests.requestShutdown()
    }

    public func requestStatsReport() {
        requests.requestStats()
    }

    public func serverStats() -> ServerStats {
        if let hub { return hub.serverStats() }
        return .echo(
            clients: counters.echoClients.load(ordering: .relaxed),
            transport: Self.transportStats(counters, context, workers: workerCount, queue: queue))
    }

    private static func transportStats(
        _ counters: ServerCounters, _ context: ServerContext, workers: Int, queue: WorkQueue<Task>
    ) -> TransportStats {
        counters.transport(
            strategy: .pool, uptimeSeconds: context.uptimeSeconds,
            extra: [.init("workers", String(workers)), .init("queue_depth", String(queue.depth))])
    }

    // MARK: - Dispatcher

    public func run() throws(SystemError) {
        var workers: [ThreadHandle] = []
        for index in 0..<workerCount {
            workers.append(try Threads.spawn(name: "echochat-w\(index)") { [self] in work() })
        }
        var events = PollEvents(capacity: 512)
        var stopDeadline: Int64?
        var nextSweep = Clock.monotonicNanoseconds() + Self.sweepInterval
        var listening = true
        while true {
            let now = Clock.monotonicNanoseconds()
            let timed = live.limits.hasTimers || lingering.load(ordering: .relaxed) > 0 || stopDeadline != nil
                || acceptPausedUntil != nil
            // Close timeouts need only a coarse sweep, while anyone is connected.
            let coarse = !timed && !connections.withLock { $0.isEmpty }
            if coarse { nextSweep = max(nextSweep, now + Self.coarseSweepInterval) }
            let timeout = timed || coarse ? Int32(max(1, (nextSweep - now) / 1_000_000 + 1)) : -1
            let count = try poller.wait(into: &events, timeoutMilliseconds: timeout)
            live.refresh()  // a SIGHUP may have changed the settings while we waited
            for index in 0..<count {
                let token = events.data(at: index)
                switch token {
                case Self.listenerToken:
                    if listening { acceptConnections() }
                case Self.requestsToken:
                    requests.wakeup.drain()
                    if requests.takeStatsRequest() { context.logger.info("stats: \(serverStats().keyValues)") }
                    if requests.shutdownRequested && stopDeadline == nil {
                        listening = false
                        stopDeadline = beginShutdown()
                        nextSweep = 0
                    }
                default:
                    if let connection = connections.withLock({ $0[token] }) {
                        dispatch(connection, events.events(at: index))
                    }
                }
            }
            let later = Clock.monotonicNanoseconds()
            if later >= nextSweep {
                nextSweep = later + Self.sweepInterval
                sweep(now: later, stopDeadline: stopDeadline)
            }
            if let stopDeadline, connections.withLock({ $0.isEmpty }) || later >= stopDeadline { break }
        }
        for _ in workers { queue.push(.stop) }
        for worker in workers { worker.join() }
        for connection in connections.withLock({ Array($0.values) }) { close(connection) }
    }

    /// Hands a ready connection to a worker unless one already holds it.
    private func dispatch(_ connection: SharedConnection, _ ready: Poller.Events) {
        let schedule = connection.state.withLock { state -> Bool in
            if state.closed { return false }
            if state.inService {
                state.pendingEvents.formUnion(ready)
                return false
            }
            state.inService = true
            return true
        }
        if schedule { queue.push(.ready(connection, ready)) }
    }

    /// A connection's server is asked to look at it (from any thread): queue
    /// it for a worker unless a worker already has it.
    private func schedule(_ connection: SharedConnection) {
        let schedule = connection.state.withLock { state -> Bool in
            if state.closed || state.inService { return false }
            state.inService = true
            return true
        }
        if schedule { queue.push(.ready(connection, [])) }
    }

    private func acceptConnections() {
        let counters = self.counters
        let keepGoing = acceptor.acceptPending(admit: { admit($0) }, refused: { counters.add(counters.refused, 1) })
        if !keepGoing { pauseAccepting() }
    }

    private func admit(_ socket: Socket) {
        try? socket.setNoDelay()
        generation &+= 1
        let token = UInt64(generation) << 32 | UInt64(UInt32(socket.descriptor))
        let now = Clock.monotonicNanoseconds()
        // Only this thread admits, and the client count can only fall
        // meanwhile, so checking here and connecting below cannot over-admit.
        let clients = hub?.clientCount ?? counters.echoClients.load(ordering: .relaxed)
        let admitted = live.limits.admits(connectedClients: clients)
        let connection = SharedConnection(socket: socket, admitted: admitted, now: now, token: token) {
            [unowned self] in schedule($0)
        }
        connections.withLock { $0[token] = connection }
        if !admitted {
            // The line, our side shut, then linger until the peer closes.
            counters.add(counters.refused, 1)
            Replies.serverFull.withUnsafeBytes { _ = try? socket.write($0) }
            connection.state.withLock { $0.closeRequested = true }
            _ = connection.finishClose(deadline: now + Self.lingerNanoseconds)
            lingering.wrappingAdd(1, ordering: .relaxed)
            context.logger.debug("refused \(socket): server full (\(clients) clients)")
            return arm(connection)
        }
        counters.add(counters.connectionsTotal, 1)
        // Registered before the welcome, so a worker woken by its delivery
        // always finds the registration it re-arms.
        arm(connection)
        if let hub {
            _ = hub.admit(connection, limits: live.limits)
        } else {
            counters.echoClients.wrappingAdd(1, ordering: .relaxed)
        }
        context.logger.debug("accepted \(socket)")
    }

    /// First registration, EPOLLONESHOT.
    private func arm(_ connection: SharedConnection) {
        do {
            try poller.register(connection.socket.descriptor, for: [.readable, .oneShot], data: connection.token)
        } catch {
            context.logger.warn("cannot watch \(connection.socket): \(error)")
            connection.fail(.connectionError)
            schedule(connection)
        }
    }

    private func pauseAccepting() {
        guard acceptPausedUntil == nil else { return }
        acceptPausedUntil = Clock.monotonicNanoseconds() + 100_000_000
        try? poller.modify(listener.descriptor, for: [], data: Self.listenerToken)
    }

    /// Timers, run by the dispatcher: accept pauses, idle and line timeouts,
    /// lingering deadlines, the shutdown deadline.
    private func sweep(now: Int64, stopDeadline: Int64?) {
        if let until = acceptPausedUntil, now >= until, stopDeadline == nil {
            acceptPausedUntil = nil
            try? poller.modify(listener.descriptor, for: .readable, data: Self.listenerToken)
        }
        let closeTimeout = live.closeTimeout
        let limits = live.limits
        for connection in connections.withLock({ Array($0.values) }) {
            let expiry = connection.state.withLock { state -> DisconnectReason?? in
                guard !state.closed, !state.inService else { return nil }
                if let deadline = state.lingerDeadline {
                    guard now >= deadline || (stopDeadline.map { now >= $0 } ?? false) else { return nil }
                    state.inService = true
                    return .some(nil)
                }
                if state.closeRequested && stopDeadline == nil {
                    guard let deadline = state.closeDeadline else {
                        state.closeDeadline = now + closeTimeout
                        return nil
                    }
                    guard now >= deadline else { return nil }
                    context.logger.debug(
                        "closing \(connection.socket): its last output was not taken within the close timeout")
                    state.inService = true
                    return .some(nil)
                }
                guard connection.admitted, stopDeadline == nil else { return nil }
                let reason: DisconnectReason
                if limits.isIdle(lastInput: state.lastInput, now: now, reading: state.isReading) {
                    reason = .idleTimeout
                } else if hub != nil && limits.isLineTimedOut(partialSince: state.partialSince, now: now) {
                    reason = .lineTimeout
                } else {
                    return nil
                }
                state.inService = true
                return .some(reason)
            }
            if let expiry { queue.push(.expire(connection, expiry)) }
        }
    }

    private func beginShutdown() -> Int64 {
        let deadline = Clock.monotonicNanoseconds() + live.shutdownTimeout
        shutdownDeadline.store(deadline, ordering: .relaxed)
        listener.close()
        hub?.shutdown()
        for connection in connections.withLock({ Array($0.values) }) {
            connection.state.withLock { $0.closeRequested = true }
            schedule(connection)
        }
        return deadline
    }

    // MARK: - Workers

    private func work() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.readSize, alignment: 16)
        defer { buffer.deallocate() }
        var live = LiveSettings(context.settings)
        while true {
            let task = queue.pop()
            live.refresh()
            switch task {
            case .stop:
                return
            case .ready(let connection, let ready):
                serve(connection, ready, buffer, live.limits)
            case .expire(let connection, let reason):
                if let reason {
                    context.logger.debug("closing \(connection.socket): \(reason)")
                    if let hub {
                        hub.disconnect(connection, reason: reason)
                    } else {
                        connection.state.withLock { $0.closeRequested = true }
                    }
                    serve(connection, [], buffer, live.limits)
                } else {
                    close(connection)  // lingered long enough
                }
            }
        }
    }

    /// Serves a connection this worker holds, then gives it back to epoll
    /// (or handles what arrived meanwhile).
    private func serve(
        _ connection: SharedConnection, _ ready: Poller.Events, _ buffer: UnsafeMutableRawBufferPointer, _ limits: Limits
    ) {
        var ready = ready
        while true {
            if !handle(connection, ready, buffer, limits) { return close(connection) }
            let next = connection.state.withLock { state -> Poller.Events? in
                if state.closed { return nil }
                if !state.pendingEvents.isEmpty {
                    defer { state.pendingEvents = [] }
                    return state.pendingEvents
                }
                if state.abort != nil || (state.closeRequested && state.output.isEmpty && state.lingerDeadline == nil) {
                    return []  // more to do before waiting again
                }
                var interest: Poller.Events = []
                if state.lingerDeadline != nil || state.isReading { interest.insert(.readable) }
                if !state.output.isEmpty && state.lingerDeadline == nil { interest.insert(.writable) }
                state.inService = false
                // Under the lock, so a concurrent schedule() sees a consistent state.
                do {
                    try poller.modify(connection.socket.descriptor, for: interest.union(.oneShot), data: connection.token)
                } catch {
                    state.abort = .connectionError
                    state.inService = true
                    return []
                }
                return nil
            }
            guard let next else { return }
            ready = next
        }
    }

    /// One round of I/O. False when the connection is finished and must close.
    private func handle(
        _ connection: SharedConnection, _ ready: Poller.Events, _ buffer: UnsafeMutableRawBufferPointer, _ limits: Limits
    ) -> Bool {
        let view = connection.state.withLock { $0.snapshot }
        if let reason = view.abort {
            context.logger.debug("closing \(connection.socket): \(reason)")
            if connection.admitted { hub?.disconnect(connection, reason: reason) }
            return false
        }
        let failed = ready.contains(.error) || ready.contains(.hangup)
        if view.lingerDeadline != nil {
            if ready.contains(.readable) || failed { return connection.drainLingering(into: buffer) }
            return true
        }
        let now = Clock.monotonicNanoseconds()
        if ready.contains(.writable) || (failed && !view.isReading) {
            connection.flushQueued(limits: limits, counters: counters, chat: hub != nil, now: now)
            if failed && !view.isReading { connection.fail(.connectionError) }
        }
        if view.isReading && (ready.contains(.readable) || failed) {
            if let hub {
                connection.readChat(into: buffer, hub: hub, limits: limits, counters: counters, now: now)
            } else {
                connection.readEcho(into: buffer, limits: limits, counters: counters, now: now)
            }
        }
        let after = connection.state.withLock { $0.snapshot }
        if after.abort == nil && after.closeRequested && after.queued == 0 && after.lingerDeadline == nil {
            var deadline = now + Self.lingerNanoseconds
            let stop = shutdownDeadline.load(ordering: .relaxed)
            if stop > 0 { deadline = min(deadline, stop) }
            if connection.finishClose(deadline: deadline) { return false }
            lingering.wrappingAdd(1, ordering: .relaxed)
        }
        return true
    }

    /// Closes the socket and forgets the connection (a worker, or the
    /// dispatcher after the workers stopped).
    private func close(_ connection: SharedConnection) {
        let wasOpen = connection.state.withLock { state -> Bool in
            if state.lingerDeadline != nil && !state.closed { lingering.wrappingSubtract(1, ordering: .relaxed) }
            return !state.closed
        }
        guard wasOpen else { return }
        connection.closeSocket()
        connections.withLock { $0[connection.token] = nil }
        if hub == nil && connection.admitted { counters.echoClients.wrappingSubtract(1, ordering: .relaxed) }
    }
}

/// A FIFO of tasks for the workers: a lock-protected array and a semaphore
/// that counts the items, so an idle worker sleeps until there is work.
final class WorkQueue<Item: Sendable>: Sendable {
    private let items = Lock<Storage>(Storage())
    private let available = Semaphore()

    struct Storage {
        var buffer: [Item] = []
        var head = 0
    }

    func push(_ item: Item) {
        items.withLock { $0.buffer.append(item) }
        available.signal()
    }

    func pop() -> Item {
        available.wait()
        return items.withLock { storage in
            let item = storage.buffer[storage.head]
            storage.head += 1
            if storage.head == storage.buffer.count {
                storage.buffer.removeAll(keepingCapacity: true)
                storage.head = 0
            } else if storage.head >= 1024 && storage.head * 2 >= storage.buffer.count {
                storage.buffer.removeFirst(storage.head)
                storage.head = 0
            }
            return item
        }
    }

    /// Items waiting for a worker (the `queue_depth` of `/stats`).
    var depth: Int { items.withLock { $0.buffer.count - $0.head } }
}
