import EchoChatCore
import EchoChatPOSIX

/// One epoll loop: the reactor of the `epoll` strategy, of each of the
/// `reactors` strategy's loops and of the `async` strategy (the same code,
/// so they cannot drift). What differs is who serves a connection that has
/// something to do, the loop's `Driver`: the loop itself, at once
/// (`ServeDirectly`: epoll and reactors), or the connection's own task,
/// which the loop resumes (`ConnectionTasks`: async, in AsyncServer.swift).
///
/// - Threads: exactly one, the caller of `run()`. Other threads reach it only
///   through `inbox` (atomic flags, locked lists and an eventfd).
/// - Ownership: the loop owns its epoll instance, its listener if it has one,
///   and every connection it was given (a table indexed by descriptor, each
///   slot with what the driver keeps for it); it (or its connections' tasks,
///   on its thread) is the only caller of `Connection.serve` for them. A
///   line for another client is queued by the chat hub on the recipient,
///   and the recipient is served once, when the batch of events ends (or at
///   once when a lot is waiting for it): by this loop if it owns it, else by
///   its owner, to which this loop hands all of the batch's recipients in
///   one list, with one lock and one eventfd write
///   (`ControlRequests.wake(_:)`, memcached's notify pipe). No lock is held
///   while a socket is written.
/// - Accepting: a loop with a listener accepts and admits (so clients are
///   admitted in the order they connected); with other loops, it gives each
///   new connection to the next loop round-robin, through that loop's inbox,
///   before anything has served it.
/// - Blocking: only in epoll_wait(2), and not at all while the driver has
///   jobs to run; sockets are non-blocking, reads go into one 64 KiB buffer.
///   Interest follows the connection: EPOLLOUT only while output waits,
///   EPOLLIN only while the connection reads.
/// - Cluster: the primary loop hosts the link to Redis (`ClusterLink`): it
///   watches the link's descriptor with its connections, wakes by the
///   link's deadlines too, and services the link once a batch's events
///   are handled. At shutdown it stops only once the link has said
///   goodbye (a second at most), even with no connection of its own left
///   (reactors: the others may still be draining theirs).
/// - Fairness: a connection that still has lines to handle after its turn
///   (`wantsTurn`) goes to the back of `turns`, served after the next
///   batch of events (polled without waiting), so one flooder never holds the loop.
/// - Timers: a sweep every 100 ms while any connection is open has each
///   connection whose deadline passed served. Not a heap: the idle and line
///   deadlines move with every line, so a heap would pay a reorder per
///   message, where the sweep costs one pass over the table ten times a
///   second, whatever the traffic.
/// - Shutdown: the listener closes, every connection delivers and closes
///   (`Connection`), the loop stops when none is left or `shutdown-timeout`
///   has passed (with tasks, once they have all ended). The primary loop
///   (the one whose inbox the signal watcher has) queues the chat notice
///   once for the server and passes the request on to the others.
final class EventLoop<Driver: LoopDriver> {
    // Every `var` below belongs to the loop's thread alone (`loopThread`
    // asserts it in debug builds), so Swift's dynamic exclusivity checks on
    // them are skipped: they were about a fifth of the loop's instructions
    // per echoed message (callgrind). The driver's code (ConnectionTasks)
    // runs on that thread too, and uses the ones that are not private.
    /// Requests and connections from other threads (`home.inbox`).
    let inbox: ControlRequests
    let layer: ConnectionLayer
    /// Who serves the connections: generic, so each loop is compiled for its
    /// driver and epoll's hot path makes no dynamic call.
    let driver: Driver
    /// What its connections know of this loop: its inbox and its wire counters.
    private let home: ConnectionOwner
    @exclusivity(unchecked) private var live: LiveSettings
    @exclusivity(unchecked) private var settings: SharedConnectionSettings
    private let poller: Poller
    @exclusivity(unchecked) private var acceptor: Acceptor?
    /// Queues the chat shutdown notice and logs SIGUSR1's stats line.
    private let primary: Bool
    /// The primary loop's: the cluster link it drives.
    private let cluster: ClusterLink?
    @exclusivity(unchecked) private var clusterReady = false
    /// Reactors: every loop's inbox, by loop number; empty when this is the only loop.
    private let peers: [ControlRequests]
    /// More than one loop: recipients may belong to another.
    private let routes: Bool
    /// Reactors: this batch's recipients owned by other loops, by loop number.
    @exclusivity(unchecked) private var outbox: [[Connection]]
    /// Acceptor hand-off: the loop the next accepted connection goes to, and
    /// the connections of this accept batch, by loop number.
    @exclusivity(unchecked) private var nextLoop = 0
    @exclusivity(unchecked) private var handed: [[Connection]]
    /// Claimed by `run()`: everything here belongs to that thread.
    @exclusivity(unchecked) private(set) var loopThread = OwnerThread()

