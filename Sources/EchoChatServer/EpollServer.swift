import EchoChatCore
import EchoChatPOSIX

/// The epoll strategy: one thread serves every connection.
///
/// - Threads: exactly one, the caller of `run()`. The signal watcher reaches
///   it only through `control` (atomic flags and an eventfd).
/// - Ownership: the loop owns the listener, the epoll instance and every
///   connection (a table indexed by descriptor); it is the only caller of
///   `Connection.serve`, so a line for another client is queued by the chat
///   hub on this same thread and that client is served once, when the batch
///   of events ends (or at once when a lot is waiting for it).
/// - Blocking: only in epoll_wait(2); sockets are non-blocking, reads go into
///   one 64 KiB buffer. Interest follows the connection: EPOLLOUT only while
///   output waits, EPOLLIN only while the connection reads.
/// - Capacity: descriptors (`max-clients`, then RLIMIT_NOFILE; see `Acceptor`).
/// - Fairness: a connection that still has lines to handle after its turn
///   (`wantsTurn`) goes to the back of `turns`, served after the next
///   batch of events (polled without waiting), so one flooder never holds the loop.
/// - Timers: a sweep every 100 ms while any connection is open.
/// - Shutdown: close the listener, let every connection deliver and close
///   (`Connection`), stop when none is left or `shutdown-timeout` has passed.
public final class EpollServer: ServerStrategy {
    public let control: ControlRequests
    private let layer: ConnectionLayer
    private var live: LiveSettings
    private var settings: SharedConnectionSettings
    private let poller: Poller
    private var acceptor: Acceptor
    /// Claimed by `run()`: everything here belongs to that thread.
    private var loopThread = OwnerThread()

    private var table: [Slot?] = []
    private var openCount = 0
    private var deliveries = Deliveries()
    /// Connections with lines still to handle, in the order they are owed a turn.
    private var turns: [Connection] = []
    private var turnsNow: [Connection] = []
    /// Room for every connection's event in one wait (as Redis sizes its
    /// event array by maxclients): a storm of hang-ups is seen whole, so each
    /// is marked gone before lines are queued for it.
    private var events: PollEvents
    /// A second event array, to look for hang-ups in the middle of a batch.
    private var harvest: PollEvents
    private let buffer: UnsafeMutableRawBufferPointer
    private var tokens = PollTokens()
    private var now: Int64 = 0
    private var nextSweep: Int64 = 0
    private var shutdownDeadline: Int64?
    private var listening = true

    private struct Slot {
        let connection: Connection
        var interest: Poller.Events
    }

