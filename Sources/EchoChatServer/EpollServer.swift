import EchoChatCore
import EchoChatPOSIX
import Synchronization

/// The epoll strategy: one thread serves every connection.
///
/// - Threads: exactly one, the caller of `run()`. A signal-watcher thread may
///   call `requestShutdown()`, which only sets an atomic flag and rings an eventfd.
/// - Ownership: the loop owns the listener, the eventfd, the epoll instance and
///   every client socket (table indexed by descriptor); nothing else touches them.
/// - Blocking: only in epoll_wait(2). Sockets are non-blocking; reads go into one
///   64 KiB buffer; in echo mode the bytes are written straight back from it and
///   copied into the connection's queue only when the kernel takes less (Redis's
///   "write first, register for writability only when the socket buffer is full").
///   EPOLLOUT is armed only while output is pending.
/// - Backpressure: echo stops reading a client whose queue reaches `max-output`
///   and resumes at half; chat drops a client whose queue passes it (slow consumer).
///   Chat output is coalesced: lines queued during one batch of events go out in
///   one send(2) per connection when the batch ends.
/// - Capacity: descriptors (`max-clients`, then RLIMIT_NOFILE). On EMFILE/ENFILE the
///   reserve descriptor is released to accept the waiting client, tell it the
///   server is full and close it; if even that fails, accepting pauses for 100 ms.
/// - Shutdown: stop accepting, tell chat clients, flush every queue, shut down the
///   sending side and wait for the peers to close, all within `shutdown-timeout`.
public final class EpollServer: ServerStrategy, ChatOutput, @unchecked Sendable {
    // @unchecked Sendable: every stored property is confined to the loop thread
    // except `requests` (Atomics and an eventfd, whose
    // write is thread-safe), the only two things `requestShutdown` touches.

    private let context: ServerContext
    /// The settings SIGHUP may change, refreshed once per loop iteration.
    private var live: LiveSettings
    private var limits: Limits { live.limits }
    private let listener: Socket
    private let poller: Poller
    private let requests: ControlRequests

    private var connections: [Connection?] = []
    private var dirty: [Connection] = []
    private var events = PollEvents(capacity: 1024)
    private let readBuffer: UnsafeMutableRawBufferPointer
    private let chat: ChatCore?
    private var acceptor: Acceptor

    private var now: Int64 = 0
    private var nextSweep: Int64 = 0
    private var generation: UInt32 = 0
    private var echoClients = 0
    /// Connection objects not yet released (clients, refused, lingering).
    private var openConnections = 0
    /// Connections whose session is over (delivering, then lingering): they
    /// need the sweep for their close-timeout and linger deadlines.
    private var closing = 0
    private var acceptPausedUntil: Int64?
    private var shutdownDeadline: Int64?
    private var listenerOpen = true
    private var stats = TransportStats(strategy: Strategy.epoll.rawValue)

    private static let listenerToken: UInt64 = UInt64(UInt32.max)
    private static let wakeupToken: UInt64 = UInt64(UInt32.max) - 1
    private static let lingerNanoseconds: Int64 = 2_000_000_000
    private static let sweepInterval: Int64 = 100_000_000

    /// One client socket and what the loop knows about it.
    private final class Connection {
        let socket: Socket
        let id: ConnectionID
        let token: UInt64
        var output = ByteQueue()
        var interest: Poller.Events = .readable
        /// Counted as a client (not a refused connection).
        let admitted: Bool
        /// EOF arrived: nothing more will be read.
        var inputClosed = false
        /// Echo: reading paused by backpressure.
        var paused = false
        /// Close once `output` is empty.
        var closeWhenFlushed = false
        /// The session ended: the client has until then to take its last output.
        var closeDeadline: Int64?
        /// Output is done and the sending side is shut; reading until the peer closes.
        var lingerDeadline: Int64?
        var closed = false
        var queuedForFlush = false
        var lastInput: Int64
        var partialSince: Int64?