    /// The connections by descriptor.
    @exclusivity(unchecked) var table: [Slot?] = []
    @exclusivity(unchecked) private var openCount = 0
    @exclusivity(unchecked) private var deliveries = Deliveries()
    /// Connections with lines still to handle, in the order they are owed a turn.
    @exclusivity(unchecked) private var turns: [Connection] = []
    @exclusivity(unchecked) private var turnsNow: [Connection] = []
    /// Connections other threads asked this loop to serve (swapped with the inbox's list).
    @exclusivity(unchecked) private var mail: [Connection] = []
    /// Room for every connection's event in one wait (as Redis sizes its
    /// event array by maxclients): a storm of hang-ups is seen whole, so each
    /// is marked gone before lines are queued for it.
    @exclusivity(unchecked) private var events: PollEvents
    /// A second event array, to look for hang-ups in the middle of a batch.
    @exclusivity(unchecked) private var harvest: PollEvents
    private let buffer: UnsafeMutableRawBufferPointer
    @exclusivity(unchecked) private var tokens = PollTokens()
    @exclusivity(unchecked) private var now: Int64 = 0
    @exclusivity(unchecked) private var nextSweep: Int64 = 0
    @exclusivity(unchecked) private var shutdownDeadline: Int64?
    @exclusivity(unchecked) private var listening: Bool

    struct Slot {
        let connection: Connection
        /// What epoll watches for it.
        var interest: Poller.Events
        /// What the driver keeps for it (nothing, when the loop serves directly).
        var wait: Driver.Wait
    }

    /// `listener`: the socket this loop accepts on, nil if sockets are handed
    /// to it. `peers`: every loop's inbox (this one's at `inbox.loop`), or
    /// empty for a single loop.
    init(
        layer: ConnectionLayer, inbox: ControlRequests, listener: Socket?, peers: [ControlRequests] = [], primary: Bool = true,
        driver: Driver
    ) throws(SystemError) {
        self.layer = layer
        self.inbox = inbox
        self.driver = driver
        home = layer.counters.owners[inbox.loop]
        precondition(home.inbox === inbox, "the layer has no owner for loop \(inbox.loop)")
        self.peers = peers
        self.primary = primary
        routes = peers.count > 1
        outbox = Array(repeating: [], count: peers.count)
        handed = Array(repeating: [], count: peers.count)
        live = LiveSettings(layer.context.settings)
        settings = live.connection
        poller = try Poller()
        if let listener { acceptor = try Acceptor(listener: listener, layer: layer, poller: poller) }
        listening = listener != nil
        // A cache line: the newline scans over what was read start aligned
        // (callgrind: 2% fewer instructions per pipelined echo than at 16).
        buffer = .allocate(byteCount: 64 * 1024, alignment: 64)
        let capacity = min(max(1024, layer.context.configuration.maxClients + 64), 65536)
        events = PollEvents(capacity: capacity)
        harvest = PollEvents(capacity: capacity)
        try poller.register(inbox.wakeup.descriptor, for: .readable, data: PollTokens.control)
        cluster = primary ? layer.context.cluster : nil
        if let cluster { try poller.register(cluster.descriptor, for: .readable, data: PollTokens.cluster) }
    }

    deinit {
        buffer.deallocate()
        poller.close()
    }

    func run() throws(SystemError) {
        loopThread = OwnerThread()
        defer { stop() }
        now = Clock.monotonicNanoseconds()
        driver.start(in: self)
        while true {
            var timeout = openCount > 0 || acceptor?.pausedUntil != nil ? Int32(max(1, (nextSweep - now) / 1_000_000 + 1)) : -1
            if !turns.isEmpty || driver.hasJobs { timeout = 0 }
            if let cluster { timeout = cluster.waitTimeout(timeout, now: now) }
            let count = try poller.wait(into: &events, timeoutMilliseconds: timeout)
            now = Clock.monotonicNanoseconds()
            live.refresh()
            settings = live.connection(shutdownDeadline: shutdownDeadline)
            markGonePeers(in: events, count)  // before anyone queues lines for them
            for index in 0..<count {
                switch events.data(at: index) {
                case PollTokens.listener: if listening { driver.listenerReady(in: self) }
                case PollTokens.control: handleControl()
                case PollTokens.cluster: clusterReady = true
                case let token: ready(token, events.events(at: index))
                }
            }
            if let cluster {
                cluster.service(ready: clusterReady, now: now, into: &deliveries)  // served with the batch's
                clusterReady = false
            }
            flushDeliveries()  // the batch is over: each connection that got lines, once
            takeTurns()
            if now >= nextSweep { sweep() }
            driver.runJobs(in: self)
            if let deadline = shutdownDeadline, openCount == 0 || now >= deadline, driver.mayStop(in: self),
                cluster?.hasLeft ?? true
            {
                break
            }
        }
    }

