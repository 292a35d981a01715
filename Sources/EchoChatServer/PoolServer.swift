import EchoChatCore
import EchoChatPOSIX
import Synchronization

/// The pool strategy: a fixed pool of worker threads (`--workers`, default:
/// the CPUs this process may run on) that take turns at one epoll instance:
/// the leader/followers pattern, not a dispatcher. More workers than CPUs
/// buys a long tail and nothing else: a worker descheduled in the middle of
/// its batch holds those clients for a time slice (2 workers on 1 CPU:
/// p99 4.5 ms at 100 connections against 0.66 ms with 1, same msgs/s).
///
/// - Threads: every worker waits in epoll_wait(2) on the same poller (the
///   caller of `run()` is worker 0). The kernel hands each ready event to
///   one of them, and that worker serves the connection itself: no thread
///   between the event and the work, so no hand-off and no wake-up per
///   message (the dispatcher this replaced paid both, and trailed SwiftNIO's
///   one loop by 12–17% with the server on one CPU).
/// - Ownership: registrations are EPOLLONESHOT, so readiness is reported to
///   one worker once. The worker takes the connection *into service*
///   (`Connection.Shared.take`, under its lock, the thread strategy's
///   protocol too) and alone serves it (`Connection.serve`) until it re-arms
///   it and lets go. Readiness or chat lines that arrive meanwhile are noted
///   on the connection and picked up by the same worker before it lets go
///   (`Shared.arrivals`), never by a second one.
/// - Work that is not readiness (a chat line for a client no worker holds, a
///   timer, a turn, the file store's answer, a new connection's welcome)
///   goes to the job queue: a locked FIFO of connections already in service
///   and a counting eventfd (EFD_SEMAPHORE) in the same poller, so the
///   kernel hands each job to one waiting worker as it does readiness. A
///   chat line is queued on its recipient once per burst; the sender's
///   worker never writes another client's socket, unless the hub's backlog
///   is over budget, when it flushes them itself.
/// - The listener is one-shot too: the worker that gets it accepts a batch,
///   queues each new connection's welcome, and re-arms it.
/// - Timers: whichever worker finds the sweep due first (an atomic) sweeps.
/// - Cluster: the link to Redis is in the poller too, one-shot: the worker
///   that gets it, or finds its deadline passed, services it
///   (`ClusterLink.service`, one at a time) and re-arms it.
/// - Shutdown: the worker that sees the request closes the listener, has
///   the hub queue the chat notice, and queues every connection; workers
///   serve until all are closed or `shutdown-timeout` passes; then the one
///   that finds it so rings the control eventfd without draining it, so
///   every worker wakes and returns, and `run()` joins them.
public final class PoolServer: ServerStrategy {
    public let control: ControlRequests
    private let pool: Workers

    public init(context: ServerContext, listener: Socket) throws(SystemError) {
        control = try ControlRequests()
        pool = try Workers(context: context, listener: listener, control: control)
    }

    public func serverStats() -> ServerStats { pool.layer.serverStats() }

    public func run() throws(SystemError) { try pool.run() }
}

/// The workers and all they share; Sendable, so every worker holds it.
private final class Workers: Sendable {
    let layer: ConnectionLayer
    let poller: Poller
    private let control: ControlRequests
    private let settings: RuntimeSettings
    private let jobs: JobQueue
    private let count: Int
    /// Every open connection by registration token (for events and the sweep).
    private let table = Lock<[UInt64: Connection]>([:])
    /// How many connections `table` holds, and whether accepting is paused
    /// (out of descriptors): what a worker looks at before every wait, so
    /// without taking either lock (the accepting one is held for a whole
    /// accept batch).
    private let openCount = Atomic<Int>(0)
    private let acceptPaused = Atomic<Bool>(false)
    /// The listener and what only its current holder touches.
    private let accepting: Lock<Accepting>
    /// When the next sweep is due; the worker that moves it sweeps.
    private let nextSweep = Atomic<Int64>(0)
    /// The shutdown deadline once shutdown has begun (0 before).
    private let shutdownDeadline = Atomic<Int64>(0)
    /// Set once every worker is to return.
    private let stopping = Atomic<Bool>(false)

    static let bufferSize = 64 * 1024
    /// Events one worker takes per wait: enough to amortise the system call,
    /// few enough that a batch does not sit with one worker while others idle.
    static let eventsPerWait = 32

    /// The acceptor and the token generator (the accepting worker's alone).
    final class Accepting {
        var acceptor: Acceptor
        var tokens = PollTokens()
        var closed = false
        init(_ acceptor: consuming Acceptor) { self.acceptor = acceptor }
    }

