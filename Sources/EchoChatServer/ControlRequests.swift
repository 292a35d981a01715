import EchoChatPOSIX
import Synchronization

/// Requests from other threads (the signal watcher, the file store, other
/// loops) to a strategy's loop: a flag per request, locked lists, and one
/// eventfd the loop polls. The loop owns all state, so it is the loop that
/// acts on them.
public final class ControlRequests: Sendable {
    let wakeup: Wakeup
    /// Reactors: the number of the loop this is the inbox of (0 otherwise).
    let loop: Int
    private let shutdown = Atomic<Bool>(false)
    private let stats = Atomic<Bool>(false)
    /// Connections other threads (the file store, other loops) ask the loop to serve.
    private let woken = Lock(Mail())
    /// Reactors: connections the acceptor admitted for this loop, not yet watched.
    private let accepted = Lock(Mail())
    /// Reactors: the connections the loop holds open, for `/stats` (only the loop writes it).
    let connections = Atomic<Int>(0)

    init(loop: Int = 0) throws(SystemError) {
        wakeup = try Wakeup()
        self.loop = loop
    }

    deinit { wakeup.close() }

    /// Begins the graceful shutdown of docs/PROTOCOL.md §4.
    public func requestShutdown() {
        shutdown.store(true, ordering: .releasing)
        wakeup.ring()
    }

    /// Asks the loop to log a `stats:` line (SIGUSR1).
    public func requestStats() {
        stats.store(true, ordering: .releasing)
        wakeup.ring()
    }

    var shutdownRequested: Bool { shutdown.load(ordering: .acquiring) }

    /// A list of connections, and whether the loop has stopped taking them.
    private struct Mail {
        var list: [Connection] = []
        var closed = false
    }

    /// Asks the loop to serve `connection` (it has mail from another thread).
    func wake(_ connection: Connection) {
        let ring = woken.withLock { mail in
            if !mail.closed { mail.list.append(connection) }
            return !mail.closed
        }
        if ring { wakeup.ring() }
    }

    /// Asks the loop to serve all of `connections`: one lock, and one eventfd
    /// write only if the list was empty (otherwise the write that made it
    /// non-empty is still to be drained, and the loop drains before it takes).
    func wake(_ connections: [Connection]) {
        let ring = woken.withLock { mail in
            guard !mail.closed else { return false }
            defer { mail.list.append(contentsOf: connections) }
            return mail.list.isEmpty
        }
        if ring { wakeup.ring() }
    }

    /// The connections to serve, swapped into `list` (which must be empty),
    /// so neither side allocates in the steady state.
    func takeWoken(swapping list: inout [Connection]) {
        woken.withLock { swap(&$0.list, &list) }
    }

    /// Hands newly accepted connections to the loop (as `wake(_:)` rings).
    /// Connections handed to a loop that has stopped are closed here.
    func hand(_ connections: [Connection]) {
        let (ring, closed) = accepted.withLock { mail in
            guard !mail.closed else { return (false, true) }
            defer { mail.list.append(contentsOf: connections) }
            return (mail.list.isEmpty, false)
        }
        if closed { for connection in connections { connection.forceClose() } }
        if ring { wakeup.ring() }
    }

    /// The connections handed over since the last call.
    func takeAccepted() -> [Connection] {
        accepted.withLock { mail in
            defer { mail.list.removeAll() }
            return mail.list
        }
    }

    /// The loop has stopped: later wake-ups are dropped and later hand-overs
    /// closed, and what is waiting is let go of (the connections handed over
    /// are returned, to be closed). Mail that came after its loop stopped
    /// would otherwise hold its connections, and through them the layer
    /// that holds this inbox: a cycle nothing frees (LeakSanitizer saw it
    /// when a reactors loop stopped while another still routed it lines).
    func close() -> [Connection] {
        woken.withLock { mail in
            mail.closed = true
            mail.list = []
        }
        return accepted.withLock { mail in
            defer { mail = Mail(closed: true) }
            return mail.list
        }
    }

    /// True once per `requestStats()`.
    func takeStatsRequest() -> Bool { stats.exchange(false, ordering: .acquiring) }
}
