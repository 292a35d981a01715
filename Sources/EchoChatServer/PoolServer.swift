import EchoChatCore
import EchoChatPOSIX
import Synchronization

/// The pool strategy: one dispatcher thread and a fixed pool of workers
/// (`--workers`, default: the CPUs this process may run on, at least 2).
///
/// - Threads: the caller of `run()` is the dispatcher. It alone waits in
///   epoll_wait(2), accepts and sweeps the timers. N workers take connections
///   from a queue (a lock-protected FIFO and a semaphore: the
///   listener/queue/workers shape of memcached's thread.c).
/// - Ownership: a connection is *in service* from the moment it is queued for
///   a worker until that worker re-arms it, and only that worker serves it
///   (`Connection.serve`). Registrations are EPOLLONESHOT, so readiness is
///   reported once; readiness or chat lines that arrive while a connection is
///   in service are noted on it and picked up by the same worker before it
///   lets go, never by a second one. A chat line for another client is queued
///   on that client's connection and, if it is not in service, the client is
///   queued for a worker once per burst (never written on the dispatcher).
/// - Fairness: a connection that still has lines to handle after its turn
///   (`wantsTurn`) goes back to the end of the queue, still in service.
/// - Blocking: the dispatcher in epoll_wait, idle workers on the semaphore.
/// - Capacity: descriptors and memory, as for epoll; throughput is bounded by
///   the hand-off from the dispatcher to a worker (one wake-up per event).
/// - Shutdown: the dispatcher closes the listener, has the hub queue the chat
///   notice, publishes the deadline and queues every connection, and serves
///   events until all are closed or `shutdown-timeout` passes; then it stops
///   the workers and joins them.
public final class PoolServer: ServerStrategy {
    public let control: ControlRequests
    private let pool: Workers
    private var acceptor: Acceptor

    public init(context: ServerContext, listener: Socket) throws(SystemError) {
        control = try ControlRequests()
        pool = try Workers(context: context)
        acceptor = try Acceptor(listener: listener, layer: pool.layer, poller: pool.poller)
        try pool.poller.register(control.wakeup.descriptor, for: .readable, data: PollTokens.control)
    }

    public func serverStats() -> ServerStats { pool.layer.serverStats() }

    public func run() throws(SystemError) {
        let workers = try pool.startWorkers()
        var events = PollEvents(capacity: 512)
        var live = LiveSettings(pool.layer.context.settings)
        var deliveries = Deliveries()
        var tokens = PollTokens()
        var stopDeadline: Int64?
        var nextSweep: Int64 = 0
        while stopDeadline.map({ Clock.monotonicNanoseconds() < $0 && !pool.isEmpty }) ?? true {
            let timed = !pool.isEmpty || acceptor.pausedUntil != nil || stopDeadline != nil
            let timeout = timed ? Int32(max(1, (nextSweep - Clock.monotonicNanoseconds()) / 1_000_000 + 1)) : -1
            let count = try pool.poller.wait(into: &events, timeoutMilliseconds: timeout)
            live.refresh()
            let now = Clock.monotonicNanoseconds()
            for index in 0..<count {
                switch events.data(at: index) {
                case PollTokens.listener:
                    guard stopDeadline == nil else { continue }
                    acceptor.accept(
                        now: now,
                        admit: { socket in
                            let connection = pool.layer.accept(
                                socket, token: tokens.next(for: socket), now: now, settings: live.connection, deliveries: &deliveries)
                            pool.add(connection)
                        })
                    pool.wake(&deliveries)  // once per batch, not per join
                case PollTokens.control:
                    control.wakeup.drain()
                    if control.takeStatsRequest() { pool.layer.logger.info("stats: \(serverStats().keyValues)") }
                    if control.shutdownRequested && stopDeadline == nil {
                        stopDeadline = now + live.shutdownTimeout
                        acceptor.listener.close()
                        pool.shutDown(deadline: stopDeadline!)
                    }
                case let token:
                    pool.dispatch(token, events.events(at: index))
                }
            }
            if now >= nextSweep {
                nextSweep = now + Acceptor.sweepInterval
                if stopDeadline == nil { _ = acceptor.resumeIfDue(now: now) }
                pool.sweep(now: now)
            }
        }
        pool.stop(workers)
    }
}

/// The workers and what they share with the dispatcher; Sendable, so every
/// worker holds it.
private final class Workers: Sendable {
    let layer: ConnectionLayer
    let poller: Poller
    private let settings: RuntimeSettings
    private let queue = WorkQueue<Job>()
    private let count: Int
    /// Every open connection by registration token (for the dispatcher's events and sweep).
    private let table = Lock<[UInt64: Connection]>([:])
    private let shutdownDeadline = Atomic<Int64>(0)

    enum Job: Sendable {
        case serve(Connection, Poller.Events)
        case stop
    }

    static let bufferSize = 64 * 1024

    init(context: ServerContext) throws(SystemError) {
        poller = try Poller()
        settings = context.settings
        count = context.configuration.effectiveWorkers
        let (queue, count) = (queue, count)
        layer = ConnectionLayer(context: context, strategy: .pool) {
            [.init("workers", String(count)), .init("queue_depth", String(queue.depth))]
        }
        layer.setWaker { [weak self] connection in self?.schedule(connection, []) }
    }

    deinit { poller.close() }

    var isEmpty: Bool { table.withLock { $0.isEmpty } }