    init(context: ServerContext, listener: Socket, control: ControlRequests) throws(SystemError) {
        poller = try Poller()
        self.control = control
        settings = context.settings
        count = context.configuration.effectiveWorkers
        jobs = try JobQueue()
        let (jobs, count) = (jobs, count)
        layer = ConnectionLayer(context: context, strategy: .pool) {
            [.init("workers", String(count)), .init("queue_depth", String(jobs.depth))]
        }
        accepting = Lock(Accepting(try Acceptor(listener: listener, layer: layer, poller: poller, oneShot: true)))
        try poller.register(control.wakeup.descriptor, for: .readable, data: PollTokens.control)
        try poller.register(jobs.doorbell.descriptor, for: .readable, data: PollTokens.jobs)
        if let cluster = context.cluster {
            try poller.register(cluster.descriptor, for: [.readable, .oneShot], data: PollTokens.cluster)
        }
        layer.setWaker { [weak self] connection in self?.schedule(connection) }
    }

    deinit {
        poller.close()
        jobs.doorbell.close()
    }

    /// Runs worker 0 here and the others on threads of their own; returns
    /// once all have returned, with every connection closed.
    func run() throws(SystemError) {
        var handles: [ThreadHandle] = []
        defer {
            stop()
            for handle in handles { handle.join() }
            for connection in table.withLock({ Array($0.values) }) { connection.forceClose() }
            table.withLock { $0.removeAll() }
        }
        for index in 1..<max(count, 1) {
            handles.append(try Threads.spawn(name: "echochat-w\(index)") { [self] in work() })
        }
        work()
    }

    /// Every worker returns (they all wake: the control eventfd stays readable).
    private func stop() {
        stopping.store(true, ordering: .releasing)
        control.wakeup.ring()
    }