    public init(context: ServerContext, listener: Socket) throws(SystemError) {
        layer = ConnectionLayer(context: context, strategy: .epoll)
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

    public func run() throws(SystemError) {
        loopThread = OwnerThread()
        while true {
            var timeout = openCount > 0 || acceptor.pausedUntil != nil ? Int32(max(1, (nextSweep - now) / 1_000_000 + 1)) : -1
            if !turns.isEmpty { timeout = 0 }
            let count = try poller.wait(into: &events, timeoutMilliseconds: timeout)
            now = Clock.monotonicNanoseconds()
            live.refresh()
            settings = live.connection(shutdownDeadline: shutdownDeadline)
            markGonePeers(in: events, count)  // before anyone queues lines for them
            for index in 0..<count {
                switch events.data(at: index) {
                case PollTokens.listener: acceptConnections()
                case PollTokens.control: handleControl()
                case let token: ready(token, events.events(at: index))
                }
            }
            flushDeliveries()  // the batch is over: each connection that got lines, once
            takeTurns()
            if now >= nextSweep { sweep() }
            if let deadline = shutdownDeadline, openCount == 0 || now >= deadline { break }
        }
        for slot in table { slot?.connection.forceClose() }
        if listening { acceptor.listener.close() }
    }

    /// The connection an event's token names, unless it was closed since
    /// (earlier in this batch, its descriptor number perhaps reused).
    private func connection(_ token: UInt64) -> Connection? {
        let descriptor = PollTokens.descriptor(of: token)
        guard descriptor < table.count, let slot = table[descriptor], slot.connection.token == token else { return nil }
        return slot.connection
    }

    private func ready(_ token: UInt64, _ ready: Poller.Events) {
        guard let connection = connection(token) else { return }
        serve(connection, ready)
        if layer.hub?.isBacklogged == true { flushDeliveries() }  // a storm: do not wait for the batch end
    }

    private func flushDeliveries() {
        var served = 0
        while let connection = deliveries.woken.popLast() {
            // A storm of leaves (every member told of every leave) while more
            // peers hang up: learn which are gone before queueing lines for
            // them. Level-triggered, so the events come back to be handled.
            if served % 64 == 0 && layer.hub?.isBacklogged == true,
                let count = try? poller.wait(into: &harvest, timeoutMilliseconds: 0)
            {
                markGonePeers(in: harvest, count)
            }
            serve(connection, [])
            served += 1
        }
    }

    /// One more turn for each connection that had lines left, in order; one
    /// that still has some after it waits for the next round.
    private func takeTurns() {
        guard !turns.isEmpty else { return }
        swap(&turns, &turnsNow)
        for connection in turnsNow {
            connection.turnQueued = false
            serve(connection, [])
        }
        turnsNow.removeAll(keepingCapacity: true)
        flushDeliveries()
    }

    private func markGonePeers(in events: borrowing PollEvents, _ count: Int) {
        for index in 0..<count where !events.events(at: index).isDisjoint(with: [.error, .hangup]) {
            connection(events.data(at: index))?.peerGone()
        }
    }

    /// Serves one connection, then whoever now has a lot waiting, and keeps
    /// the poller's interest in step with what each wants.
    private func serve(_ connection: Connection, _ ready: Poller.Events) {
        loopThread.assertCurrent()
        connection.serve(ready, now: now, settings: settings, buffer: buffer, deliveries: &deliveries)
        settle(connection)
        while let urgent = deliveries.urgent.popLast() {
            urgent.serve([], now: now, settings: settings, buffer: buffer, deliveries: &deliveries)
            settle(urgent)
        }
    }

    private func settle(_ connection: Connection) {
        let descriptor = Int(connection.socket.descriptor)
        guard descriptor < table.count, var slot = table[descriptor], slot.connection === connection else { return }
        if connection.isClosed {
            table[descriptor] = nil  // close(2) already took it out of epoll
            openCount -= 1
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

    private func acceptConnections() {
        guard listening else { return }
        acceptor.accept(now: now, admit: { admit($0) })
        if layer.hub?.isBacklogged == true { flushDeliveries() }
    }

    private func admit(_ socket: Socket) {
        let token = tokens.next(for: socket)
        let connection = layer.accept(socket, token: token, now: now, settings: settings, deliveries: &deliveries)
        let interest = connection.interest
        do {
            try poller.register(socket.descriptor, for: interest, data: token)
        } catch {
            layer.logger.warn("cannot watch new connection: \(error)", limitedAs: "watch-connection")
            return connection.forceClose()
        }
        let index = Int(socket.descriptor)
        if index >= table.count { table.append(contentsOf: repeatElement(nil, count: index - table.count + 65)) }
        table[index] = Slot(connection: connection, interest: interest)
        openCount += 1
        if !connection.admitted { deliveries.woken.append(connection) }  // its one line
    }

    private func handleControl() {
        control.wakeup.drain()
        for connection in control.takeWoken() {
            let descriptor = Int(connection.socket.descriptor)
            guard descriptor < table.count, table[descriptor]?.connection === connection else { continue }
            serve(connection, [])
        }
        if control.takeStatsRequest() { layer.logger.info("stats: \(serverStats().keyValues)") }
        guard control.shutdownRequested, shutdownDeadline == nil else { return }
        shutdownDeadline = now + live.shutdownTimeout
        settings = live.connection(shutdownDeadline: shutdownDeadline)
        listening = false
        acceptor.listener.close()
        layer.beginShutdown(deliveries: &deliveries)
        for slot in table { if let slot { serve(slot.connection, []) } }
    }

    /// Timers: the accept pause, and every connection whose deadline passed.
    private func sweep() {
        nextSweep = now + Acceptor.sweepInterval
        if listening { _ = acceptor.resumeIfDue(now: now) }
        for slot in table {
            guard let connection = slot?.connection, let deadline = connection.nextDeadline, now >= deadline else { continue }
            serve(connection, [])
        }
        flushDeliveries()
    }
}
