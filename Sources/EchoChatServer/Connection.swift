import EchoChatCore
import EchoChatPOSIX
import Synchronization

/// One client connection in a running server: a socket, its
/// `ConnectionMachine`, and the hand-off through which other threads reach it.
/// `serve` is the connection's whole life (read, hand to the engine, write,
/// time out, close), written once for every strategy (memcached's
/// `drive_machine`); a strategy only decides who calls it and when.
///
/// Ownership: one thread at a time *owns* the connection (the epoll loop, the
/// client's own thread, or the pool worker holding it); only the owner calls
/// `serve`, touches `machine`, writes to the socket or closes it. Everyone
/// else (a chat sender on another thread, the acceptor, a timer sweep)
/// only queues lines in `shared` under its lock and then wakes the owner the
/// strategy's way. So no lock is ever held across a syscall on this socket,
/// and no thread can write to a descriptor number that was closed and reused.
final class Connection: @unchecked Sendable {
    // @unchecked Sendable: `machine` is confined to the owning thread (see
    // above; ownership passes between threads only through `shared`'s lock or
    // a queue that takes a lock), everything else is immutable or in `shared`.

    let socket: Socket
    let id: ConnectionID
    /// The poller registration's data: a generation above the descriptor, so
    /// a stale event for a reused descriptor number is recognised.
    let token: UInt64
    let layer: ConnectionLayer
    /// Its owner, set at accept: the inbox where chat lines from another
    /// event loop and the file store wake it, and the counters it adds to.
    let owner: ConnectionOwner
    /// Echo: lines are counted on the wire (chat lines are counted by the engine).
    let countsLines: Bool
    let admitted: Bool
    /// The engine and what the owner last learnt from it, in memory of
    /// their own and reached in place (only the owner does: checked in debug
    /// builds by `serving`). As a stored property of this class, every read of
    /// one of the machine's properties copied the whole machine and every
    /// access paid Swift's dynamic exclusivity check: together more
    /// instructions per echoed message than the echo itself.
    private let owned: UnsafeMutablePointer<Owned>
    private struct Owned {
        var machine: ConnectionMachine
        /// `machine.status` after the owner's last call into it.
        var status: ConnectionMachine.Status
        /// The connection waits in its strategy's list of turns.
        var turnQueued = false
    }
    let shared: Lock<Shared>
    #if DEBUG
        /// Set while a thread is in `serve`: checks the one-owner rule.
        private let serving = Atomic<Bool>(false)
    #endif

    /// What other threads may touch, under the lock.
    struct Shared {
        /// Chat lines queued by the engine on any thread, not yet collected.
        var pending = ByteQueue()
        /// The owner's own queue at its last flush: with `pending`, what
        /// `max-output` bounds at the moment a line is queued.
        var ownerQueued = 0
        var closeRequested = false
        var abort: DisconnectReason?
        /// What the file store did for this connection, not yet collected.
        var files: [FileEvent] = []
        /// The engine decided the client's nick claim or join (cluster), or
        /// a recipient it waited for took its lines: its input flows again.
        var resumed = false
        /// Senders whose lines filled `pending` past half of `max-output`:
        /// held until the owner takes them (or they are dropped), so that a
        /// sender does not outrun a recipient served by another thread
        /// (`ChatHub.receive`).
        var blockedSenders: [Connection] = []
        /// Lines or a request arrived since the owner last collected: the
        /// owner has been (or is being) woken; later deliveries need not wake it again.
        var mailWaiting = false
        /// The descriptor is closed: nobody may touch the socket.
        var closed = false
        /// The peer reset or hung up: nothing queued for it could ever arrive.
        var peerGone = false
        /// Strategy bookkeeping (see the strategy that uses it).
        var owner: WakeableThread?
        /// A thread is serving the connection (pool: a worker holds it;
        /// thread: its own thread or a sender flushing it).
        var inService = false
        /// Thread strategy: the connection's thread found it in service and
        /// waits to be woken when it is free.
        var ownerWaiting = false
        /// Closed by a thread that is not its owner: the descriptor is still
        /// open, for the owner to close (it may be waiting on it).
        var descriptorLeftOpen = false
        var pendingEvents: Poller.Events = []
        /// The machine's next deadline, published by the owner after serving.
        var deadline: Int64?

        /// Takes the connection into service unless a thread serves it (or
        /// it is closed, unless `asOwner`: its owner must still see that).
        /// The holder that refused it sees `ready` (pool: readiness a worker
        /// got) in `arrivals` before it lets go; the thread strategy's owner
        /// that finds it taken is woken when it is free.
        mutating func take(asOwner: Bool = false, noting ready: Poller.Events = []) -> Bool {
            if inService {
                if asOwner { ownerWaiting = true }
                pendingEvents.formUnion(ready)
                return false
            }
            if closed && !asOwner { return false }
            inService = true
            if asOwner { ownerWaiting = false }
            return true
        }

