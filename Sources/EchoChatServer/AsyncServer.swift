import EchoChatCore
import EchoChatPOSIX

/// The async strategy: one Swift task per connection, all on one thread
/// (asyncio's model, or gevent's).
///
/// - Threads: exactly one, the caller of `run()`: the reactor, an
///   `EventLoop` (the epoll strategy's loop, which says who owns what, what
///   blocks, timers and shutdown), whose driver is `ConnectionTasks`. It
///   waits in epoll_wait(2) and, between waits, runs the tasks' jobs itself
///   (`ReactorExecutor`, every task's executor preference). So tasks switch
///   only where they await, never in parallel.
/// - Tasks: the accept task (the root, started as the loop starts) owns a
///   task group and adds one child task per accepted connection. A
///   connection's task is a plain loop:
///   `for await ready in readiness(of: connection) { serve }`.
///   Each wait that would block suspends the task on a continuation kept in
///   the connection's slot of the loop's table, which the loop resumes: on
///   readiness, when another connection queued chat lines for it, for its
///   turn, or when its deadline has passed (the loop's 100 ms sweep).
/// - Ownership: the loop owns the listener, the epoll instance and every
///   connection; only a connection's own task calls `Connection.serve`.
/// - Blocking: only in epoll_wait(2), and not at all while jobs wait to run.
/// - Capacity: descriptors (`max-clients`, then RLIMIT_NOFILE; see `Acceptor`),
///   and memory: a task and its frames per connection besides the connection.
/// - Shutdown: the signal watcher's request cancels the accept task; it
///   closes the listener and has the chat notice queued, and the
///   cancellation reaches every connection's task (through the group), which
///   serves once more under the shutdown deadline and then delivers and
///   closes as in every strategy; the group ends when the last connection
///   has closed, by `shutdown-timeout` at the latest (the loop then resumes
///   every task still waiting, which closes its connection), and `run()`
///   returns.
///
/// Why tasks wait for readiness and not for bytes: `Connection.serve` is the
/// connection's whole life, shared by every strategy: it decides how much to
/// read (backpressure, rate limits), when to write and when to close. So the
/// one thing a connection's task awaits is "something happened" (readiness,
/// mail, a deadline); a `bytes` sequence would put a second read policy in
/// this file.
public final class AsyncServer: ServerStrategy {
    public let control: ControlRequests
    private let layer: ConnectionLayer
    private let loop: EventLoop<ConnectionTasks>

    public init(context: ServerContext, listener: Socket) throws(SystemError) {
        control = try ControlRequests()
        layer = ConnectionLayer(context: context, strategy: .async, inboxes: [control])
        loop = try EventLoop(layer: layer, inbox: control, listener: listener, driver: ConnectionTasks())
        let control = control
        layer.setWaker { control.wake($0) }
    }

    public func serverStats() -> ServerStats { layer.serverStats() }

    public func run() throws(SystemError) { try loop.run() }
}

/// The loop's driver for the async strategy: a connection with something to
/// do has its task resumed, and the loop runs the tasks between its waits.
/// The tasks' own code is below, in the loop's extension for this driver.
///
/// @unchecked Sendable: the tasks capture the loop, but every one of them
/// runs on the loop's thread, as does every call from the loop; so this
/// state belongs to that thread (asserted in debug builds). Other threads
/// touch only `interrupts`, which locks, and the executor's remote queue.
/// Being the thread's alone, the `var`s skip Swift's dynamic exclusivity
/// checks (as `EventLoop`'s do).
final class ConnectionTasks: LoopDriver, @unchecked Sendable {
    /// A connection's task's wait, in its slot.
    struct Wait {
        /// The task, while suspended.
        var waiter: UnsafeContinuation<Void, Never>?
        /// Readiness reported since the task last took it.
        var ready: Poller.Events = []
        /// Mail, a turn, a deadline or a cancellation since the task last looked.
        var woken = false
    }

    static var noWait: Wait { Wait() }

