import EchoChatCore
import EchoChatPOSIX
import Synchronization

/// The thread strategy: one thread per client.
///
/// - Threads: the caller of `run()` is the acceptor; each admitted client gets
///   a detached thread with a deliberately small stack (`--thread-stack`).
/// - Ownership: a client's thread alone reads its socket, runs its timers and
///   closes it. Other threads may only queue chat lines on it and write them
///   (non-blocking, under the connection's lock; see `SharedConnection`).
///   The acceptor owns the listener and the refused sockets it lingers on.
/// - Blocking: a client thread blocks only in ppoll(2) on its socket and the
///   shared stop eventfd. A sender never blocks on a recipient: if the
///   recipient's kernel buffer is full, the rest stays queued and the
///   recipient's thread is woken with SIGUSR2 to wait for writability itself.
///   Echo backpressure is natural here: the thread stops reading while its
///   queue is at `max-output`.
/// - Capacity: one thread, one stack and one 16 KiB buffer per client, plus
///   descriptors; `--max-clients` should stay below what memory and
///   RLIMIT_NOFILE allow (the README has measured figures).
/// - Shutdown: the acceptor stops accepting, queues the chat notice, rings the
///   stop eventfd (level-triggered, so every thread sees it), and waits for the
///   client threads to deliver, linger and exit, up to `shutdown-timeout`.
public final class ThreadServer: ServerStrategy, @unchecked Sendable {
    // @unchecked Sendable: the stored properties are immutable (or Atomic,
    // Lock, eventfd); `acceptor` and `refused` are touched by the acceptor
    // thread only (inside `run`).

    private let context: ServerContext
    /// The acceptor's copy of the settings SIGHUP may change.
    private var live: LiveSettings
    private let listener: Socket
    private let counters = ServerCounters()
    private let hub: ChatHub?
    /// Rung by `requestShutdown` (any thread); read by the acceptor.
    private let requests: ControlRequests
    /// Rung once at shutdown and never drained: every client thread sees it.
    private let stop: Wakeup
    /// Rung when a client thread ends, so shutdown can wait without polling.
    private let exits: Wakeup
    private let shutdownDeadline = Atomic<Int64>(0)

    private var acceptor: Acceptor
    private var refused: [(socket: Socket, deadline: Int64)] = []

    static let readSize = 16 * 1024
    static let lingerNanoseconds: Int64 = 2_000_000_000
    static let maxLingeringRefusals = 256

    public init(context: ServerContext, listener: Socket) throws(SystemError) {
        self.context = context
        self.live = LiveSettings(context.settings)
        self.listener = listener
        self.acceptor = Acceptor(listener: listener, logger: context.logger)
        self.requests = try ControlRequests()
        self.stop = try Wakeup()
        self.exits = try Wakeup()
        let counters = self.counters
        let hubStats: @Sendable () -> TransportStats = { Self.transportStats(counters, context) }
        self.hub = context.configuration.mode == .chat
            ? ChatHub(limits: context.configuration.limits, counters: counters, stats: hubStats) : nil
        // Before any client thread exists, so they all inherit the blocked SIGUSR2.
        WakeableThread.prepareProcess()
    }

    deinit {
        stop.close()
        exits.close()
    }

    public func requestShutdown() {
        requests.requestShutdown()
    }

    public func requestStatsReport() {
        requests.requestStats()
    }

    public func serverStats() -> ServerStats {
        if let hub { return hub.serverStats() }
        return .echo(clients: counters.echoClients.load(ordering: .relaxed), transport: Self.transportStats(counters, context))
    }

    private static func transportStats(_ counters: ServerCounters, _ context: ServerContext) -> TransportStats {
        counters.transport(
            strategy: .thread, uptimeSeconds: context.uptimeSeconds,
            extra: [.init("threads", String(counters.liveThreads.load(ordering: .relaxed)))])
    }

    // MARK: - Acceptor

    public func run() throws(SystemError) {
        var acceptPausedUntil: Int64?
        while !requests.shutdownRequested {
            let now = Clock.monotonicNanoseconds()
            expireRefusals(now: now)
            if let until = acceptPausedUntil, now >= until { acceptPausedUntil = nil }
            var descriptors = [requests.wakeup.descriptor] + refused.map(\.socket.descriptor)
            if acceptPausedUntil == nil { descriptors.append(listener.descriptor) }
            let timeout: Int32 = acceptPausedUntil != nil || !refused.isEmpty ? 100 : -1
            let ready = try Poll.readable(descriptors, timeoutMilliseconds: timeout)
            live.refresh()  // a SIGHUP may have changed max-clients while we waited
            guard !ready.isEmpty else { continue }
            if ready[0] {
                requests.wakeup.drain()
                if requests.takeStatsRequest() { context.logger.info("stats: \(serverStats().keyValues)") }
            }
            drainRefusals(ready: Array(ready[1..<(1 + refused.count)]))
            if acceptPausedUntil == nil && ready.last == true {
                if !acceptConnections() { acceptPausedUntil = Clock.monotonicNanoseconds() + 100_000_000 }
            }
        }
        shutDown()
    }

