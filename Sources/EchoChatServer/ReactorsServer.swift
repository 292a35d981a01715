import EchoChatCore
import EchoChatPOSIX

/// The reactors strategy: N event loops (`--loops`, default: the CPUs this
/// process may run on), each an `EventLoop` (the epoll strategy's loop) that
/// owns its connections outright: memcached's, nginx's and SwiftNIO's model.
///
/// - Threads: the caller of `run()` runs loop 0 (the primary: the signal
///   watcher's `control` is its inbox); loops 1..N-1 get a thread each.
/// - Accepting: loop 0 alone accepts (the one `Acceptor`, so EMFILE handling
///   and the accept pause are exactly epoll's) and admits (so in accept
///   order), and hands each connection to the next loop round-robin, a
///   batch's share for each loop at once through that loop's inbox; that
///   loop watches and serves it from then on. Measured against one
///   SO_REUSEPORT listener per loop (docs/strategies.md): as fast on echo,
///   slower in a connect storm, but even spreading without the kernel's
///   hash, and no SO_REUSEPORT group on the port that another process of
///   the same user could join.
/// - Ownership: a connection belongs to the loop that admitted it, for its
///   whole life (`Connection.owner`). Echo never leaves its loop. A chat line
///   is queued by the shared hub (one lock) on each recipient in hub order;
///   at the end of the sender's batch, the recipients of each other loop go
///   to that loop's inbox in one list (one lock, one eventfd write), and that
///   loop sends. No lock is held while a socket is written.
/// - Capacity: as epoll, for the server as a whole: `max-clients` and
///   `max-per-address` are counted in the shared `ConnectionLayer`.
/// - Shutdown: the primary closes its listener, queues the chat notice once,
///   and asks every other loop to stop; each drains its own connections until
///   none is left or `shutdown-timeout` has passed; `run()` joins them all.
public final class ReactorsServer: ServerStrategy {
    public let control: ControlRequests
    private let layer: ConnectionLayer
    private let loops: [EventLoop<ServeDirectly>]

    public init(context: ServerContext, listener: Socket) throws(SystemError) {
        let count = context.configuration.effectiveLoops
        var inboxes: [ControlRequests] = []
        for loop in 0..<count { inboxes.append(try ControlRequests(loop: loop)) }
        let peers = inboxes
        layer = ConnectionLayer(context: context, strategy: .reactors, inboxes: inboxes) {
            [.init("loops", String(count))]
                + peers.map { .init("loop\($0.loop)_connections", String($0.connections.load(ordering: .relaxed))) }
        }
        control = inboxes[0]
        layer.setWaker { connection in connection.owner.inbox?.wake(connection) }
        var loops: [EventLoop<ServeDirectly>] = []
        for loop in 0..<count {
            loops.append(
                try EventLoop(
                    layer: layer, inbox: inboxes[loop], listener: loop == 0 ? listener : nil, peers: count > 1 ? inboxes : [],
                    primary: loop == 0, driver: ServeDirectly()))
        }
        self.loops = loops
    }

    public func serverStats() -> ServerStats { layer.serverStats() }

    public func run() throws(SystemError) {
        let failure = Lock<SystemError?>(nil)
        var threads: [ThreadHandle] = []
        for loop in loops.dropFirst() {
            let handOff = LoopHandOff(loop: loop)
            let (layer, control) = (layer, control)
            do throws(SystemError) {
                threads.append(
                    try Threads.spawn(name: "loop \(loop.inbox.loop)") {
                        do throws(SystemError) {
                            try handOff.loop.run()
                        } catch {
                            layer.logger.error("loop \(handOff.loop.inbox.loop) failed: \(error)")
                            failure.withLock { $0 = $0 ?? error }
                            control.requestShutdown()
                        }
                    })
            } catch {
                control.requestShutdown()
                failure.withLock { $0 = $0 ?? error }
                break
            }
        }
        do {
            try loops[0].run()
        } catch {
            failure.withLock { $0 = $0 ?? error }
            for loop in loops.dropFirst() { loop.inbox.requestShutdown() }
        }
        for thread in threads { thread.join() }
        if let error = failure.withLock({ $0 }) { throw error }
    }
}

/// Moves a loop to the thread that runs it.
/// @unchecked Sendable: the loop is created on the caller of `run()` and then
/// touched only by the one thread it is handed to (`EventLoop.run()` claims it).
private struct LoopHandOff: @unchecked Sendable {
    let loop: EventLoop<ServeDirectly>
}