        /// What arrived for the holder while it served (readiness noted by
        /// `take`, or mail): served again before it lets go. Nil if nothing
        /// did; then `release` lets go of it, in the same critical section,
        /// so nothing can arrive unseen in between.
        mutating func arrivals(release: Bool) -> Poller.Events? {
            if !pendingEvents.isEmpty || mailWaiting {
                defer { pendingEvents = [] }
                return pendingEvents
            }
            if release { inService = false }
            return nil
        }
    }

    init(
        socket: Socket, token: UInt64, layer: ConnectionLayer, owner: ConnectionOwner, machine: ConnectionMachine
    ) {
        self.socket = socket
        self.id = ConnectionID(Int(socket.descriptor))
        self.token = token
        self.layer = layer
        self.owner = owner
        owned = .allocate(capacity: 1)
        owned.initialize(to: Owned(machine: machine, status: machine.status))
        self.countsLines = machine.mode == .echo
        self.admitted = machine.admitted
        self.shared = Lock(Shared())
    }

    deinit {
        owned.deinitialize(count: 1)
        owned.deallocate()
    }

    var isClosed: Bool { owned.pointee.status.isClosed }

    /// The poller reported a reset or hang-up: lines for this connection are
    /// dropped from now on instead of queued (a storm of leaves, each line to
    /// every member, would otherwise pile up for peers that are gone).
    /// Any thread; strategies call it as soon as they see the event.
    func peerGone() { shared.withLock { $0.peerGone = true } }

    /// Lets its input flow again (`Mail.resumed`); returns whether its
    /// owner must be woken for it (nobody has mail waiting for it yet).
    func resume() -> Bool {
        shared.withLock { state in
            guard !state.closed else { return false }
            state.resumed = true
            defer { state.mailWaiting = true }
            return !state.mailWaiting
        }
    }
    /// When the owner must serve it again even if nothing happens (the owner only).
    var nextDeadline: Int64? { owned.pointee.status.nextDeadline }

    /// Lines read earlier wait to be handled: serve it again once the other
    /// connections had their turn (fairness), without waiting for readiness.
    var wantsTurn: Bool { owned.pointee.status.wantsTurn }

    /// Owner only: the connection waits in its strategy's list of turns.
    var turnQueued: Bool {
        get { owned.pointee.turnQueued }
        set { owned.pointee.turnQueued = newValue }
    }

    /// What the owner should wait for next.
    var interest: Poller.Events {
        var events: Poller.Events = []
        if owned.pointee.status.wantsRead { events.insert(.readable) }
        if owned.pointee.status.wantsWrite { events.insert(.writable) }
        return events
    }

