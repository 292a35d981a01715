import EchoChatCore
import EchoChatPOSIX
import Synchronization

/// What every strategy's connections share: admission and refusal, the chat
/// hub, the wire counters, `/stats`. Safe from any thread.
final class ConnectionLayer: Sendable {
    let context: ServerContext
    let strategy: Strategy
    let counters: ServerCounters
    let hub: ChatHub?
    /// Echo: admitted clients whose session is not over.
    private let echoClients = Atomic<Int>(0)
    /// Refused connections still waiting for their peer to close.
    private let lingeringRefusals = Atomic<Int>(0)
    /// Connections per source address (`max-per-address`), counted whether
    /// or not the limit is on, so a SIGHUP that turns it on finds them.
    private let addresses = Lock(ConnectionsByAddress())
    /// The strategy's own `/stats` pairs (threads, workers, queue depth).
    private let extraStats: @Sendable () -> [TransportStats.Pair]
    /// Chat with `--upload-dir`: the file store.
    var files: FileStore? { context.files }
    /// The strategy's way of waking a connection's owner from another thread.
    /// Boxed in a class: a closure kept as a `Lock`'s value directly is
    /// reabstracted on every access through the generic lock, and written
    /// back wrapped in two more thunks, so each wake-up grew the next one's
    /// call chain (seen in perf as thousands of nested thunks after a minute
    /// of cluster traffic).
    private let waker = Lock<Waker?>(nil)

    private final class Waker: Sendable {
        let wake: @Sendable (Connection) -> Void
        init(_ wake: @escaping @Sendable (Connection) -> Void) { self.wake = wake }
    }

    /// More refused connections than this close right after their line
    /// instead of lingering, so a flood past `max-clients` holds few descriptors.
    static let maxLingeringRefusals = 256

    var logger: Logger { context.logger }

    /// `inboxes`: the event loops' inboxes, one `ConnectionOwner` each
    /// (none: one owner for all, woken the strategy's own way).
    init(
        context: ServerContext, strategy: Strategy, inboxes: [ControlRequests] = [],
        extraStats: @escaping @Sendable () -> [TransportStats.Pair] = { [] }
    ) {
        self.context = context
        counters = ServerCounters(inboxes: inboxes.isEmpty ? [nil] : inboxes.map { $0 })
        self.strategy = strategy
        self.extraStats = extraStats
        let counters = counters
        hub = context.configuration.mode == .chat
            ? ChatHub(
                limits: context.configuration.limits, files: context.files, cluster: context.cluster,
                pacesSenders: strategy.recipientsTakenElsewhere
            ) {
                counters.transport(
                    strategy: strategy, uptimeSeconds: context.uptimeSeconds, extra: extraStats(), cluster: context.cluster)
            } : nil
        if let hub {
            let waker = waker
            context.files?.attach(hub: hub) { connection in waker.withLock { $0 }?.wake(connection) }
            context.cluster?.attach(hub: hub) { connection in waker.withLock { $0 }?.wake(connection) }
        }
    }

    /// How the strategy wakes a connection's owner from another thread (the
    /// file store's): set once, before the first connection.
    func setWaker(_ wake: @escaping @Sendable (Connection) -> Void) {
        let boxed = Waker(wake)
        waker.withLock { $0 = boxed }
    }

    /// Wakes `connection`'s owner the strategy's way (from any thread).
    func wake(_ connection: Connection) { waker.withLock { $0 }?.wake(connection) }


    /// A newly accepted socket: admitted (chat: welcomed, its room told) or
    /// refused with `! too many connections from your address`
    /// (`max-per-address`) or `! server full, try again later`. The strategy
    /// registers it with whatever waits for it before the first `serve`; the
    /// chat welcome and notices are queued in `deliveries`, to be woken, not
    /// sent here. `owner`: the loop that will own it (default: the only owner).
    /// `inService`: the connection is taken into service (`Shared.inService`)
    /// before the hub can reach it, for a strategy that hands it to a worker
    /// itself: a line or a welcome delivered in the meantime only notes mail,
    /// and cannot queue it a second time.
    func accept(
        _ socket: Socket, token: UInt64, owner: ConnectionOwner? = nil, now: Int64, settings: SharedConnectionSettings,
        inService: Bool = false, deliveries: inout Deliveries
    ) -> Connection {
        let owner = owner ?? counters.owners[0]
        try? socket.setNoDelay()
        let mode: ConnectionMachine.Mode = hub == nil ? .echo : .chat
        let limits = settings.value.limits
        guard settings.value.shutdownDeadline == nil else {
            return refuse(socket, .serverFull, token: token, owner: owner, now: now, settings: settings)
        }
        // A peer that is already gone (getpeername: ENOTCONN) is not counted:
        // its first read ends it.
        if let address = try? AddressKey(socket.peerAddress()),
            !addresses.withLock({ $0.admit(address, slot: Int(socket.descriptor), limit: limits.maxPerAddress) })
        {
            logger.info(
                "refused a client from \(address): max-per-address (\(limits.maxPerAddress)) reached",
                limitedAs: "refused-per-address")
            return refuse(socket, .perAddress, token: token, owner: owner, now: now, settings: settings)
        }
        if hub == nil {
            // Counted first, checked after: loops that accept at once cannot
            // both take the last place.
            let before = echoClients.wrappingAdd(1, ordering: .relaxed).oldValue
            guard limits.admits(connectedClients: before) else {
                echoClients.wrappingSubtract(1, ordering: .relaxed)
                addresses.withLock { $0.release(slot: Int(socket.descriptor)) }
                return refuse(socket, .serverFull, token: token, owner: owner, now: now, settings: settings)
            }
        }
        let connection = Connection(
            socket: socket, token: token, layer: self, owner: owner,
            machine: ConnectionMachine(mode: mode, settings: settings, now: now))
        if inService { connection.shared.withLock { $0.inService = true } }
        if let hub, !hub.admit(connection, limits: limits, deliveries: &deliveries) {
            addresses.withLock { $0.release(slot: Int(socket.descriptor)) }
            return refuse(socket, .serverFull, token: token, owner: owner, now: now, settings: settings)
        }
        counters.add(counters.connectionsTotal, 1)
        logger.debug("accepted \(socket)")
        return connection
    }