        init(socket: Socket, token: UInt64, admitted: Bool, now: Int64) {
            self.socket = socket
            self.id = ConnectionID(Int(socket.descriptor))
            self.token = token
            self.admitted = admitted
            self.lastInput = now
        }

        var isReading: Bool { interest.contains(.readable) && !paused && lingerDeadline == nil && !inputClosed }
    }

    public init(context: ServerContext, listener: Socket) throws(SystemError) {
        self.context = context
        self.live = LiveSettings(context.settings)
        self.listener = listener
        self.acceptor = Acceptor(listener: listener, logger: context.logger)
        self.poller = try Poller()
        self.requests = try ControlRequests()
        self.readBuffer = .allocate(byteCount: 64 * 1024, alignment: 16)
        self.chat = context.configuration.mode == .chat ? ChatCore(maxLine: context.configuration.maxLine) : nil
        try poller.register(listener.descriptor, for: .readable, data: Self.listenerToken)
        try poller.register(requests.wakeup.descriptor, for: .readable, data: Self.wakeupToken)
    }

    deinit {
        readBuffer.deallocate()
        poller.close()
    }

    public func requestShutdown() {
        requests.requestShutdown()
    }

    public func requestStatsReport() {
        requests.requestStats()
    }

    // MARK: - The loop

    public func run() throws(SystemError) {
        now = Clock.monotonicNanoseconds()
        nextSweep = now + Self.sweepInterval
        while true {
            let count = try poller.wait(into: &events, timeoutMilliseconds: waitTimeout())
            now = Clock.monotonicNanoseconds()
            live.refresh()
            for index in 0..<count {
                let token = events.data(at: index)
                let ready = events.events(at: index)
                switch token {
                case Self.listenerToken: acceptConnections()
                case Self.wakeupToken:
                    requests.wakeup.drain()
                    if requests.takeStatsRequest() { context.logger.info("stats: \(serverStats().keyValues)") }
                    if requests.shutdownRequested && shutdownDeadline == nil { beginShutdown() }
                default: handle(ready, token: token)
                }
            }
            flushDirty()
            if now >= nextSweep { sweep() }
            if let deadline = shutdownDeadline, openConnections == 0 || now >= deadline { break }
        }
        for index in connections.indices { if let connection = connections[index] { release(connection) } }
        if listenerOpen { listener.close() }
    }

    /// Wait forever unless a timer is running: timeouts, lingering closes, a
    /// paused listener or a shutdown deadline.
    private func waitTimeout() -> Int32 {
        if limits.hasTimers || closing > 0 || acceptPausedUntil != nil || shutdownDeadline != nil {
            return Int32(max(1, (nextSweep - now) / 1_000_000 + 1))
        }
        return -1
    }

    private func handle(_ ready: Poller.Events, token: UInt64) {
        let descriptor = Int(token & 0xFFFF_FFFF)
        guard descriptor < connections.count, let connection = connections[descriptor], connection.token == token
        else { return }  // an event for a connection closed earlier in this batch
        let failed = ready.contains(.error) || ready.contains(.hangup)
        if connection.lingerDeadline != nil {
            return drainLingering(connection)
        }
        if failed && (connection.paused || connection.inputClosed) {
            // Not reading, so a read cannot collect the error: writing will.
            // Level-triggered HUP/ERR would otherwise repeat forever.
            flush(connection)
            if !connection.closed { abort(connection, .connectionError) }
            return
        }
        if ready.contains(.readable) || failed {
            if chat != nil { readChat(connection) } else { readEcho(connection) }
        }
        if ready.contains(.writable) && !connection.closed { flush(connection) }
    }

    // MARK: - Accepting

    private func acceptConnections() {
        guard listenerOpen else { return }
        let keepGoing = acceptor.acceptPending(admit: { admit($0) }, refused: { stats.refused += 1 })
        if !keepGoing { pauseAccepting() }
    }

