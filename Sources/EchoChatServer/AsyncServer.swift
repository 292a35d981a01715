import EchoChatCore
import EchoChatPOSIX

/// The async strategy: one Swift task per connection, all on one thread
/// (asyncio's model, or gevent's).
///
/// - Threads: exactly one, the caller of `run()`: the reactor. It waits in
///   epoll_wait(2) and, between waits, runs the tasks' jobs itself
///   (`ReactorExecutor`, every task's executor preference). So tasks switch
///   only where they await, never in parallel.
/// - Tasks: the accept task (the root, started by `run()`) owns a task group
///   and adds one child task per accepted connection. A connection's task is
///   a plain loop: `for await ready in readiness(of: connection) { serve }`.
///   Each wait that would block suspends the task on a continuation that
///   the reactor resumes: on readiness, on the connection's deadline, when
///   another connection queued chat lines for it, or for its turn.
/// - Ownership: the reactor thread owns the listener, the epoll instance and
///   every connection (a table indexed by descriptor, holding each task's
///   continuation); only a connection's own task calls `Connection.serve`.
/// - Blocking: only in epoll_wait(2), and not at all while jobs wait to run.
/// - Capacity: descriptors (`max-clients`, then RLIMIT_NOFILE; see `Acceptor`),
///   and memory: a task and its frames per connection besides the connection.
/// - Timers: a sweep every 100 ms resumes the tasks whose deadline passed
///   (each task leaves its deadline in its slot when it suspends). Not a
///   heap: the idle and line deadlines move with every line, so a heap
///   would pay a reorder per message, where the sweep costs one pass over
///   the table ten times a second, whatever the traffic.
/// - Shutdown: the signal watcher's request cancels the accept task; it
///   closes the listener and has the chat notice queued, and the
///   cancellation reaches every connection's task (through the group), which
///   serves once more under the shutdown deadline and then delivers and
///   closes as in every strategy; the group ends when the last connection
///   has closed, by `shutdown-timeout` at the latest, and `run()` returns.
///
/// Why tasks wait for readiness and not for bytes: `Connection.serve` is the
/// connection's whole life, shared by every strategy: it decides how much to
/// read (backpressure, rate limits), when to write and when to close. So the
/// one thing a connection's task awaits is "something happened" (readiness,
/// mail, a deadline); a `bytes` sequence would put a second read policy in
/// this file.
public final class AsyncServer: ServerStrategy, @unchecked Sendable {
    // @unchecked Sendable: the tasks capture the server, but every one of
    // them runs on the reactor thread, as does `run()`; so all of the state
    // below belongs to that thread (asserted in debug builds). Other threads
    // touch only `control`, the executor's remote queue and `interrupts`,
    // which lock. Being the thread's alone, the `var`s skip Swift's dynamic
    // exclusivity checks (as `EventLoop`'s do).
    public let control: ControlRequests
    private let layer: ConnectionLayer
    @exclusivity(unchecked) private var live: LiveSettings
    @exclusivity(unchecked) private var settings: SharedConnectionSettings
    private let poller: Poller
    @exclusivity(unchecked) private var acceptor: Acceptor
    @exclusivity(unchecked) private var loopThread = OwnerThread()
    @exclusivity(unchecked) private var executor: ReactorExecutor?
    /// The accept task: cancelled to shut down.
    @exclusivity(unchecked) private var root: Task<Void, Never>?
    @exclusivity(unchecked) private var finished = false

    @exclusivity(unchecked) private var table: [Slot?] = []
    @exclusivity(unchecked) private var openCount = 0
    @exclusivity(unchecked) private var deliveries = Deliveries()
    /// Connections (tokens) whose task waits for its next turn: resumed after the next poll.
    @exclusivity(unchecked) private var turns: [UInt64] = []
    @exclusivity(unchecked) private var turnsNow: [UInt64] = []
    @exclusivity(unchecked) private var events: PollEvents
    @exclusivity(unchecked) private var harvest: PollEvents
    @exclusivity(unchecked) private var servedSinceHarvest = 0
    private let buffer: UnsafeMutableRawBufferPointer
    @exclusivity(unchecked) private var tokens = PollTokens()
    @exclusivity(unchecked) private var now: Int64 = 0
    @exclusivity(unchecked) private var nextSweep: Int64 = 0
    @exclusivity(unchecked) private var shutdownDeadline: Int64?
    @exclusivity(unchecked) private var listening = true
    /// The accept task, while it waits for the listener.
    @exclusivity(unchecked) private var listenerWaiter: UnsafeContinuation<Void, Never>?
    /// Cancellations that ran on another thread: the tokens whose waits to end.
    private let interrupts = Lock<[UInt64]>([])

