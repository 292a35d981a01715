import EchoChatCore
import EchoChatPOSIX
import Synchronization

/// The thread strategy: one thread per connection.
///
/// - Threads: the caller of `run()` is the acceptor; every accepted connection
///   gets a detached thread with a deliberately small stack (`--thread-stack`).
/// - Ownership: one thread at a time serves a connection (`Connection.serve`,
///   taken with the `inService` flag): its own thread, which alone reads it
///   and closes its descriptor (it may be waiting on it), or a sender
///   flushing lines to it. A chat line for another client is queued by the
///   hub on that client's connection; after its whole read, the sender takes
///   each recipient nobody is serving and writes its lines in one write (no
///   context switch); whoever serves a connection looks for new lines before
///   letting go, so a recipient that is taken needs nothing more. Its thread
///   is woken with SIGUSR2 (`WakeableThread`) only when it must now wait for
///   something else. The acceptor only wakes, once per burst; but lines
///   the cluster link heard from other servers, it writes as a sender does.
/// - Blocking: a client thread blocks only in ppoll(2) on its own socket,
///   with SIGUSR2 unblocked only there, so a wake-up is never lost; the
///   acceptor in poll(2) on the listener, `control` and the cluster link,
///   which it services (`ClusterLink.service`), until shutdown is over.
/// - Capacity: one thread, one stack and one 16 KiB buffer per connection;
///   `--max-clients` should stay below what memory and RLIMIT_NOFILE allow.
/// - Shutdown: the acceptor closes the listener, has the hub queue the chat
///   notice, publishes the deadline and the stop flag, wakes every client
///   thread with SIGUSR2, then waits for the threads to finish, up to
///   `shutdown-timeout`. (A shared stop eventfd in every thread's ppoll
///   cost each wait a second descriptor and a wait queue 1,000 threads
///   deep; each thread looks at the flag before it waits instead.)
public final class ThreadServer: ServerStrategy {
    public let control: ControlRequests
    private let threads: ClientThreads
    private var acceptor: Acceptor

    public init(context: ServerContext, listener: Socket) throws(SystemError) {
        control = try ControlRequests()
        threads = try ClientThreads(context: context)
        acceptor = try Acceptor(listener: listener, layer: threads.layer)
        // Before any client thread exists, so they all inherit the blocked SIGUSR2.
        WakeableThread.prepareProcess()
    }

    public func serverStats() -> ServerStats { threads.layer.serverStats() }

    public func run() throws(SystemError) {
        var live = LiveSettings(threads.layer.context.settings)
        var deliveries = Deliveries()
        let cluster = threads.layer.context.cluster
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ClientThreads.bufferSize, alignment: 16)
        defer { buffer.deallocate() }
        while !control.shutdownRequested {
            let paused = acceptor.resumeIfDue(now: Clock.monotonicNanoseconds())
            var watched = [control.wakeup.descriptor, paused ? -1 : acceptor.listener.descriptor]
            if let cluster { watched.append(cluster.descriptor) }
            let timeout = paused ? Int32(Acceptor.pause / 1_000_000) : -1
            var ready = try Poll.readable(
                watched, timeoutMilliseconds: cluster?.waitTimeout(timeout, now: Clock.monotonicNanoseconds()) ?? timeout)
            if ready.isEmpty { ready = Array(repeating: false, count: watched.count) }  // the timeout
            live.refresh()  // a SIGHUP may have changed max-clients while we waited
            if ready[0] {
                control.wakeup.drain()
                if control.takeStatsRequest() { threads.layer.logger.info("stats: \(serverStats().keyValues)") }
            }
            if let cluster {
                let now = Clock.monotonicNanoseconds()
                // What the other servers said is written here, as a sender would.
                if cluster.service(ready: ready.count > 2 && ready[2], now: now, into: &deliveries) {
                    threads.deliver(&deliveries, now: now, settings: live.connection, buffer: buffer)
                }
            }
            guard ready[1] else { continue }
            let now = Clock.monotonicNanoseconds()
            // The acceptor serves no client, so it can take a whole burst
            // (the listen backlog) and wake each room member once for it.
            acceptor.accept(
                now: now, limit: 4096,
                admit: { socket in
                    let connection = threads.layer.accept(
                        socket, token: 0, now: now, settings: live.connection, deliveries: &deliveries)
                    threads.start(connection)
                    if threads.layer.hub?.isBacklogged == true { threads.wake(&deliveries) }
                })
            threads.wake(&deliveries)  // once per batch, not per join
        }
        acceptor.listener.close()
        threads.shutDown(within: live.shutdownTimeout)
    }
}