    private enum Refusal {
        case serverFull, perAddress
    }

    private func refuse(
        _ socket: Socket, _ refusal: Refusal, token: UInt64, owner: ConnectionOwner, now: Int64, settings: SharedConnectionSettings
    ) -> Connection {
        counters.add(counters.refused, 1)
        var settings = settings
        if lingeringRefusals.wrappingAdd(1, ordering: .relaxed).newValue > Self.maxLingeringRefusals {
            var closing = settings.value
            closing.lingerNanoseconds = 0
            settings = SharedConnectionSettings(closing)
        }
        let line: [UInt8]
        switch refusal {
        case .serverFull:
            counters.add(counters.refusedServerFull, 1)
            logger.debug("refused \(socket): server full")
            line = Replies.serverFull
        case .perAddress:
            counters.add(counters.refusedPerAddress, 1)
            line = Replies.tooManyFromAddress
        }
        let mode: ConnectionMachine.Mode = hub == nil ? .echo : .chat
        let machine = ConnectionMachine(refusing: line, mode: mode, settings: settings, now: now)
        return Connection(socket: socket, token: token, layer: self, owner: owner, machine: machine)
    }

    /// A refusal the acceptor made itself (out of descriptors).
    func refusedWithoutDescriptor() {
        counters.add(counters.refused, 1)
        counters.add(counters.refusedWithoutDescriptor, 1)
    }

    /// An admitted client's session is over (its descriptor is still open,
    /// so its number cannot have been given to a newer connection yet).
    func sessionEnded(_ connection: Connection) {
        if hub == nil { echoClients.wrappingSubtract(1, ordering: .relaxed) }
        addresses.withLock { $0.release(slot: Int(connection.socket.descriptor)) }
    }

    func closed(_ connection: Connection, cause: CloseCause) {
        if !connection.admitted { lingeringRefusals.wrappingSubtract(1, ordering: .relaxed) }
        switch cause {
        case .failed(.slowConsumer): counters.add(counters.slowConsumers, 1)
        case .failed(.sendTimeout): counters.add(counters.sendTimeouts, 1)
        case .closeTimeout: counters.add(counters.closeTimeouts, 1)
        default: break
        }
    }

    /// A timer closed the connection's session (`Limits`).
    func expired(_ reason: DisconnectReason) {
        switch reason {
        case .idleTimeout: counters.add(counters.idleTimeouts, 1)
        case .lineTimeout: counters.add(counters.lineTimeouts, 1)
        default: break
        }
    }

    /// Chat: everyone gets `* server shutting down` (queued in `deliveries`).
    func beginShutdown(deliveries: inout Deliveries) {
        hub?.shutdown(deliveries: &deliveries)
        context.cluster?.leave()  // the goodbye goes now, while the connections drain
    }

    func serverStats() -> ServerStats {
        let transport = counters.transport(
            strategy: strategy, uptimeSeconds: context.uptimeSeconds, extra: extraStats(), cluster: context.cluster)
        if let hub { return hub.serverStats(transport: transport) }
        return .echo(clients: echoClients.load(ordering: .relaxed), transport: transport)
    }
}

/// Wire counters: relaxed atomics, each written with one uncontended add.
final class ServerCounters: Sendable {
    let connectionsTotal = Atomic<Int>(0)
    let refused = Atomic<Int>(0)
    // Of `refused`, by cause.
    let refusedServerFull = Atomic<Int>(0)
    let refusedPerAddress = Atomic<Int>(0)
    let refusedWithoutDescriptor = Atomic<Int>(0)
    /// accept(2) failing with EMFILE or ENFILE.
    let descriptorExhaustion = Atomic<Int>(0)
    let slowConsumers = Atomic<Int>(0)
    let idleTimeouts = Atomic<Int>(0)
    let lineTimeouts = Atomic<Int>(0)
    let closeTimeouts = Atomic<Int>(0)
    /// Each owner's bytes and lines on the wire, summed on demand.
    let owners: [ConnectionOwner]
    /// Floods the rate limit paused (§3.6).
    let rateLimited = Atomic<Int>(0)
    let sendTimeouts = Atomic<Int>(0)