    /// Closes what is left; the table lets go of the connections (which may
    /// outlive the loop in the file store's jobs).
    private func stop() {
        for slot in table { slot?.connection.forceClose() }
        table = []
        openCount = 0
        inbox.connections.store(0, ordering: .relaxed)
        stopAccepting()
        for connection in inbox.close() { connection.forceClose() }
    }

    /// The connection an event's token names, unless it was closed since
    /// (earlier in this batch, its descriptor number perhaps reused).
    func connection(_ token: UInt64) -> Connection? {
        let descriptor = PollTokens.descriptor(of: token)
        guard descriptor < table.count, let slot = table[descriptor], slot.connection.token == token else { return nil }
        return slot.connection
    }

    /// Whether `connection` is still in the table (not closed since it was
    /// queued somewhere).
    func isWatched(_ connection: Connection) -> Bool {
        let descriptor = Int(connection.socket.descriptor)
        return descriptor < table.count && table[descriptor]?.connection === connection
    }

    private func ready(_ token: UInt64, _ ready: Poller.Events) {
        guard let connection = connection(token) else { return }
        driver.ready(connection, ready, in: self)
        if layer.hub?.isBacklogged == true { flushDeliveries() }  // a storm: do not wait for the batch end
    }

    /// Each connection that got lines, once (to its owner, if another loop's).
    func flushDeliveries() {
        var served = 0
        while let connection = deliveries.woken.popLast() {
            if routes, connection.owner !== home {
                outbox[connection.owner.inbox!.loop].append(connection)
                continue
            }
            // A storm of leaves (every member told of every leave) while more
            // peers hang up: learn which are gone before queueing lines for
            // them. Level-triggered, so the events come back to be handled.
            if served % 64 == 0 && layer.hub?.isBacklogged == true,
                let count = try? poller.wait(into: &harvest, timeoutMilliseconds: 0)
            {
                markGonePeers(in: harvest, count)
            }
            driver.wake(connection, in: self)
            served += 1
        }
        if routes { sendOutbox() }
    }

    /// Each other loop gets this batch's recipients in one list: one lock,
    /// at most one eventfd write. Their lines are already queued on them in
    /// hub order, so the owner's one `serve` sends them in that order.
    private func sendOutbox() {
        for loop in outbox.indices where !outbox[loop].isEmpty {
            peers[loop].wake(outbox[loop])
            outbox[loop].removeAll(keepingCapacity: true)
        }
    }

    /// One more turn for each connection that had lines left, in order; one
    /// that still has some after it waits for the next round.
    private func takeTurns() {
        guard !turns.isEmpty else { return }
        swap(&turns, &turnsNow)
        for connection in turnsNow {
            connection.turnQueued = false
            driver.wake(connection, in: self)
        }
        turnsNow.removeAll(keepingCapacity: true)
        flushDeliveries()
    }

    private func markGonePeers(in events: borrowing PollEvents, _ count: Int) {
        for index in 0..<count where !events.events(at: index).isDisjoint(with: [.error, .hangup]) {
            connection(events.data(at: index))?.peerGone()
        }
    }

    /// Serves one connection, then whoever of this loop's now has a lot
    /// waiting (`Driver.urge`), and keeps the poller's interest in step with
    /// what each wants.
    func serve(_ connection: Connection, _ ready: Poller.Events) {
        serveOne(connection, ready)
        while let urgent = deliveries.urgent.popLast() {
            // Another loop's recipient was woken when its first line was
            // queued (it is in `deliveries.woken` or that loop's inbox).
            if routes, urgent.owner !== home { continue }
            driver.urge(urgent, in: self)
        }
    }