/// The client threads and what they share; Sendable, so each thread holds it.
private final class ClientThreads: Sendable {
    let layer: ConnectionLayer
    private let settings: RuntimeSettings
    private let threadStack: Int
    /// Set once at shutdown, before every client thread is woken.
    private let stopping = Atomic<Bool>(false)
    /// The connections whose threads run, to wake them at shutdown.
    private let clients = Lock<[ObjectIdentifier: Connection]>([:])
    /// Rung when a client thread ends, so shutdown can wait without polling.
    private let exits: Wakeup
    private let running = SharedCount()
    private let shutdownDeadline = Atomic<Int64>(0)

    static let bufferSize = 16 * 1024

    init(context: ServerContext) throws(SystemError) {
        exits = try Wakeup()
        settings = context.settings
        threadStack = context.configuration.threadStack
        let running = running
        layer = ConnectionLayer(context: context, strategy: .thread) {
            [.init("threads", String(running.value.load(ordering: .relaxed)))]
        }
        layer.setWaker { [weak self] connection in self?.wakeOwner(connection) }
    }

    deinit {
        exits.close()
    }

    func start(_ connection: Connection) {
        running.value.wrappingAdd(1, ordering: .relaxed)
        clients.withLock { $0[ObjectIdentifier(connection)] = connection }
        do {
            try Threads.spawn(name: "echochat-client", stackSize: threadStack, detached: true) { [self] in
                serve(connection)
            }
        } catch {
            layer.logger.warn("cannot start a thread for \(connection.socket): \(error)", limitedAs: "start-thread")
            // Nobody serves it yet, but a sender may be flushing join
            // notices to it: close it once that sender lets go.
            while !connection.shared.withLock({ $0.take(asOwner: true) }) { Threads.yield() }
            connection.forceClose()
            connection.closeDescriptorLeftOpen()
            clients.withLock { $0[ObjectIdentifier(connection)] = nil }
            running.value.wrappingSubtract(1, ordering: .releasing)
            exits.ring()  // shutdown may be waiting for it
        }
    }

    /// Wakes the thread of every connection that got lines (the acceptor's
    /// way for joins: it writes to no client it admits).
    func wake(_ deliveries: inout Deliveries) {
        for connection in deliveries.woken { wakeOwner(connection) }
        deliveries.removeAll()
    }

    /// A sender's way (a client thread's, and the acceptor's for what the
    /// cluster link heard): a recipient nobody is serving is flushed right
    /// here, one write for all its lines and no context switch. One that is
    /// being served is left alone: whoever serves it looks for new lines
    /// before letting go. Its thread is woken only when this changed what it
    /// waits for (output left for the kernel, a close) or it is waiting.
    fileprivate func deliver(
        _ deliveries: inout Deliveries, except current: Connection? = nil, now: Int64, settings: SharedConnectionSettings,
        buffer: UnsafeMutableRawBufferPointer
    ) {
        var index = 0
        var more = Deliveries()
        while index < deliveries.woken.count {
            let recipient = deliveries.woken[index]
            index += 1
            guard recipient !== current, recipient.shared.withLock({ $0.take() }) else { continue }
            var rounds = 0
            // What its thread waits for was set before the first round: a
            // change in any round must wake it (a later round that changes
            // nothing more must not hide it).
            let before = (recipient.interest, recipient.nextDeadline)
            while true {
                recipient.serve([], now: now, settings: settings, buffer: buffer, deliveries: &more, leaveDescriptorOpen: true)
                let closed = recipient.isClosed
                // (Lines it read earlier may be handled again now: a turn its thread must take.)
                let changed = closed || before != (recipient.interest, recipient.nextDeadline) || recipient.wantsTurn
                rounds += 1
                // Lines that came meanwhile are flushed now (a few rounds at
                // most), else its thread is woken for them.
                let (again, wake) = recipient.shared.withLock { state -> (Bool, Bool) in
                    if state.mailWaiting && !closed && rounds < 4 { return (true, false) }
                    state.inService = false
                    return (false, changed || state.ownerWaiting || state.mailWaiting)
                }
                if again { continue }
                if wake { wakeOwner(recipient) }
                break
            }
            deliveries.woken.append(contentsOf: more.woken)  // a failed recipient's left notices
            more.removeAll()
        }
        deliveries.removeAll()
    }