    /// Runs everything due: new settings, timers, the readiness `ready`
    /// reported, the mail, the queue. Deliveries this caused to *other*
    /// connections are appended to `deliveries` for the strategy to wake.
    /// `leaveDescriptorOpen`: the caller is not the thread that waits on the
    /// socket; if the connection closes, its descriptor is left for that thread.
    func serve(
        _ ready: Poller.Events, now: Int64, settings: SharedConnectionSettings, buffer: UnsafeMutableRawBufferPointer,
        deliveries: inout Deliveries, leaveDescriptorOpen: Bool = false
    ) {
        guard !owned.pointee.status.isClosed else { return }
        #if DEBUG
            // One owner at a time: two threads serving at once is a bug in a strategy.
            precondition(!serving.exchange(true, ordering: .acquiring), "\(socket) served by two threads at once")
            defer { serving.store(false, ordering: .releasing) }
        #endif
        var io = SocketIO(connection: self, leaveDescriptorOpen: leaveDescriptorOpen)
        swap(&io.deliveries, &deliveries)
        defer { swap(&io.deliveries, &deliveries) }
        let wasPaused = owned.pointee.status.paused
        if settings !== owned.pointee.machine.sharedSettings { owned.pointee.machine.update(settings, now: now) }
        owned.pointee.machine.tick(now: now, io: &io)
        owned.pointee.machine.takeTurn(now: now, io: &io)  // lines read earlier, before reading more
        let failed = ready.contains(.error) || ready.contains(.hangup)
        if failed { peerGone() }
        if ready.contains(.readable) || failed, let budget = owned.pointee.machine.nextRead(max: buffer.count) {
            read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<budget]), now: now, io: &io)
        } else if failed && !owned.pointee.machine.isClosed {
            // Not reading, so a read cannot collect the error; level-triggered
            // HUP/ERR would otherwise repeat for ever. Deliver what we can.
            owned.pointee.machine.flush(now: now, io: &io)
            owned.pointee.machine.failed(.connectionError, io: &io)
        }
        let status = owned.pointee.machine.flush(now: now, io: &io)
        owned.pointee.status = status
        if status.paused != wasPaused {
            layer.logger.debug(
                "\(status.paused ? "paused" : "resumed") reading \(socket) with \(status.queuedLineBytes) bytes queued")
        }
        if !status.isClosed {
            shared.withLock { state in
                state.ownerQueued = status.queuedLineBytes
                state.deadline = status.nextDeadline
                if status.lingering { state.mailWaiting = false }  // nothing more will be collected
            }
        }
    }

    /// One read into `target` (as much as the machine's budget allows).
    private func read(into target: UnsafeMutableRawBufferPointer, now: Int64, io: inout SocketIO) {
        guard target.count > 0 else { return }
        switch try? socket.read(into: target) {
        case .bytes(let count)?:
            let bytes = UnsafeRawBufferPointer(rebasing: target[0..<count])
            // What a closing connection sends while we linger is thrown away
            // unread: it counts nowhere (as a refused client counts nowhere).
            if owned.pointee.machine.phase != .lingering {
                let lines = countsLines ? countNewlines(bytes) : 0
                owner.received(bytes: count, lines: lines)
                if countsLines { io.lastRead = (bytes, lines) }
            }
            owned.pointee.machine.received(bytes, now: now, io: &io)
            io.lastRead = nil
        case .endOfFile?:
            owned.pointee.machine.endOfInput(now: now, io: &io)
        case .wouldBlock?:
            break
        case nil:
            owned.pointee.machine.failed(.connectionError, io: &io)
        }
    }

    /// Closes the descriptor at once (a server that stops with connections
    /// still open). The owner only.
    func forceClose() {
        guard !owned.pointee.status.isClosed else { return }
        var io = SocketIO(connection: self)
        owned.pointee.machine.failed(.connectionError, io: &io)
        owned.pointee.status = owned.pointee.machine.status
    }

    /// Marks the connection closed (under the lock, so no waker signals an
    /// owner that is about to exit), then closes the descriptor, which no
    /// other thread ever touches.
    fileprivate func closeDescriptor(leaveOpen: Bool) {
        let (dropped, blocked) = shared.withLock { state in
            defer {
                state.pending.removeAll()
                state.blockedSenders = []
            }
            state.closed = true
            state.descriptorLeftOpen = leaveOpen
            return (state.pending.count, state.blockedSenders)
        }
        if dropped > 0 { layer.hub?.waiting.value.wrappingSubtract(dropped, ordering: .relaxed) }
        for sender in blocked where sender.resume() { layer.wake(sender) }
        if !leaveOpen { closeSocket() }
    }

    /// close(2), then the debug line that says the descriptor is free.
    private func closeSocket() {
        socket.close()
        layer.logger.debug("closed \(socket)")
    }

    /// The owner closes a descriptor another thread left open when it closed
    /// the connection.
    func closeDescriptorLeftOpen() {
        let close = shared.withLock { state in
            defer { state.descriptorLeftOpen = false }
            return state.descriptorLeftOpen
        }
        if close { closeSocket() }
    }
}

/// The data a strategy registers a connection's descriptor with in epoll:
/// a generation above the descriptor number, so an event still queued for a
/// closed connection is never taken for the new one that got its number.
struct PollTokens {
    static let listener = UInt64(UInt32.max)
    static let control = UInt64(UInt32.max) - 1
    /// The pool's job queue.
    static let jobs = UInt64(UInt32.max) - 2
    /// The cluster link (`ClusterLink.descriptor`).
    static let cluster = UInt64(UInt32.max) - 3
    private var generation: UInt32 = 0

    mutating func next(for socket: Socket) -> UInt64 {
        generation &+= 1
        return UInt64(generation) << 32 | UInt64(UInt32(socket.descriptor))
    }

    static func descriptor(of token: UInt64) -> Int { Int(token & 0xFFFF_FFFF) }
}

/// Connections that got mail during an event and whose owners must be woken.
/// `urgent` ones have enough queued that waiting for the end of the batch
/// would only grow memory.
struct Deliveries {
    var woken: [Connection] = []
    var urgent: [Connection] = []

    var isEmpty: Bool { woken.isEmpty && urgent.isEmpty }

    mutating func removeAll() {
        woken.removeAll(keepingCapacity: true)
        urgent.removeAll(keepingCapacity: true)
    }
}

/// The machine's actions, on a real socket.
struct SocketIO: ConnectionIO {
    let connection: Connection
    var leaveDescriptorOpen = false
    var deliveries = Deliveries()
    /// Echo: the bytes of the read being handled and their LFs, so that
    /// writing the same bytes straight back counts its messages without a
    /// second pass (kept here, on the stack, not in every connection).
    var lastRead: (bytes: UnsafeRawBufferPointer, lines: Int)?