    @exclusivity(unchecked) private var executor: ReactorExecutor!
    /// The accept task: cancelled to shut down.
    @exclusivity(unchecked) private var root: Task<Void, Never>?
    @exclusivity(unchecked) fileprivate var finished = false
    /// The accept task, while it waits for the listener.
    @exclusivity(unchecked) fileprivate var listenerWaiter: UnsafeContinuation<Void, Never>?
    /// Cancellations that ran on another thread: the tokens whose waits to end.
    fileprivate let interrupts = Lock<[UInt64]>([])

    func start(in loop: EventLoop<ConnectionTasks>) {
        let executor = ReactorExecutor(wakeup: loop.inbox.wakeup)
        self.executor = executor
        root = Task(executorPreference: executor) { [loop] in
            await loop.acceptTask()
            loop.driver.finished = true
        }
    }

    func ready(_ connection: Connection, _ ready: Poller.Events, in loop: EventLoop<ConnectionTasks>) {
        let index = Int(connection.socket.descriptor)
        loop.table[index]!.wait.ready.formUnion(ready)
        resume(index, in: loop)
    }

    func wake(_ connection: Connection, in loop: EventLoop<ConnectionTasks>) {
        guard loop.isWatched(connection) else { return }
        let index = Int(connection.socket.descriptor)
        loop.table[index]!.wait.woken = true
        resume(index, in: loop)
    }

    func urge(_ connection: Connection, in loop: EventLoop<ConnectionTasks>) { wake(connection, in: loop) }

    func listenerReady(in loop: EventLoop<ConnectionTasks>) { resumeListener() }

    func inboxRang(in loop: EventLoop<ConnectionTasks>) {
        executor.takeRemoteJobs()
        let interrupted = interrupts.withLock { list in
            defer { list.removeAll() }
            return list
        }
        for token in interrupted { loop.interrupted(token) }
    }

    /// Structured concurrency does the rest: the accept task's wait ends,
    /// and so does every connection task's (they are its group's children).
    func beginShutdown(in loop: EventLoop<ConnectionTasks>) { root?.cancel() }

    var hasJobs: Bool { executor.hasJobs }

    /// Runs every task that can run, and the ones their chat lines wake, until all wait.
    func runJobs(in loop: EventLoop<ConnectionTasks>) {
        repeat {
            executor.runJobs()
            loop.flushDeliveries()
        } while executor.hasJobs
    }

    /// Once the group has ended. Past the shutdown deadline, every waiting
    /// task is resumed, to close its connection and end.
    func mayStop(in loop: EventLoop<ConnectionTasks>) -> Bool {
        if loop.pastShutdownDeadline {
            for index in loop.table.indices where loop.table[index]?.wait.waiter != nil { resume(index, in: loop) }
        }
        return finished
    }

    /// Resumes the task waiting on slot `index`, if it waits.
    private func resume(_ index: Int, in loop: EventLoop<ConnectionTasks>) {
        guard let waiter = loop.table[index]!.wait.waiter else { return }
        loop.table[index]!.wait.waiter = nil
        waiter.resume()
    }

    fileprivate func resumeListener() {
        guard let waiter = listenerWaiter else { return }
        listenerWaiter = nil
        waiter.resume()
    }
}

/// The tasks: methods of the loop that runs them, so that what they use of
/// it (the table, the clock, `serve`) is at hand without a reference to
/// keep alive at every step.
/// @unchecked Sendable: the tasks and their cancellation handlers capture
/// the loop; all but the handlers run on its thread, and a handler that
/// runs on another thread only queues its token (`interrupt`).
extension EventLoop: @unchecked Sendable where Driver == ConnectionTasks {
    /// The root task: accepts, one child task per connection, until cancelled.
    fileprivate func acceptTask() async {
        await withDiscardingTaskGroup { group in
            while await listenerReadiness() {
                accept { connection in
                    group.addTask { [self] in await connectionTask(connection) }
                }
            }
            // Shutdown: the children were cancelled with us; the group waits for them.
            stopAccepting()
            announceShutdown()
            flushDeliveries()
        }
    }