    init(inboxes: [ControlRequests?] = [nil]) {
        owners = inboxes.map(ConnectionOwner.init(inbox:))
    }

    /// The limit counters, as `/stats` shows them after the standard keys.
    var limitPairs: [TransportStats.Pair] {
        [
            .init("rate_limited", String(rateLimited.load(ordering: .relaxed))),
            .init("send_timeouts", String(sendTimeouts.load(ordering: .relaxed))),
            .init("line_timeouts", String(lineTimeouts.load(ordering: .relaxed))),
            .init("idle_timeouts", String(idleTimeouts.load(ordering: .relaxed))),
            .init("slow_consumers", String(slowConsumers.load(ordering: .relaxed))),
        ]
    }

    /// `cluster`: `node` and `nodes` come right after the limit counters.
    func transport(strategy: Strategy, uptimeSeconds: Int, extra: [TransportStats.Pair], cluster: ClusterLink? = nil) -> TransportStats {
        TransportStats(
            strategy: strategy.rawValue, uptimeSeconds: uptimeSeconds,
            connectionsTotal: connectionsTotal.load(ordering: .relaxed), refused: refused.load(ordering: .relaxed),
            refusedPerAddress: refusedPerAddress.load(ordering: .relaxed),
            bytesIn: sum { $0.bytesIn.load(ordering: .relaxed) }, bytesOut: sum { $0.bytesOut.load(ordering: .relaxed) },
            messagesIn: sum { $0.messagesIn.load(ordering: .relaxed) },
            messagesOut: sum { $0.messagesOut.load(ordering: .relaxed) },
            extra: limitPairs + (cluster?.statsPairs ?? []) + extra, detail: detail + (cluster?.detailPairs ?? []))
    }

    /// The counters `/stats` does not show, for metrics (`TransportStats.detail`).
    private var detail: [TransportStats.Pair] {
        func pair(_ key: String, _ counter: borrowing Atomic<Int>) -> TransportStats.Pair {
            .init(key, String(counter.load(ordering: .relaxed)))
        }
        return [
            pair("refused_server_full", refusedServerFull), pair("refused_out_of_descriptors", refusedWithoutDescriptor),
            pair("emfile_events", descriptorExhaustion), pair("close_timeouts", closeTimeouts),
        ]
    }

    @inline(__always)
    func add(_ counter: borrowing Atomic<Int>, _ value: Int) {
        if value != 0 { counter.wrappingAdd(value, ordering: .relaxed) }
    }

    private func sum(_ counter: (ConnectionOwner) -> Int) -> Int {
        owners.reduce(0) { $0 &+ counter($1) }
    }
}

/// A connection's owner as other threads see it: the inbox that wakes it
/// (an event loop's; nil where the strategy wakes owners its own way), and
/// the counters every read and write adds to. Each event loop is one owner,
/// so loops on different cores never add to the same cache line (each
/// thread keeps its own counters and they are summed on demand, as memcached
/// does); the padding keeps the next owner off this one's lines.
final class ConnectionOwner: Sendable {
    let inbox: ControlRequests?
    let bytesIn = Atomic<Int>(0)
    let bytesOut = Atomic<Int>(0)
    /// Echo mode only (chat lines are counted by the core).
    let messagesIn = Atomic<Int>(0)
    let messagesOut = Atomic<Int>(0)
    private let padding: (Int, Int, Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0, 0, 0)

    init(inbox: ControlRequests?) { self.inbox = inbox }

    @inline(__always)
    private func add(_ counter: borrowing Atomic<Int>, _ value: Int) {
        if value != 0 { counter.wrappingAdd(value, ordering: .relaxed) }
    }

    /// A read of `bytes` bytes holding `lines` LFs (echo; 0 in chat).
    @inline(__always)
    func received(bytes: Int, lines: Int) {
        add(bytesIn, bytes)
        add(messagesIn, lines)
    }

    @inline(__always)
    func sent(bytes: Int, lines: Int) {
        add(bytesOut, bytes)
        add(messagesOut, lines)
    }
}

/// An atomic count a closure can capture (an `Atomic` itself cannot be).
final class SharedCount: Sendable {
    let value = Atomic<Int>(0)
}

extension AddressKey {
    /// The key of a socket address (an IPv4-mapped IPv6 address is its IPv4 address).
    init(_ address: SocketAddress) {
        switch address.ip {
        case .v4(let ipv4): self.init(ipv4: ipv4)
        case .v6(let high, let low): self.init(high: high, low: low)
        }
    }
}