    /// One `Connection.serve`, and the bookkeeping after it.
    fileprivate func serveOne(_ connection: Connection, _ ready: Poller.Events) {
        loopThread.assertCurrent()
        connection.serve(ready, now: now, settings: settings, buffer: buffer, deliveries: &deliveries)
        settle(connection)
    }

    /// The table, the turns and the poller's interest in step with what the
    /// connection now wants (or out of them all, if it closed).
    func settle(_ connection: Connection) {
        let descriptor = Int(connection.socket.descriptor)
        guard descriptor < table.count, var slot = table[descriptor], slot.connection === connection else { return }
        if connection.isClosed {
            table[descriptor] = nil  // close(2) already took it out of epoll
            openCount -= 1
            inbox.connections.store(openCount, ordering: .relaxed)
            return
        }
        if connection.wantsTurn && !connection.turnQueued {
            connection.turnQueued = true
            turns.append(connection)
        }
        let interest = connection.interest
        guard interest != slot.interest else { return }
        do {
            try poller.modify(connection.socket.descriptor, for: interest, data: connection.token)
            slot.interest = interest
            table[descriptor] = slot
        } catch {
            layer.logger.warn("epoll_ctl failed for \(connection.socket): \(error)", limitedAs: "epoll-ctl")
        }
    }

    /// The listener is readable: accept a batch and serve the refused.
    fileprivate func acceptConnections() {
        if routes {
            // The one acceptor: round-robin over the loops, each loop's share
            // of the batch handed over at once.
            acceptor!.accept(now: now) { socket in
                let loop = nextLoop
                nextLoop = loop + 1 == peers.count ? 0 : loop + 1
                guard loop != inbox.loop else {
                    if let connection = admit(socket), !connection.admitted { deliveries.woken.append(connection) }
                    return
                }
                // Admitted here, in accept order; its welcome waits on it
                // (and its wake-up goes to its loop) until its loop serves it.
                handed[loop].append(
                    layer.accept(
                        socket, token: tokens.next(for: socket), owner: layer.counters.owners[loop], now: now, settings: settings,
                        deliveries: &deliveries))
            }
            for loop in handed.indices where !handed[loop].isEmpty {
                peers[loop].hand(handed[loop])
                handed[loop].removeAll(keepingCapacity: true)
            }
        } else {
            accept { connection in
                if !connection.admitted { deliveries.woken.append(connection) }  // its one line
            }
        }
        if layer.hub?.isBacklogged == true { flushDeliveries() }
    }

    /// Accepts a batch (unless accepting is paused or over) and gives each
    /// connection, admitted and watched, to `admitted`.
    func accept(_ admitted: (Connection) -> Void) {
        guard listening else { return }
        acceptor!.accept(now: now) { socket in
            if let connection = admit(socket) { admitted(connection) }
        }
    }

    /// Admits a client of this loop's; nil if it could not be watched (closed).
    private func admit(_ socket: Socket) -> Connection? {
        let connection = layer.accept(
            socket, token: tokens.next(for: socket), owner: home, now: now, settings: settings, deliveries: &deliveries)
        return watch(connection) ? connection : nil
    }

    /// Takes a new connection into the table and the poller.
    private func watch(_ connection: Connection) -> Bool {
        let socket = connection.socket
        let interest = connection.interest
        do {
            try poller.register(socket.descriptor, for: interest, data: connection.token)
        } catch {
            layer.logger.warn("cannot watch new connection: \(error)", limitedAs: "watch-connection")
            connection.forceClose()
            return false
        }
        let index = Int(socket.descriptor)
        if index >= table.count { table.append(contentsOf: repeatElement(nil, count: index - table.count + 65)) }
        table[index] = Slot(connection: connection, interest: interest, wait: Driver.noWait)
        openCount += 1
        inbox.connections.store(openCount, ordering: .relaxed)
        return true
    }

    private func handleControl() {
        inbox.wakeup.drain()
        driver.inboxRang(in: self)
        inbox.takeWoken(swapping: &mail)
        for connection in mail where isWatched(connection) { driver.wake(connection, in: self) }
        mail.removeAll(keepingCapacity: true)
        if primary && inbox.takeStatsRequest() { layer.logger.info("stats: \(layer.serverStats().keyValues)") }
        if inbox.shutdownRequested && shutdownDeadline == nil { beginShutdown() }
        // Connections the acceptor handed over. Each is served at the end of
        // the batch whatever it has (its welcome or refusal): a wake-up
        // that came before it was watched found it missing from the table.
        for connection in inbox.takeAccepted() where watch(connection) {
            deliveries.woken.append(connection)
        }
    }