    private func admit(_ socket: Socket) {
        let clients = chat?.clientCount ?? echoClients
        let admitted = limits.admits(connectedClients: clients) && shutdownDeadline == nil
        try? socket.setNoDelay()
        generation &+= 1
        let token = UInt64(generation) << 32 | UInt64(UInt32(socket.descriptor))
        do {
            try poller.register(socket.descriptor, for: .readable, data: token)
        } catch {
            context.logger.warn("cannot watch new connection: \(error)")
            socket.close()
            return
        }
        let connection = Connection(socket: socket, token: token, admitted: admitted, now: now)
        let index = Int(socket.descriptor)
        if index >= connections.count { connections.append(contentsOf: repeatElement(nil, count: index - connections.count + 1 + 64)) }
        connections[index] = connection
        openConnections += 1
        if !admitted {
            stats.refused += 1
            connection.output.append(Replies.serverFull)
            beginClosing(connection)
            markDirty(connection)
            context.logger.debug("refused \(socket): server full (\(clients) clients)")
            return
        }
        stats.connectionsTotal += 1
        if let chat {
            chat.connect(connection.id, output: self)
        } else {
            echoClients += 1
        }
        context.logger.debug("accepted \(socket)")
    }

    private func pauseAccepting() {
        guard listenerOpen, acceptPausedUntil == nil else { return }
        acceptPausedUntil = now + 100_000_000
        try? poller.modify(listener.descriptor, for: [], data: Self.listenerToken)
    }

    // MARK: - Reading

    private func readEcho(_ connection: Connection) {
        let budget = min(readBuffer.count, limits.echoReadBudget(queuedBytes: connection.output.count))
        guard budget > 0 else { return pauseReading(connection) }
        let buffer = UnsafeMutableRawBufferPointer(rebasing: readBuffer[0..<budget])
        let result: ReadResult
        do { result = try connection.socket.read(into: buffer) } catch { return abort(connection, .connectionError) }
        switch result {
        case .wouldBlock: return
        case .endOfFile:
            connection.inputClosed = true
            setInterest(connection, connection.output.isEmpty ? [] : .writable)
            beginClosing(connection)
            if connection.output.isEmpty { finishClose(connection) }
        case .bytes(let count):
            connection.lastInput = now
            let bytes = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
            stats.bytesIn += count
            let lines = countNewlines(bytes)
            stats.messagesIn += lines
            if connection.output.isEmpty {
                let written: Int
                do {
                    switch try connection.socket.write(bytes) {
                    case .done(let n): written = n
                    case .wouldBlock: written = 0
                    }
                } catch { return abort(connection, .connectionError) }
                stats.bytesOut += written
                stats.messagesOut += written == count ? lines : countNewlines(UnsafeRawBufferPointer(rebasing: bytes[0..<written]))
                if written == count { return }
                connection.output.append(UnsafeRawBufferPointer(rebasing: bytes[written...]))
                setInterest(connection, connection.interest.union(.writable))
            } else {
                connection.output.append(bytes)
            }
            if limits.echoReadBudget(queuedBytes: connection.output.count) == 0 { pauseReading(connection) }
        }
    }

    private func readChat(_ connection: Connection) {
        guard let chat else { return }
        let result: ReadResult
        do { result = try connection.socket.read(into: readBuffer) } catch { return abort(connection, .connectionError) }
        switch result {
        case .wouldBlock: return
        case .endOfFile:
            connection.inputClosed = true
            setInterest(connection, connection.interest.subtracting(.readable))
            chat.endOfInput(from: connection.id, output: self)
        case .bytes(let count):
            connection.lastInput = now
            stats.bytesIn += count
            chat.receive(UnsafeRawBufferPointer(rebasing: readBuffer[0..<count]), from: connection.id, output: self)
            if limits.lineTimeoutNanoseconds > 0 && !connection.closeWhenFlushed {
                if chat.hasPartialLine(connection.id) {
                    if connection.partialSince == nil { connection.partialSince = now }
                } else {
                    connection.partialSince = nil
                }
            }
        }
    }