    /// Echo: the LFs among the first `written` bytes of `bytes`, which are
    /// usually the whole of what was just read, counted already.
    private func lines(inWritten bytes: UnsafeRawBufferPointer, _ written: Int) -> Int {
        if let lastRead, written == lastRead.bytes.count, bytes.baseAddress == lastRead.bytes.baseAddress {
            return lastRead.lines
        }
        return countNewlines(UnsafeRawBufferPointer(rebasing: bytes[0..<written]))
    }

    private var layer: ConnectionLayer { connection.layer }

    mutating func write(_ bytes: UnsafeRawBufferPointer) -> Int? {
        switch try? connection.socket.write(bytes) {
        case .done(let written)?:
            connection.owner.sent(bytes: written, lines: connection.countsLines ? lines(inWritten: bytes, written) : 0)
            return written
        case .wouldBlock?: return 0
        case nil:
            connection.peerGone()
            return nil
        }
    }

    mutating func shutdownWrite() { connection.socket.shutdownWrite() }

    mutating func close(_ cause: CloseCause) {
        switch cause {
        case .finished: break
        case .failed(let reason):
            layer.logger.debug("closing \(connection.socket): \(reason)")
        case .closeTimeout:
            layer.logger.debug("closing \(connection.socket): its last output was not taken within the close timeout")
        case .lingerEnded: layer.logger.debug("closing \(connection.socket): the peer did not close within the linger time")
        case .shutdownDeadline: layer.logger.debug("closing \(connection.socket): shutdown deadline")
        }
        connection.closeDescriptor(leaveOpen: leaveDescriptorOpen)
        layer.closed(connection, cause: cause)
    }

    mutating func sessionEnded() { layer.sessionEnded(connection) }

    mutating func expired(_ reason: DisconnectReason) {
        layer.logger.debug("closing \(connection.socket): \(reason)")
        layer.expired(reason)
    }

    mutating func chatReceive(_ bytes: UnsafeRawBufferPointer, maxLines: Int, queuedBytes: Int) -> ChatIntake {
        layer.hub?.receive(bytes, from: connection, maxLines: maxLines, queuedBytes: queuedBytes, deliveries: &deliveries)
            ?? ChatIntake(consumed: bytes.count, lines: 0, partialLine: false)
    }

    mutating func chatRateLimited(linesPerSecond: Int, notify: Bool) {
        layer.counters.add(layer.counters.rateLimited, 1)
        layer.logger.debug("rate limit: reading \(connection.socket) more slowly")
        layer.hub?.rateLimited(connection, linesPerSecond: linesPerSecond, notify: notify, deliveries: &deliveries)
    }

    mutating func chatEndOfInput() { layer.hub?.endOfInput(from: connection, deliveries: &deliveries) }

    // Files: jobs for the store's I/O thread (no disk wait here).
    mutating func uploadBegin(name: String, size: Int) {
        layer.files?.submit(.uploadBegin(connection, name: name, size: size))
    }
    mutating func uploadData(_ bytes: UnsafeRawBufferPointer) { layer.files?.submit(.uploadData(connection, Array(bytes))) }
    mutating func uploadEnd() { layer.files?.submit(.uploadEnd(connection)) }
    mutating func uploadAbort() { layer.files?.submit(.uploadAbort(connection)) }
    mutating func downloadBegin(_ name: String) { layer.files?.submit(.downloadBegin(connection, name: name)) }
    mutating func downloadRead(max: Int) { layer.files?.submit(.downloadRead(connection, max: max)) }
    mutating func downloadEnd() { layer.files?.submit(.downloadEnd(connection)) }

    mutating func chatDisconnect(_ reason: DisconnectReason) {
        layer.hub?.disconnect(connection, reason: reason, deliveries: &deliveries)
    }

    mutating func collect(into output: inout ByteQueue) -> Mail {
        let (mail, moved, blocked) = connection.shared.withLock { state -> (Mail, Int, [Connection]) in
            let moved = state.pending.count
            let blocked = state.blockedSenders
            if !blocked.isEmpty { state.blockedSenders = [] }
            if output.isEmpty {
                swap(&output, &state.pending)
                state.pending = ByteQueue()  // not the old queue's capacity: most connections are idle
            } else if !state.pending.isEmpty {
                state.pending.withReadableBytes { output.append($0) }
                state.pending.removeAll()
            }
            state.mailWaiting = false
            defer {
                state.closeRequested = false
                state.abort = nil
                state.files.removeAll()
                state.resumed = false
            }
            return (Mail(closeRequested: state.closeRequested, abort: state.abort, files: state.files, resumed: state.resumed), moved, blocked)
        }
        if moved > 0 { layer.hub?.waiting.value.wrappingSubtract(moved, ordering: .relaxed) }
        for sender in blocked where sender.resume() { layer.wake(sender) }
        return mail
    }
}