    /// A connection and its task's wait.
    private struct Slot {
        let connection: Connection
        /// What epoll watches for it.
        var interest: Poller.Events
        /// The task, while suspended.
        var waiter: UnsafeContinuation<Void, Never>?
        /// Readiness reported since the task last took it.
        var ready: Poller.Events = []
        /// Mail, a turn or a cancellation since the task last looked.
        var woken = false
        /// When the sweep resumes the waiting task (`Int64.max`: never).
        var deadline = Int64.max
    }

    public init(context: ServerContext, listener: Socket) throws(SystemError) {
        layer = ConnectionLayer(context: context, strategy: .async)
        live = LiveSettings(context.settings)
        settings = live.connection
        poller = try Poller()
        acceptor = try Acceptor(listener: listener, layer: layer, poller: poller)
        control = try ControlRequests()
        buffer = .allocate(byteCount: 64 * 1024, alignment: 16)
        let capacity = min(max(1024, context.configuration.maxClients + 64), 65536)
        events = PollEvents(capacity: capacity)
        harvest = PollEvents(capacity: capacity)
        try poller.register(control.wakeup.descriptor, for: .readable, data: PollTokens.control)
        let control = control
        layer.setWaker { control.wake($0) }
    }

    deinit {
        buffer.deallocate()
        poller.close()
    }

    public func serverStats() -> ServerStats { layer.serverStats() }

    // MARK: The reactor

    public func run() throws(SystemError) {
        loopThread = OwnerThread()
        let executor = ReactorExecutor(wakeup: control.wakeup)
        self.executor = executor
        now = Clock.monotonicNanoseconds()
        nextSweep = now + Acceptor.sweepInterval
        root = Task(executorPreference: executor) { [self] in
            await acceptTask()
            finished = true
        }
        runTasks()
        while !finished {
            var timeout = openCount > 0 || acceptor.pausedUntil != nil ? Int32(max(1, (nextSweep - now) / 1_000_000 + 1)) : -1
            if !turns.isEmpty || executor.hasJobs { timeout = 0 }
            let count = try poller.wait(into: &events, timeoutMilliseconds: timeout)
            now = Clock.monotonicNanoseconds()
            live.refresh()
            settings = live.connection(shutdownDeadline: shutdownDeadline)
            markGonePeers(in: events, count)  // before anyone queues lines for them
            for index in 0..<count {
                switch events.data(at: index) {
                case PollTokens.listener: resumeListener()
                case PollTokens.control: handleControl()
                case let token: ready(token, events.events(at: index))
                }
            }
            if !turns.isEmpty {
                swap(&turns, &turnsNow)
                for token in turnsNow { wake(token) }
                turnsNow.removeAll(keepingCapacity: true)
            }
            if now >= nextSweep { sweep() }
            runTasks()
        }
        for slot in table { slot?.connection.forceClose() }
        if listening { acceptor.listener.close() }
        self.executor = nil
    }

    /// Runs every task that can run, and the ones their chat lines wake, until all wait.
    private func runTasks() {
        guard let executor else { return }
        repeat {
            executor.runJobs()
            flushDeliveries()
        } while executor.hasJobs
    }

    /// The slot an event's token names, unless its connection was closed since.
    private func slotIndex(of token: UInt64) -> Int? {
        let descriptor = PollTokens.descriptor(of: token)
        guard descriptor < table.count, let slot = table[descriptor], slot.connection.token == token else { return nil }
        return descriptor
    }

    /// Resumes the task waiting on slot `index`, if it waits.
    private func resume(_ index: Int) {
        guard let waiter = table[index]?.waiter else { return }
        table[index]!.waiter = nil
        waiter.resume()
    }

    private func wake(_ token: UInt64) {
        guard let index = slotIndex(of: token) else { return }
        table[index]!.woken = true
        resume(index)
    }

    private func ready(_ token: UInt64, _ ready: Poller.Events) {
        guard let index = slotIndex(of: token) else { return }
        table[index]!.ready.formUnion(ready)
        resume(index)
    }

    private func resumeListener() {
        guard let waiter = listenerWaiter else { return }
        listenerWaiter = nil
        waiter.resume()
    }

    /// Chat lines were queued for these connections: their tasks collect them.
    private func flushDeliveries() {
        while let connection = deliveries.woken.popLast() { wake(connection.token) }
    }