    private func pauseReading(_ connection: Connection) {
        connection.paused = true
        setInterest(connection, connection.interest.subtracting(.readable).union(.writable))
    }

    /// After output is done and the sending side is shut: read and discard
    /// until the peer closes, so unread input cannot turn close(2) into a reset
    /// that destroys the last lines in flight (nginx's lingering close).
    private func drainLingering(_ connection: Connection) {
        while true {
            let result: ReadResult
            do { result = try connection.socket.read(into: readBuffer) } catch { return release(connection) }
            switch result {
            case .bytes: continue
            case .wouldBlock: return
            case .endOfFile: return release(connection)
            }
        }
    }

    // MARK: - Writing

    private func markDirty(_ connection: Connection) {
        if !connection.queuedForFlush {
            connection.queuedForFlush = true
            dirty.append(connection)
        }
    }

    /// Flushes every connection that got output during this batch, including
    /// those that get output while this runs (a slow consumer's left notice).
    private func flushDirty() {
        while let connection = dirty.popLast() {
            connection.queuedForFlush = false
            if !connection.closed { flush(connection) }
        }
    }

    private func flush(_ connection: Connection) {
        while !connection.output.isEmpty {
            let result: IOResult<Int>
            do {
                result = try connection.output.withReadableBytes { try connection.socket.write($0) }
            } catch {
                return abort(connection, .connectionError)
            }
            guard case .done(let written) = result else { break }
            if chat == nil {
                stats.messagesOut += connection.output.withReadableBytes {
                    countNewlines(UnsafeRawBufferPointer(rebasing: $0[0..<written]))
                }
            }
            stats.bytesOut += written
            connection.output.consume(written)
        }
        if !connection.output.isEmpty {
            if chat != nil && connection.admitted && limits.isSlowConsumer(queuedBytes: connection.output.count) {
                return abort(connection, .slowConsumer)
            }
            if !connection.interest.contains(.writable) { setInterest(connection, connection.interest.union(.writable)) }
            return
        }
        var wanted = connection.interest.subtracting(.writable)
        if connection.paused && limits.echoMayResume(queuedBytes: 0) && !connection.inputClosed && !connection.closeWhenFlushed {
            connection.paused = false
            connection.lastInput = now  // its idle clock was stopped while not reading
            wanted.insert(.readable)
        }
        setInterest(connection, wanted)
        if connection.closeWhenFlushed { finishClose(connection) }
    }

    private func setInterest(_ connection: Connection, _ interest: Poller.Events) {
        guard interest != connection.interest, !connection.closed else { return }
        connection.interest = interest
        do {
            try poller.modify(connection.socket.descriptor, for: interest, data: connection.token)
        } catch {
            context.logger.warn("epoll_ctl failed for \(connection.socket): \(error)")
        }
    }

    // MARK: - Closing

    /// Output delivered: close now if the peer already sent EOF; otherwise shut
    /// the sending side and linger until the peer closes (bounded).
    private func finishClose(_ connection: Connection) {
        guard !connection.closed, connection.lingerDeadline == nil else { return }
        if connection.inputClosed { return release(connection) }
        connection.socket.shutdownWrite()
        var deadline = now + Self.lingerNanoseconds
        if let shutdownDeadline { deadline = min(deadline, shutdownDeadline) }
        connection.lingerDeadline = deadline
        connection.paused = false
        retire(connection)
        setInterest(connection, .readable)
    }

    /// The session is over: deliver what is queued, then close, all within
    /// `close-timeout` (a client that stops reading cannot hold it forever).
    private func beginClosing(_ connection: Connection) {
        connection.closeWhenFlushed = true
        if connection.closeDeadline == nil {
            connection.closeDeadline = now + live.closeTimeout
            closing += 1
        }
    }