    func startWorkers() throws(SystemError) -> [ThreadHandle] {
        // Swift's runtime instantiates some witness tables on first use,
        // behind a once. The dispatcher and a worker reaching the same one
        // first, both in Array.removeAll(keepingCapacity:), were seen (gdb)
        // to wait in that once for ever: a daemon's first client was never
        // welcomed. So the arrays they share code for are used once here,
        // before any worker exists.
        var deliveries = Deliveries()
        deliveries.removeAll()
        var jobs: [Job] = [.stop]
        jobs.removeAll(keepingCapacity: true)
        var held: [(Connection, Poller.Events)] = []
        held.removeAll(keepingCapacity: true)
        var handles: [ThreadHandle] = []
        for index in 0..<count {
            handles.append(try Threads.spawn(name: "echochat-w\(index)") { [self] in work() })
        }
        return handles
    }

    func stop(_ handles: [ThreadHandle]) {
        for _ in handles { queue.push(.stop) }
        for handle in handles { handle.join() }
        for connection in table.withLock({ Array($0.values) }) { connection.forceClose() }
    }

    /// A new connection: registered (one-shot) before anything can wake it.
    func add(_ connection: Connection) {
        table.withLock { $0[connection.token] = connection }
        connection.shared.withLock { $0.inService = true }
        do {
            try poller.register(connection.socket.descriptor, for: [.oneShot], data: connection.token)
        } catch {
            layer.logger.warn("cannot watch \(connection.socket): \(error)", limitedAs: "watch-connection")
        }
        queue.push(.serve(connection, []))  // its first look arms it
    }

    func dispatch(_ token: UInt64, _ ready: Poller.Events) {
        guard let connection = table.withLock({ $0[token] }) else { return }
        if !ready.isDisjoint(with: [.error, .hangup]) { connection.peerGone() }
        schedule(connection, ready)
    }

    /// Queues `connection` for a worker unless one already holds it, in which
    /// case that worker sees `ready` before letting go.
    func schedule(_ connection: Connection, _ ready: Poller.Events) {
        if acquire(connection, ready) { queue.push(.serve(connection, ready)) }
    }

    /// Takes `connection` into service; false if it is closed or a worker
    /// already holds it (which will then see `ready` before letting go).
    private func acquire(_ connection: Connection, _ ready: Poller.Events) -> Bool {
        connection.shared.withLock { state in
            if state.closed { return false }
            if state.inService {
                state.pendingEvents.formUnion(ready)
                return false
            }
            state.inService = true
            return true
        }
    }

    func wake(_ deliveries: inout Deliveries) {
        for connection in deliveries.woken { schedule(connection, []) }
        deliveries.removeAll()
    }

    /// Queues every connection whose deadline has passed.
    func sweep(now: Int64) {
        for connection in table.withLock({ Array($0.values) }) {
            let due = connection.shared.withLock { state in state.deadline.map { now >= $0 } ?? false }
            if due { schedule(connection, []) }
        }
    }

    func shutDown(deadline: Int64) {
        shutdownDeadline.store(deadline, ordering: .releasing)
        var deliveries = Deliveries()
        layer.beginShutdown(deliveries: &deliveries)
        wake(&deliveries)
        for connection in table.withLock({ Array($0.values) }) { schedule(connection, []) }
    }

    private func work() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.bufferSize, alignment: 16)
        defer { buffer.deallocate() }
        var live = LiveSettings(settings)
        var deliveries = Deliveries()
        // Connections this worker holds: from the queue, or recipients it
        // adopted to flush at once while the chat backlog is over budget.
        var held: [(Connection, Poller.Events)] = []
        while true {
            if held.isEmpty {
                guard case .serve(let connection, let ready) = queue.pop() else { return }
                held.append((connection, ready))
            }
            var (connection, ready) = held.removeLast()
            live.refresh()
            while true {
                let stop = shutdownDeadline.load(ordering: .acquiring)
                let settings = live.connection(shutdownDeadline: stop > 0 ? stop : nil)
                connection.serve(
                    ready, now: Clock.monotonicNanoseconds(), settings: settings, buffer: buffer, deliveries: &deliveries)
                let adopt = layer.hub?.isBacklogged == true
                for recipient in deliveries.woken where acquire(recipient, []) {
                    if adopt { held.append((recipient, [])) } else { queue.push(.serve(recipient, [])) }
                }
                deliveries.removeAll()
                if connection.isClosed {
                    table.withLock { $0[connection.token] = nil }
                    break
                }
                if connection.wantsTurn {
                    queue.push(.serve(connection, takePending(connection, release: false) ?? []))
                    break
                }
                if let more = takePending(connection, release: false) {
                    ready = more
                    continue
                }
                // Re-armed outside the lock; readiness that fires before we let
                // go lands in pendingEvents and is taken below.
                try? poller.modify(connection.socket.descriptor, for: connection.interest.union(.oneShot), data: connection.token)
                guard let more = takePending(connection, release: true) else { break }
                ready = more
            }
        }
    }

    /// What arrived for a connection this worker holds; nil if nothing did,
    /// in which case `release` lets go of it.
    private func takePending(_ connection: Connection, release: Bool) -> Poller.Events? {
        connection.shared.withLock { state in
            if !state.pendingEvents.isEmpty || state.mailWaiting {
                defer { state.pendingEvents = [] }
                return state.pendingEvents
            }
            if release { state.inService = false }
            return nil
        }
    }
}