    private func markGonePeers(in events: borrowing PollEvents, _ count: Int) {
        for index in 0..<count where !events.events(at: index).isDisjoint(with: [.error, .hangup]) {
            if let slot = slotIndex(of: events.data(at: index)) { table[slot]?.connection.peerGone() }
        }
    }

    private func handleControl() {
        control.wakeup.drain()
        executor?.takeRemoteJobs()
        let interrupted = interrupts.withLock { list in
            defer { list.removeAll() }
            return list
        }
        for token in interrupted { self.interrupted(token) }
        var woken: [Connection] = []
        control.takeWoken(swapping: &woken)
        for connection in woken { wake(connection.token) }
        if control.takeStatsRequest() { layer.logger.info("stats: \(serverStats().keyValues)") }
        guard control.shutdownRequested, shutdownDeadline == nil else { return }
        shutdownDeadline = now + live.shutdownTimeout
        settings = live.connection(shutdownDeadline: shutdownDeadline)
        // Structured concurrency does the rest: the accept task's wait ends,
        // and so does every connection task's (they are its group's children).
        root?.cancel()
    }

    /// A task's cancellation handler: ends its wait. Any thread.
    private func interrupt(_ token: UInt64) {
        if loopThread.isCurrent {
            interrupted(token)
        } else {
            interrupts.withLock { $0.append(token) }
            control.wakeup.ring()
        }
    }

    private func interrupted(_ token: UInt64) {
        if token == PollTokens.listener { resumeListener() } else { wake(token) }
    }

    /// Timers: the accept pause, every deadline that passed, and all waits
    /// once the shutdown deadline has.
    private func sweep() {
        nextSweep = now + Acceptor.sweepInterval
        if let until = acceptor.pausedUntil, now >= until { resumeListener() }
        let due = pastShutdownDeadline ? Int64.max : now
        for index in table.indices {
            guard let slot = table[index], slot.waiter != nil, slot.deadline <= due else { continue }
            resume(index)
        }
    }

    private var pastShutdownDeadline: Bool { shutdownDeadline.map { now >= $0 } ?? false }

    // MARK: The tasks

    /// The root task: accepts, one child task per connection, until cancelled.
    private func acceptTask() async {
        await withDiscardingTaskGroup { group in
            while await listenerReadiness() {
                if acceptor.resumeIfDue(now: now) { continue }
                acceptor.accept(now: now) { socket in
                    guard let connection = admit(socket) else { return }
                    group.addTask { [self] in await connectionTask(connection) }
                }
            }
            // Shutdown: the children were cancelled with us; the group waits for them.
            listening = false
            acceptor.listener.close()
            layer.beginShutdown(deliveries: &deliveries)
            flushDeliveries()
        }
    }

    /// Waits until the listener is readable (or its pause ended); false once cancelled.
    private func listenerReadiness() async -> Bool {
        loopThread.assertCurrent()
        guard !Task.isCancelled else { return false }
        await withTaskCancellationHandler {
            await withUnsafeContinuation { listenerWaiter = $0 }
        } onCancel: { [self] in
            interrupt(PollTokens.listener)
        }
        return !Task.isCancelled
    }

    private func admit(_ socket: Socket) -> Connection? {
        let token = tokens.next(for: socket)
        let connection = layer.accept(socket, token: token, now: now, settings: settings, deliveries: &deliveries)
        let interest = connection.interest
        do {
            try poller.register(socket.descriptor, for: interest, data: token)
        } catch {
            layer.logger.warn("cannot watch new connection: \(error)", limitedAs: "watch-connection")
            connection.forceClose()
            return nil
        }
        let index = Int(socket.descriptor)
        if index >= table.count { table.append(contentsOf: repeatElement(nil, count: index - table.count + 65)) }
        table[index] = Slot(connection: connection, interest: interest)
        openCount += 1
        return connection
    }

    /// A connection's whole task, in blocking style.
    private func connectionTask(_ connection: Connection) async {
        for await ready in readiness(of: connection) { serveInTask(connection, ready) }
        closeIfOpen(connection)  // never left open by a task that ended
    }

    @inline(never)
    private func closeIfOpen(_ connection: Connection) {
        if !connection.isClosed { connection.forceClose() }
    }

    /// What a connection's task awaits: the first element at once (a
    /// refused client's line, a welcome), then one per wake-up; it ends
    /// when the connection has closed.
    private func readiness(of connection: Connection) -> Readiness { Readiness(server: self, connection: connection) }

    struct Readiness: AsyncSequence, AsyncIteratorProtocol {
        typealias Element = Poller.Events
        typealias Failure = Never
        fileprivate let server: AsyncServer
        let connection: Connection
        var started = false