    /// A connection stops counting as an echo client (its session is over);
    /// chat clients stop counting when the core forgets them.
    private func retire(_ connection: Connection) {
        if connection.admitted && chat == nil { echoClients -= 1 }
    }

    /// Ends a session at once, dropping its queue: socket error or slow consumer.
    private func abort(_ connection: Connection, _ reason: DisconnectReason) {
        guard !connection.closed else { return }
        connection.output.removeAll()
        connection.closeWhenFlushed = true
        context.logger.debug("closing \(connection.socket): \(reason)")
        if let chat, connection.admitted, connection.lingerDeadline == nil {
            chat.disconnect(connection.id, reason: reason, output: self)  // calls close(_:) below
        }
        release(connection)
    }

    /// Closes the descriptor and forgets the connection.
    private func release(_ connection: Connection) {
        guard !connection.closed else { return }
        if connection.lingerDeadline == nil { retire(connection) }
        if connection.closeDeadline != nil { closing -= 1 }
        connection.closed = true
        openConnections -= 1
        connection.socket.close()
        connections[Int(connection.socket.descriptor)] = nil
    }

    // MARK: - ChatOutput (called by the core, on this thread)

    public func send(_ line: [UInt8], to id: ConnectionID) {
        guard let connection = connections[id.rawValue], !connection.closed else { return }
        connection.output.append(line)
        markDirty(connection)
    }

    public func close(_ id: ConnectionID) {
        guard let connection = connections[id.rawValue], !connection.closed else { return }
        beginClosing(connection)
        setInterest(connection, connection.interest.subtracting(.readable))
        markDirty(connection)
    }

    public func transportStats() -> TransportStats {
        var snapshot = stats
        snapshot.uptimeSeconds = context.uptimeSeconds
        return snapshot
    }

    public func serverStats() -> ServerStats {
        if let chat { return chat.stats(transport: transportStats()) }
        return .echo(clients: echoClients, transport: transportStats())
    }

    // MARK: - Timers and shutdown

    private func sweep() {
        nextSweep = now + Self.sweepInterval
        if let until = acceptPausedUntil, now >= until, listenerOpen {
            acceptPausedUntil = nil
            try? poller.modify(listener.descriptor, for: .readable, data: Self.listenerToken)
        }
        guard limits.hasTimers || closing > 0 || shutdownDeadline != nil else { return }
        for index in connections.indices {
            guard let connection = connections[index], !connection.closed else { continue }
            if let deadline = connection.lingerDeadline {
                if now >= deadline { release(connection) }
                continue
            }
            if let deadline = connection.closeDeadline, now >= deadline, shutdownDeadline == nil {
                context.logger.debug("closing \(connection.socket): its last output was not taken within the close timeout")
                release(connection)
                continue
            }
            if shutdownDeadline != nil || !connection.admitted || connection.closeWhenFlushed { continue }
            if limits.isIdle(lastInput: connection.lastInput, now: now, reading: connection.isReading) {
                expire(connection, .idleTimeout)
            } else if chat != nil && limits.isLineTimedOut(partialSince: connection.partialSince, now: now) {
                expire(connection, .lineTimeout)
            }
        }
        flushDirty()
    }

    private func expire(_ connection: Connection, _ reason: DisconnectReason) {
        context.logger.debug("closing \(connection.socket): \(reason)")
        if let chat {
            chat.disconnect(connection.id, reason: reason, output: self)
        } else {
            close(connection.id)
        }
    }

    private func beginShutdown() {
        shutdownDeadline = now + live.shutdownTimeout
        nextSweep = now
        if listenerOpen {
            listenerOpen = false
            listener.close()
        }
        if let chat {
            chat.shutdown(output: self)
        }
        for index in connections.indices {
            guard let connection = connections[index], !connection.closed else { continue }
            if let deadline = connection.lingerDeadline {
                connection.lingerDeadline = min(deadline, shutdownDeadline!)
            } else {
                close(connection.id)
            }
        }
    }
}