    /// Signals a connection's thread, under the lock: the thread clears
    /// `owner` under it before it exits, so it is alive while we signal it.
    func wakeOwner(_ connection: Connection) {
        connection.shared.withLock { state in state.owner?.wake() }
    }

    /// The life of one connection, on its own thread.
    private func serve(_ connection: Connection) {
        connection.shared.withLock { $0.owner = .current }
        var live = LiveSettings(settings)
        var deliveries = Deliveries()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.bufferSize, alignment: 16)
        var ready: Poller.Events = []
        var stopped = false
        var holding = false
        while true {
            live.refresh()
            // Shutdown: the flag is set before this thread is signalled, and
            // a signal that comes while it is not waiting is held for its next wait.
            if !stopped && stopping.load(ordering: .acquiring) { stopped = true }
            let now = Clock.monotonicNanoseconds()
            var wait = (readable: false, writable: false, timeout: Int32(-1))
            // A sender may be flushing this connection: then wait for its wake-up.
            if holding || connection.shared.withLock({ $0.take(asOwner: true) }) {
                let settings = live.connection(shutdownDeadline: stopped ? shutdownDeadline.load(ordering: .acquiring) : nil)
                connection.serve(ready, now: now, settings: settings, buffer: buffer, deliveries: &deliveries)
                ready = []
                let interest = connection.interest
                wait = (interest.contains(.readable), interest.contains(.writable), -1)
                if let deadline = connection.nextDeadline { wait.timeout = Int32(clamping: max(0, (deadline - now) / 1_000_000 + 1)) }
                // Lines left after its turn: let the other threads run, then go on.
                if connection.wantsTurn {
                    wait.timeout = 0
                    Threads.yield()
                }
                let closed = connection.isClosed
                // Lines that came while we served (their senders left them to
                // us): keep the connection and serve again before waiting.
                holding = !closed && connection.shared.withLock { $0.arrivals(release: true) != nil }
                deliver(&deliveries, except: connection, now: now, settings: settings, buffer: buffer)
                if closed { break }
                if holding { continue }
            }
            guard
                let result = try? connection.socket.wait(
                    readable: wait.readable, writable: wait.writable, timeoutMilliseconds: wait.timeout)
            else {
                connection.forceClose()
                break
            }
            if result.readable { ready.insert(.readable) }
            if result.writable { ready.insert(.writable) }
            if result.failed { ready.insert(.error) }
        }
        connection.closeDescriptorLeftOpen()
        connection.shared.withLock { $0.owner = nil }
        clients.withLock { $0[ObjectIdentifier(connection)] = nil }
        buffer.deallocate()
        running.value.wrappingSubtract(1, ordering: .releasing)
        exits.ring()
    }

    func shutDown(within timeout: Int64) {
        let deadline = Clock.monotonicNanoseconds() + timeout
        shutdownDeadline.store(deadline, ordering: .releasing)
        var deliveries = Deliveries()
        layer.beginShutdown(deliveries: &deliveries)
        wake(&deliveries)
        stopping.store(true, ordering: .releasing)
        for connection in clients.withLock({ Array($0.values) }) { wakeOwner(connection) }
        // The cluster link is still driven from here: its goodbye goes now.
        let cluster = layer.context.cluster
        while running.value.load(ordering: .acquiring) > 0 {
            let now = Clock.monotonicNanoseconds()
            let left = (deadline - now) / 1_000_000
            if left <= 0 { break }
            let timeout = Int32(min(left + 1, 1000))
            let ready = try? Poll.readable(
                [exits.descriptor] + (cluster.map { [$0.descriptor] } ?? []),
                timeoutMilliseconds: cluster?.waitTimeout(timeout, now: now) ?? timeout)
            exits.drain()
            let linkReady = ready.map { $0.count > 1 && $0[1] } ?? false
            if cluster?.service(ready: linkReady, now: Clock.monotonicNanoseconds(), into: &deliveries) == true {
                wake(&deliveries)
            }
        }
        let remaining = running.value.load(ordering: .acquiring)
        if remaining > 0 { layer.logger.warn("\(remaining) client threads still busy at the shutdown deadline") }
    }
}