    private func beginShutdown() {
        shutdownDeadline = now + live.shutdownTimeout
        settings = live.connection(shutdownDeadline: shutdownDeadline)
        driver.beginShutdown(in: self)
    }

    /// The shutdown deadline has passed: what is still open is closed.
    var pastShutdownDeadline: Bool { shutdownDeadline.map { now >= $0 } ?? false }

    /// Shutdown: no more clients.
    func stopAccepting() {
        if listening, let listener = acceptor?.listener { listener.close() }
        listening = false
    }

    /// Shutdown, on the primary loop: the chat notice is queued on every
    /// client of every loop before the others hear of the shutdown, so each
    /// collects it when it drains.
    func announceShutdown() {
        guard primary else { return }
        layer.beginShutdown(deliveries: &deliveries)
        for peer in peers where peer !== inbox { peer.requestShutdown() }
    }

    /// Wakes every connection (shutdown: each learns of it).
    fileprivate func wakeAll() {
        for slot in table { if let slot { driver.wake(slot.connection, in: self) } }
    }

    /// Timers: the accept pause, and every connection whose deadline passed.
    private func sweep() {
        nextSweep = now + Acceptor.sweepInterval
        if listening { _ = acceptor?.resumeIfDue(now: now) }
        for slot in table {
            guard let connection = slot?.connection, let deadline = connection.nextDeadline, now >= deadline else { continue }
            driver.wake(connection, in: self)
        }
        flushDeliveries()
    }
}

/// Who serves a loop's connection that has something to do, and what the
/// loop does besides waiting and serving: `ServeDirectly` (the loop serves
/// at once) or `ConnectionTasks` (the connection's task serves; the loop
/// resumes it and runs the tasks between its waits). Every call comes from
/// the loop's thread.
protocol LoopDriver {
    /// What the driver keeps in each connection's slot.
    associatedtype Wait
    /// A new slot's.
    static var noWait: Wait { get }
    /// Once, as `run()` begins, before the first wait.
    func start(in loop: EventLoop<Self>)
    /// `connection` is ready for `ready`.
    func ready(_ connection: Connection, _ ready: Poller.Events, in loop: EventLoop<Self>)
    /// `connection` has mail, its turn, a deadline passed, or shutdown began.
    func wake(_ connection: Connection, in loop: EventLoop<Self>)
    /// `connection` has a lot waiting, found while the loop was serving another.
    func urge(_ connection: Connection, in loop: EventLoop<Self>)
    /// The listener is readable (or its accept pause ended).
    func listenerReady(in loop: EventLoop<Self>)
    /// The inbox's eventfd rang (the loop then takes its mail and requests).
    func inboxRang(in loop: EventLoop<Self>)
    /// Shutdown was requested: the loop's settings carry its deadline.
    func beginShutdown(in loop: EventLoop<Self>)
    /// Jobs wait to run: the loop polls without waiting.
    var hasJobs: Bool { get }
    /// Runs them, once a batch of events has been handled.
    func runJobs(in loop: EventLoop<Self>)
    /// Shutting down, and every connection closed or the deadline passed:
    /// whether the loop may stop now.
    func mayStop(in loop: EventLoop<Self>) -> Bool
}

/// The epoll and reactors strategies: the loop serves each connection
/// itself, the moment it has something to do.
struct ServeDirectly: LoopDriver {
    static var noWait: Void { () }
    func start(in loop: EventLoop<Self>) {}

    @inline(__always)
    func ready(_ connection: Connection, _ ready: Poller.Events, in loop: EventLoop<Self>) { loop.serve(connection, ready) }

    @inline(__always)
    func wake(_ connection: Connection, in loop: EventLoop<Self>) { loop.serve(connection, []) }

    /// Served here, not through `serve`, so the loop's stack stays one serve deep.
    func urge(_ connection: Connection, in loop: EventLoop<Self>) { loop.serveOne(connection, []) }

    func listenerReady(in loop: EventLoop<Self>) { loop.acceptConnections() }
    func inboxRang(in loop: EventLoop<Self>) {}

    func beginShutdown(in loop: EventLoop<Self>) {
        loop.stopAccepting()
        loop.announceShutdown()
        loop.wakeAll()
    }

    var hasJobs: Bool { false }
    func runJobs(in loop: EventLoop<Self>) {}
    func mayStop(in loop: EventLoop<Self>) -> Bool { true }
}