        func makeAsyncIterator() -> Readiness { self }

        mutating func next() async -> Poller.Events? {
            guard started else {
                started = true
                return []
            }
            return await server.nextReadiness(of: connection)
        }
    }

    // Memory: an idle connection's task holds its suspended async frames,
    // which the runtime allocates in 1 KiB slabs. So everything synchronous
    // (serving, the bookkeeping around a wait) is kept out of them
    // (@inline(never)), leaving the frames a few words each.

    private enum Wait {
        /// Something already happened (or the connection closed): no wait.
        case none
        /// For the next round, after the others.
        case turn
        /// For readiness, mail or the deadline; `cancellable` until shutdown began.
        case readiness(cancellable: Bool)
    }

    /// Suspends the connection's task until something happened to it
    /// (without suspending if something already has); nil once it has closed.
    fileprivate func nextReadiness(of connection: Connection) async -> Poller.Events? {
        let index = Int(connection.socket.descriptor)
        switch wait(for: connection) {
        case .none: break
        case .turn: await withUnsafeContinuation { park(index, $0) }
        case .readiness(cancellable: false): await withUnsafeContinuation { park(index, $0) }
        case .readiness(cancellable: true):
            let token = connection.token
            await withTaskCancellationHandler {
                await withUnsafeContinuation { park(index, $0) }
            } onCancel: { [self] in
                interrupt(token)
            }
        }
        return takeReadiness(of: connection)
    }

    /// Whether, and for what, the connection's task must wait.
    @inline(never)
    private func wait(for connection: Connection) -> Wait {
        loopThread.assertCurrent()
        guard !connection.isClosed else { return .none }
        let index = Int(connection.socket.descriptor)
        if connection.wantsTurn {
            // Lines read earlier wait: the others get their turn first (fairness).
            turns.append(connection.token)
            return .turn
        }
        guard let slot = table[index], slot.ready.isEmpty, !slot.woken else { return .none }
        table[index]!.deadline = connection.nextDeadline ?? .max
        // Once shutdown has begun and this task has seen it (cancelled), only
        // readiness, mail and the deadlines end its waits.
        return .readiness(cancellable: !Task.isCancelled)
    }

    @inline(never)
    private func park(_ index: Int, _ continuation: UnsafeContinuation<Void, Never>) {
        table[index]!.waiter = continuation
    }

    /// What happened while the task waited (nil: the connection has closed).
    @inline(never)
    private func takeReadiness(of connection: Connection) -> Poller.Events? {
        let index = Int(connection.socket.descriptor)
        guard !connection.isClosed, let slot = table[index], slot.connection === connection else { return nil }
        table[index]!.ready = []
        table[index]!.woken = false
        return slot.ready
    }

    @inline(never)
    private func serveInTask(_ connection: Connection, _ ready: Poller.Events) {
        serve(connection, ready)
        if pastShutdownDeadline && !connection.isClosed {
            connection.forceClose()
            settle(connection)
        }
    }

    /// One `Connection.serve`, then the poller's interest in step with what
    /// it wants, and the tasks of whoever now has a lot waiting woken.
    private func serve(_ connection: Connection, _ ready: Poller.Events) {
        loopThread.assertCurrent()
        connection.serve(ready, now: now, settings: settings, buffer: buffer, deliveries: &deliveries)
        settle(connection)
        while let urgent = deliveries.urgent.popLast() { wake(urgent.token) }
        guard let hub = layer.hub, hub.isBacklogged else { return }
        // A storm of leaves (every member told of every leave) while more
        // peers hang up: learn which are gone before queueing lines for
        // them. Level-triggered, so the events come back to be handled.
        servedSinceHarvest += 1
        if servedSinceHarvest >= 64, let count = try? poller.wait(into: &harvest, timeoutMilliseconds: 0) {
            servedSinceHarvest = 0
            markGonePeers(in: harvest, count)
        }
        flushDeliveries()
    }

    private func settle(_ connection: Connection) {
        let descriptor = Int(connection.socket.descriptor)
        guard descriptor < table.count, let slot = table[descriptor], slot.connection === connection else { return }
        if connection.isClosed {
            table[descriptor] = nil  // close(2) already took it out of epoll
            openCount -= 1
            return
        }
        let interest = connection.interest
        guard interest != slot.interest else { return }
        do {
            try poller.modify(connection.socket.descriptor, for: interest, data: connection.token)
            table[descriptor]!.interest = interest
        } catch {
            layer.logger.warn("epoll_ctl failed for \(connection.socket): \(error)", limitedAs: "epoll-ctl")
        }
    }
}