    /// Waits until the listener is readable (or its pause ended); false once cancelled.
    private func listenerReadiness() async -> Bool {
        loopThread.assertCurrent()
        guard !Task.isCancelled else { return false }
        await withTaskCancellationHandler {
            await withUnsafeContinuation { driver.listenerWaiter = $0 }
        } onCancel: { [self] in
            interrupt(PollTokens.listener)
        }
        return !Task.isCancelled
    }

    /// A task's cancellation handler: ends its wait. Any thread.
    private func interrupt(_ token: UInt64) {
        if loopThread.isCurrent {
            interrupted(token)
        } else {
            driver.interrupts.withLock { $0.append(token) }
            inbox.wakeup.ring()
        }
    }

    fileprivate func interrupted(_ token: UInt64) {
        if token == PollTokens.listener {
            driver.resumeListener()
        } else if let connection = connection(token) {
            driver.wake(connection, in: self)
        }
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
    private func readiness(of connection: Connection) -> Readiness { Readiness(loop: self, connection: connection) }

    // Memory: an idle connection's task holds its suspended async frames,
    // which the runtime allocates in 1 KiB slabs. So everything synchronous
    // (serving, the bookkeeping around a wait) is kept out of them
    // (@inline(never)), leaving the frames a few words each.

    /// Suspends the connection's task until something happened to it
    /// (without suspending if something already has); nil once it has closed.
    fileprivate func nextReadiness(of connection: Connection) async -> Poller.Events? {
        let index = Int(connection.socket.descriptor)
        switch suspension(for: connection) {
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
    private func suspension(for connection: Connection) -> Suspension {
        loopThread.assertCurrent()
        guard !connection.isClosed else { return .none }
        // Lines read earlier wait (`settle` queued it for a turn when it was
        // served): the others get their turn first (fairness).
        if connection.wantsTurn { return .turn }
        let index = Int(connection.socket.descriptor)
        guard let slot = table[index], slot.wait.ready.isEmpty, !slot.wait.woken else { return .none }
        // Once shutdown has begun and this task has seen it (cancelled), only
        // readiness, mail and the deadlines end its waits.
        return .readiness(cancellable: !Task.isCancelled)
    }

    @inline(never)
    private func park(_ index: Int, _ continuation: UnsafeContinuation<Void, Never>) {
        table[index]!.wait.waiter = continuation
    }

    /// What happened while the task waited (nil: the connection has closed).
    @inline(never)
    private func takeReadiness(of connection: Connection) -> Poller.Events? {
        let index = Int(connection.socket.descriptor)
        guard !connection.isClosed, let slot = table[index], slot.connection === connection else { return nil }
        table[index]!.wait.ready = []
        table[index]!.wait.woken = false
        return slot.wait.ready
    }

    /// One `serve`; past the shutdown deadline, the close; in a storm,
    /// whoever its lines woke, at once.
    @inline(never)
    private func serveInTask(_ connection: Connection, _ ready: Poller.Events) {
        serve(connection, ready)
        if pastShutdownDeadline && !connection.isClosed {
            connection.forceClose()
            settle(connection)
        }
        if layer.hub?.isBacklogged == true { flushDeliveries() }
    }
}

private enum Suspension {
    /// Something already happened (or the connection closed): no wait.
    case none
    /// For the next round, after the others.
    case turn
    /// For readiness, mail or the deadline; `cancellable` until shutdown began.
    case readiness(cancellable: Bool)
}

/// The sequence a connection's task loops over.
private struct Readiness: AsyncSequence, AsyncIteratorProtocol {
    typealias Element = Poller.Events
    typealias Failure = Never
    let loop: EventLoop<ConnectionTasks>
    let connection: Connection
    var started = false

    func makeAsyncIterator() -> Readiness { self }

    mutating func next() async -> Poller.Events? {
        guard started else {
            started = true
            return []
        }
        return await loop.nextReadiness(of: connection)
    }
}