    /// Accepts what is waiting; false if accepting must pause.
    private func acceptConnections() -> Bool {
        let counters = self.counters
        return acceptor.acceptPending(admit: { admit($0) }, refused: { counters.add(counters.refused, 1) })
    }

    private func admit(_ socket: Socket) {
        try? socket.setNoDelay()
        let now = Clock.monotonicNanoseconds()
        let connection = SharedConnection(socket: socket, admitted: true, now: now) { connection in
            // Signal under the lock: the owner closes (and then exits) only
            // under this lock, so the thread is alive while we signal it.
            connection.state.withLock { state in
                guard !state.closed, !state.wakePending, let owner = state.owner else { return }
                state.wakePending = true
                owner.wake()
            }
        }
        let admitted: Bool
        if let hub {
            admitted = hub.admit(connection, limits: live.limits)
        } else {
            admitted = live.limits.admits(connectedClients: counters.echoClients.load(ordering: .relaxed))
            if admitted { counters.echoClients.wrappingAdd(1, ordering: .relaxed) }
        }
        guard admitted else { return refuse(socket) }
        counters.add(counters.connectionsTotal, 1)
        counters.liveThreads.wrappingAdd(1, ordering: .relaxed)
        do {
            try Threads.spawn(name: "echochat-client", stackSize: context.configuration.threadStack, detached: true) {
                [self] in
                serve(connection)
            }
            context.logger.debug("accepted \(socket)")
        } catch {
            context.logger.warn("cannot start a thread for \(socket): \(error)")
            counters.liveThreads.wrappingSubtract(1, ordering: .relaxed)
            if let hub { hub.disconnect(connection, reason: .connectionError) } else {
                counters.echoClients.wrappingSubtract(1, ordering: .relaxed)
            }
            connection.closeSocket()
        }
    }

    /// Sends the server-full line, shuts the sending side, and lingers (here,
    /// in the acceptor) until the client closes, so the line is not destroyed
    /// by a reset.
    private func refuse(_ socket: Socket) {
        counters.add(counters.refused, 1)
        Replies.serverFull.withUnsafeBytes { _ = try? socket.write($0) }
        socket.shutdownWrite()
        if refused.count >= Self.maxLingeringRefusals {
            socket.close()
        } else {
            refused.append((socket, Clock.monotonicNanoseconds() + Self.lingerNanoseconds))
        }
    }

    private func drainRefusals(ready: [Bool]) {
        var buffer = [UInt8](repeating: 0, count: 4096)
        var keep: [(socket: Socket, deadline: Int64)] = []
        for (index, entry) in refused.enumerated() {
            guard ready[index] else {
                keep.append(entry)
                continue
            }
            let result = buffer.withUnsafeMutableBytes { try? entry.socket.read(into: $0) }
            if case .bytes? = result { keep.append(entry) } else if case .wouldBlock? = result {
                keep.append(entry)
            } else {
                entry.socket.close()
            }
        }
        refused = keep
    }

    private func expireRefusals(now: Int64) {
        refused.removeAll { entry in
            if now >= entry.deadline {
                entry.socket.close()
                return true
            }
            return false
        }
    }

    private func shutDown() {
        live.refresh()
        let deadline = Clock.monotonicNanoseconds() + live.shutdownTimeout
        shutdownDeadline.store(deadline, ordering: .relaxed)
        listener.close()
        // Chat: queue the notice and ask for every close before waking anyone.
        hub?.shutdown()
        stop.ring()
        while counters.liveThreads.load(ordering: .acquiring) > 0 {
            let left = (deadline - Clock.monotonicNanoseconds()) / 1_000_000
            if left <= 0 { break }
            _ = try? Poll.readable([exits.descriptor], timeoutMilliseconds: Int32(min(left + 1, 1000)))
            exits.drain()
        }
        for entry in refused { entry.socket.close() }
        refused = []
        let remaining = counters.liveThreads.load(ordering: .acquiring)
        if remaining > 0 { context.logger.warn("\(remaining) client threads still busy at the shutdown deadline") }
    }

    // MARK: - Client threads

    /// The life of one client, on its own thread.
    private func serve(_ connection: SharedConnection) {
        connection.state.withLock { $0.owner = .current }
        let session = Session(server: self, connection: connection)
        session.run()
        connection.closeSocket()
        if hub == nil { counters.echoClients.wrappingSubtract(1, ordering: .relaxed) }
        counters.liveThreads.wrappingSubtract(1, ordering: .releasing)
        exits.ring()
    }