    private func work() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.bufferSize, alignment: 64)
        defer { buffer.deallocate() }
        var live = LiveSettings(settings)
        var deliveries = Deliveries()
        var events = PollEvents(capacity: Self.eventsPerWait)
        var worker = Worker(buffer: buffer)
        while !stopping.load(ordering: .acquiring) {
            guard let count = try? poller.wait(into: &events, timeoutMilliseconds: waitTimeout()) else { continue }
            live.refresh()
            for index in 0..<count {
                switch events.data(at: index) {
                case PollTokens.listener: acceptConnections(live: live, deliveries: &deliveries)
                case PollTokens.control: handleControl(live: live)
                case PollTokens.cluster: serviceCluster(ready: true)
                case PollTokens.jobs:
                    if let connection = jobs.take() { serve(connection, [], live: &live, deliveries: &deliveries, worker: &worker) }
                case let token:
                    guard let connection = table.withLock({ $0[token] }) else { continue }
                    let ready = events.events(at: index)
                    if !ready.isDisjoint(with: [.error, .hangup]) { connection.peerGone() }
                    if connection.shared.withLock({ $0.take(noting: ready) }) {
                        serve(connection, ready, live: &live, deliveries: &deliveries, worker: &worker)
                    }
                }
            }
            let now = Clock.monotonicNanoseconds()
            serviceCluster(ready: false, now: now)
            sweepIfDue(now: now)
            let deadline = shutdownDeadline.load(ordering: .acquiring)
            if deadline > 0 && (now >= deadline || openCount.load(ordering: .acquiring) == 0) { stop() }
        }
    }

    /// Until the next sweep while there is anything to time (or the cluster
    /// link's next deadline); for ever otherwise.
    private func waitTimeout() -> Int32 {
        let timed =
            shutdownDeadline.load(ordering: .relaxed) > 0 || openCount.load(ordering: .relaxed) > 0
            || acceptPaused.load(ordering: .relaxed)
        let now = Clock.monotonicNanoseconds()
        let timeout = timed ? Int32(max(1, (nextSweep.load(ordering: .relaxed) - now) / 1_000_000 + 1)) : -1
        return layer.context.cluster?.waitTimeout(timeout, now: now) ?? timeout
    }

    /// The cluster link, if it was ready or is due and no other worker
    /// services it now; the worker that did re-arms it.
    private func serviceCluster(ready: Bool, now: Int64 = Clock.monotonicNanoseconds()) {
        var deliveries = Deliveries()
        guard let cluster = layer.context.cluster, cluster.service(ready: ready, now: now, into: &deliveries) else { return }
        try? poller.modify(cluster.descriptor, for: [.readable, .oneShot], data: PollTokens.cluster)
        wake(&deliveries)
    }

    /// What one worker keeps between connections.
    struct Worker {
        let buffer: UnsafeMutableRawBufferPointer
        /// Recipients this worker adopted to flush at once while the chat
        /// backlog is over budget, already in service.
        var held: [Connection] = []
    }

    /// Serves `connection` (in service, held by this worker) until it is
    /// closed, re-armed and let go, or queued for another turn; then any
    /// recipients it adopted.
    private func serve(
        _ first: Connection, _ firstReady: Poller.Events, live: inout LiveSettings, deliveries: inout Deliveries,
        worker: inout Worker
    ) {
        var next: (Connection, Poller.Events)? = (first, firstReady)
        while let (connection, initial) = next {
            var ready = initial
            while true {
                let stop = shutdownDeadline.load(ordering: .acquiring)
                let settings = live.connection(shutdownDeadline: stop > 0 ? stop : nil)
                connection.serve(
                    ready, now: Clock.monotonicNanoseconds(), settings: settings, buffer: worker.buffer,
                    deliveries: &deliveries)
                let adopt = layer.hub?.isBacklogged == true
                for recipient in deliveries.woken where recipient.shared.withLock({ $0.take() }) {
                    if adopt { worker.held.append(recipient) } else { jobs.push(recipient) }
                }
                deliveries.removeAll()
                if connection.isClosed {
                    table.withLock { table in
                        table[connection.token] = nil
                        openCount.store(table.count, ordering: .releasing)
                    }
                    break
                }
                if connection.wantsTurn {
                    // Lines left to handle: the end of the queue, still in
                    // service (what arrived meanwhile stays noted for then).
                    jobs.push(connection)
                    break
                }
                if let more = connection.shared.withLock({ $0.arrivals(release: false) }) {
                    ready = more
                    continue
                }
                // Re-armed outside the lock; readiness that fires before we let
                // go lands in pendingEvents and is taken below.
                try? poller.modify(connection.socket.descriptor, for: connection.interest.union(.oneShot), data: connection.token)
                guard let more = connection.shared.withLock({ $0.arrivals(release: true) }) else { break }
                ready = more
            }
            next = worker.held.popLast().map { ($0, []) }
        }
    }

    /// A new connection (in service since `layer.accept`): registered
    /// one-shot with nothing armed, and queued for its first look, which arms it.
    private func add(_ connection: Connection) {
        table.withLock { table in
            table[connection.token] = connection
            openCount.store(table.count, ordering: .releasing)
        }
        connection.shared.withLock { $0.inService = true }
        do {
            try poller.register(connection.socket.descriptor, for: [.oneShot], data: connection.token)
        } catch {
            layer.logger.warn("cannot watch \(connection.socket): \(error)", limitedAs: "watch-connection")
        }
        jobs.push(connection)
    }

    private func acceptConnections(live: LiveSettings, deliveries: inout Deliveries) {
        let now = Clock.monotonicNanoseconds()
        accepting.withLock { state in
            guard !state.closed else { return }
            state.acceptor.accept(now: now) { socket in
                add(
                    layer.accept(
                        socket, token: state.tokens.next(for: socket), now: now, settings: live.connection,
                        inService: true, deliveries: &deliveries))
            }
            state.acceptor.rearm()
            acceptPaused.store(state.acceptor.pausedUntil != nil, ordering: .relaxed)
        }
        wake(&deliveries)  // once per batch, not per join
    }

    private func handleControl(live: LiveSettings) {
        control.wakeup.drain()
        if stopping.load(ordering: .acquiring) {
            control.wakeup.ring()  // the others must see it too
            return
        }
        if control.takeStatsRequest() { layer.logger.info("stats: \(layer.serverStats().keyValues)") }
        let deadline = Clock.monotonicNanoseconds() + live.shutdownTimeout
        if control.shutdownRequested,
            shutdownDeadline.compareExchange(expected: 0, desired: deadline, ordering: .acquiringAndReleasing).exchanged
        {
            accepting.withLock { state in
                state.closed = true
                state.acceptor.listener.close()
            }
            var deliveries = Deliveries()
            layer.beginShutdown(deliveries: &deliveries)
            wake(&deliveries)
            // Every connection is served once more, with the deadline in its
            // settings: marked as having mail, so a worker that holds one now
            // serves it again before letting go.
            for connection in table.withLock({ Array($0.values) }) {
                connection.shared.withLock { $0.mailWaiting = true }
                schedule(connection)
            }
        }
    }

    /// One worker sweeps per interval: the accept pause, and every
    /// connection whose deadline has passed.
    private func sweepIfDue(now: Int64) {
        let due = nextSweep.load(ordering: .relaxed)
        guard now >= due,
            nextSweep.compareExchange(expected: due, desired: now + Acceptor.sweepInterval, ordering: .relaxed).exchanged
        else { return }
        if shutdownDeadline.load(ordering: .relaxed) == 0 {
            accepting.withLock { state in
                _ = state.acceptor.resumeIfDue(now: now)
                acceptPaused.store(state.acceptor.pausedUntil != nil, ordering: .relaxed)
            }
        }
        for connection in table.withLock({ Array($0.values) }) {
            let due = connection.shared.withLock { state in state.deadline.map { now >= $0 } ?? false }
            if due { schedule(connection) }
        }
    }

    /// Queues `connection` for a worker unless one already holds it, in which
    /// case that worker sees what arrived before letting go. From any thread.
    func schedule(_ connection: Connection) {
        if connection.shared.withLock({ $0.take() }) { jobs.push(connection) }
    }

    private func wake(_ deliveries: inout Deliveries) {
        for connection in deliveries.woken { schedule(connection) }
        deliveries.removeAll()
    }
}
