import EchoChatPOSIX
import Synchronization

/// Requests from other threads (the signal watcher) to a strategy's loop: a
/// flag per request and one eventfd the loop polls. The loop owns all state,
/// so it is the loop that acts on them.
public final class ControlRequests: Sendable {
    let wakeup: Wakeup
    private let shutdown = Atomic<Bool>(false)
    private let stats = Atomic<Bool>(false)
    /// Connections another thread (the file store) asks the loop to serve.
    private let woken = Lock<[Connection]>([])

    init() throws(SystemError) {
        wakeup = try Wakeup()
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

    /// Asks the loop to serve `connection` (it has mail from another thread).
    func wake(_ connection: Connection) {
        woken.withLock { $0.append(connection) }
        wakeup.ring()
    }

    /// The connections to serve, once each request.
    func takeWoken() -> [Connection] {
        woken.withLock { list in
            defer { list.removeAll() }
            return list
        }
    }

    /// True once per `requestStats()`.
    func takeStatsRequest() -> Bool { stats.exchange(false, ordering: .acquiring) }
}
