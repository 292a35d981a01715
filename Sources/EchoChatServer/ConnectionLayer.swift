import EchoChatCore
import EchoChatPOSIX
import Synchronization

/// What every strategy's connections share: admission and refusal, the chat
/// hub, the wire counters, `/stats`. Safe from any thread.
final class ConnectionLayer: Sendable {
    let context: ServerContext
    let strategy: Strategy
    let counters = ServerCounters()
    let hub: ChatHub?
    /// Echo: admitted clients whose session is not over.
    private let echoClients = Atomic<Int>(0)
    /// Refused connections still waiting for their peer to close.
    private let lingeringRefusals = Atomic<Int>(0)
    /// The strategy's own `/stats` pairs (threads, workers, queue depth).
    private let extraStats: @Sendable () -> [TransportStats.Pair]

    /// More refused connections than this close right after their line
    /// instead of lingering, so a flood past `max-clients` holds few descriptors.
    static let maxLingeringRefusals = 256

    var logger: Logger { context.logger }

    init(context: ServerContext, strategy: Strategy, extraStats: @escaping @Sendable () -> [TransportStats.Pair] = { [] }) {
        self.context = context
        self.strategy = strategy
        self.extraStats = extraStats
        let counters = counters
        hub = context.configuration.mode == .chat
            ? ChatHub(limits: context.configuration.limits) {
                counters.transport(strategy: strategy, uptimeSeconds: context.uptimeSeconds, extra: extraStats())
            } : nil
    }

    /// A newly accepted socket: admitted (chat: welcomed, its room told) or
    /// refused with `! server full`. The strategy registers it with whatever
    /// waits for it before the first `serve`; the chat welcome and notices are
    /// queued in `deliveries`, to be woken, not sent here.
    func accept(
        _ socket: Socket, token: UInt64, now: Int64, settings: ConnectionSettings, deliveries: inout Deliveries
    ) -> Connection {
        try? socket.setNoDelay()
        let mode: ConnectionMachine.Mode = hub == nil ? .echo : .chat
        let limits = settings.limits
        var admitted = settings.shutdownDeadline == nil
        if admitted && hub == nil {
            admitted = limits.admits(connectedClients: echoClients.load(ordering: .relaxed))
            if admitted { echoClients.wrappingAdd(1, ordering: .relaxed) }
        }
        if admitted {
            let connection = Connection(
                socket: socket, token: token, layer: self, machine: ConnectionMachine(mode: mode, settings: settings, now: now))
            if let hub, !hub.admit(connection, limits: limits, deliveries: &deliveries) {
                return refuse(socket, token: token, mode: mode, now: now, settings: settings)
            }
            counters.add(counters.connectionsTotal, 1)
            logger.debug("accepted \(socket)")
            return connection
        }
        return refuse(socket, token: token, mode: mode, now: now, settings: settings)
    }

    private func refuse(_ socket: Socket, token: UInt64, mode: ConnectionMachine.Mode, now: Int64, settings: ConnectionSettings)
        -> Connection
    {
        counters.add(counters.refused, 1)
        var settings = settings
        if lingeringRefusals.wrappingAdd(1, ordering: .relaxed).newValue > Self.maxLingeringRefusals {
            settings.lingerNanoseconds = 0
        }
        logger.debug("refused \(socket): server full")
        let machine = ConnectionMachine(refusing: Replies.serverFull, mode: mode, settings: settings, now: now)
        return Connection(socket: socket, token: token, layer: self, machine: machine)
    }

    /// A refusal the acceptor made itself (out of descriptors).
    func refusedWithoutDescriptor() { counters.add(counters.refused, 1) }

    func sessionEnded(_ connection: Connection) {
        if hub == nil { echoClients.wrappingSubtract(1, ordering: .relaxed) }
    }

    func closed(_ connection: Connection) {
        if !connection.admitted { lingeringRefusals.wrappingSubtract(1, ordering: .relaxed) }
    }

    /// Chat: everyone gets `* server shutting down` (queued in `deliveries`).
    func beginShutdown(deliveries: inout Deliveries) {
        hub?.shutdown(deliveries: &deliveries)
    }

    func serverStats() -> ServerStats {
        let transport = counters.transport(strategy: strategy, uptimeSeconds: context.uptimeSeconds, extra: extraStats())
        if let hub { return hub.serverStats(transport: transport) }
        return .echo(clients: echoClients.load(ordering: .relaxed), transport: transport)
    }
}

/// Wire counters: relaxed atomics, each written with one uncontended add.
final class ServerCounters: Sendable {
    let connectionsTotal = Atomic<Int>(0)
    let refused = Atomic<Int>(0)
    let bytesIn = Atomic<Int>(0)
    let bytesOut = Atomic<Int>(0)
    /// Echo mode only (chat lines are counted by the core).
    let messagesIn = Atomic<Int>(0)
    let messagesOut = Atomic<Int>(0)
    /// Abuse limits (§3.6) and failures, by kind.
    let rateLimited = Atomic<Int>(0)
    let sendTimeouts = Atomic<Int>(0)
    let lineTimeouts = Atomic<Int>(0)
    let idleTimeouts = Atomic<Int>(0)
    let slowConsumers = Atomic<Int>(0)

    /// Counts a session ended by a limit (other reasons count nowhere).
    func expired(_ reason: DisconnectReason) {
        switch reason {
        case .sendTimeout: add(sendTimeouts, 1)
        case .lineTimeout: add(lineTimeouts, 1)
        case .idleTimeout: add(idleTimeouts, 1)
        case .slowConsumer: add(slowConsumers, 1)
        case .endOfInput, .quit, .connectionError: break
        }
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

    func transport(strategy: Strategy, uptimeSeconds: Int, extra: [TransportStats.Pair]) -> TransportStats {
        TransportStats(
            strategy: strategy.rawValue, uptimeSeconds: uptimeSeconds,
            connectionsTotal: connectionsTotal.load(ordering: .relaxed), refused: refused.load(ordering: .relaxed),
            bytesIn: bytesIn.load(ordering: .relaxed), bytesOut: bytesOut.load(ordering: .relaxed),
            messagesIn: messagesIn.load(ordering: .relaxed), messagesOut: messagesOut.load(ordering: .relaxed),
            extra: limitPairs + extra)
    }

    @inline(__always)
    func add(_ counter: borrowing Atomic<Int>, _ value: Int) {
        if value != 0 { counter.wrappingAdd(value, ordering: .relaxed) }
    }

    @inline(__always)
    func received(_ bytes: UnsafeRawBufferPointer, countLines: Bool) {
        add(bytesIn, bytes.count)
        if countLines { add(messagesIn, countNewlines(bytes)) }
    }

    @inline(__always)
    func sent(_ bytes: UnsafeRawBufferPointer, countLines: Bool) {
        add(bytesOut, bytes.count)
        if countLines { add(messagesOut, countNewlines(bytes)) }
    }
}

/// An atomic count a closure can capture (an `Atomic` itself cannot be).
final class SharedCount: Sendable {
    let value = Atomic<Int>(0)
}