    /// One client thread's loop; everything here runs on that thread.
    private final class Session {
        let server: ThreadServer
        let connection: SharedConnection
        let socket: Socket
        var live: LiveSettings
        var limits: Limits { live.limits }
        let buffer: UnsafeMutableRawBufferPointer
        var sawStop = false
        var stopDeadline: Int64?
        /// Set when this thread first sees its session over: the client has
        /// until then to take its last output (`--close-timeout`).
        var closeDeadline: Int64?

        init(server: ThreadServer, connection: SharedConnection) {
            self.server = server
            self.connection = connection
            self.socket = connection.socket
            self.live = LiveSettings(server.context.settings)
            self.buffer = .allocate(byteCount: ThreadServer.readSize, alignment: 16)
        }

        deinit { buffer.deallocate() }

        var chat: ChatHub? { server.hub }

        func run() {
            while true {
                let now = Clock.monotonicNanoseconds()
                live.refresh()
                let view = connection.state.withLock { state in
                    state.wakePending = false
                    return state.snapshot
                }
                if let reason = view.abort {
                    server.context.logger.debug("closing \(socket): \(reason)")
                    chat?.disconnect(connection, reason: reason)
                    return
                }
                var lingerDeadline = view.lingerDeadline
                if view.closeRequested && closeDeadline == nil {
                    closeDeadline = now + live.closeTimeout
                }
                if let closeDeadline, now >= closeDeadline, lingerDeadline == nil, stopDeadline == nil {
                    server.context.logger.debug("closing \(socket): its last output was not taken within the close timeout")
                    return
                }
                if view.closeRequested && view.queued == 0 && lingerDeadline == nil {
                    // Delivered. If the peer may still send, shut our side and
                    // read until it closes: unread input would turn close(2)
                    // into a reset that can destroy the last lines.
                    var deadline = now + ThreadServer.lingerNanoseconds
                    if let stopDeadline { deadline = min(deadline, stopDeadline) }
                    if connection.finishClose(deadline: deadline) { return }
                    lingerDeadline = deadline
                }
                if let lingerDeadline, now >= lingerDeadline { return }
                if let stopDeadline, now >= stopDeadline { return }

                let lingering = lingerDeadline != nil
                let reading = lingering || view.isReading
                var deadline = lingerDeadline ?? Int64.max
                if let stopDeadline { deadline = min(deadline, stopDeadline) }
                if let closeDeadline, !lingering { deadline = min(deadline, closeDeadline) }
                if reading && !lingering {
                    if limits.idleTimeoutNanoseconds > 0 {
                        deadline = min(deadline, view.lastInput + limits.idleTimeoutNanoseconds)
                    }
                    if let partialSince = view.partialSince, limits.lineTimeoutNanoseconds > 0 {
                        deadline = min(deadline, partialSince + limits.lineTimeoutNanoseconds)
                    }
                }
                let timeout = deadline == Int64.max ? -1 : Int32(clamping: max(0, (deadline - now) / 1_000_000 + 1))

                let result: WaitResult
                do {
                    result = try socket.wait(
                        readable: reading, writable: view.queued > 0 && !lingering,
                        stop: sawStop ? nil : server.stop.descriptor, timeoutMilliseconds: timeout)
                } catch {
                    server.context.logger.error("wait failed for \(socket): \(error)")
                    connection.fail(.connectionError)
                    continue
                }
                if result.interrupted { continue }
                if result.stopped {
                    sawStop = true
                    stopDeadline = server.shutdownDeadline.load(ordering: .relaxed)
                    // Chat: the acceptor already asked the hub to close everyone.
                    if chat == nil { connection.state.withLock { $0.closeRequested = true } }
                    continue
                }
                if lingering {
                    if result.readable || result.failed, !connection.drainLingering(into: buffer) { return }
                    continue
                }
                let later = Clock.monotonicNanoseconds()
                if result.writable || (result.failed && !reading) {
                    connection.flushQueued(limits: limits, counters: server.counters, chat: chat != nil, now: later)
                }
                if result.readable || (result.failed && reading) {
                    if let chat {
                        connection.readChat(into: buffer, hub: chat, limits: limits, counters: server.counters, now: later)
                    } else {
                        connection.readEcho(into: buffer, limits: limits, counters: server.counters, now: later)
                    }
                } else if result.timedOut {
                    checkTimers(view, now: later)
                }
            }
        }

        private func checkTimers(_ view: SharedConnection.Snapshot, now: Int64) {
            let reason: DisconnectReason
            if limits.isIdle(lastInput: view.lastInput, now: now, reading: view.isReading) {
                reason = .idleTimeout
            } else if chat != nil && limits.isLineTimedOut(partialSince: view.partialSince, now: now) {
                reason = .lineTimeout
            } else {
                return
            }
            server.context.logger.debug("closing \(socket): \(reason)")
            if let chat {
                chat.disconnect(connection, reason: reason)
            } else {
                connection.state.withLock { $0.closeRequested = true }
            }
        }
    }
}
