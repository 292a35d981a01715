import EchoChatCore
import EchoChatPOSIX
import Synchronization

/// A concurrency strategy: serves a bound listener until shut down.
public protocol ServerStrategy: AnyObject, Sendable {
    /// Serves until a requested shutdown has completed. Call from one thread.
    func run() throws(SystemError)
    /// Begins the graceful shutdown of PROTOCOL.md §4. Safe from any thread.
    func requestShutdown()
    /// Asks the server to log a `stats:` line (SIGUSR1). Safe from any thread;
    /// the line is written by the server's own loop, which owns the counters.
    func requestStatsReport()
    /// The `/stats` counters; call from any thread after `run()` returned, or
    /// from the thread that runs the server.
    func serverStats() -> ServerStats
}

/// What every strategy shares: settings, logger, start time.
public struct ServerContext: Sendable {
    /// The settings at start. Fields that SIGHUP can change are read through
    /// `settings` instead (see `LiveSettings`).
    public let configuration: ServerConfiguration
    public let settings: RuntimeSettings
    public let logger: Logger
    public let startedAt: Int64

    public init(configuration: ServerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.settings = RuntimeSettings(configuration)
        self.logger = logger
        self.startedAt = Clock.monotonicNanoseconds()
    }

    public var uptimeSeconds: Int { Int((Clock.monotonicNanoseconds() - startedAt) / 1_000_000_000) }

    /// Creates the strategy `configuration.strategy` names, on `listener`.
    public func makeServer(listener: Socket) throws(SystemError) -> any ServerStrategy {
        switch configuration.strategy {
        case .epoll: try EpollServer(context: self, listener: listener)
        case .thread: try ThreadServer(context: self, listener: listener)
        case .pool: try PoolServer(context: self, listener: listener)
        }
    }
}

/// The configuration as it is now: SIGHUP may publish a new one, changing
/// only the settings that make sense while running (`reloadable`).
public final class RuntimeSettings: Sendable {
    private let current: Lock<ServerConfiguration>
    private let generation = Atomic<Int>(0)

    /// The settings a reload may change; the rest need a restart.
    public static let reloadable = ["log-level", "max-clients", "idle-timeout", "line-timeout", "close-timeout", "shutdown-timeout"]

    init(_ configuration: ServerConfiguration) {
        current = Lock(configuration)
    }

    public var configuration: ServerConfiguration { current.withLock { $0 } }

    /// Bumped by every `apply`; readers compare it to refresh their copies.
    public var version: Int { generation.load(ordering: .acquiring) }

    /// Takes the reloadable settings from `new`; returns the names of the
    /// other settings that differ (they keep their running values).
    @discardableResult
    public func apply(_ new: ServerConfiguration) -> [String] {
        let ignored = current.withLock { running -> [String] in
            var ignored: [String] = []
            for (name, differs) in [
                ("host", new.host != running.host), ("port", new.port != running.port),
                ("mode", new.mode != running.mode), ("strategy", new.strategy != running.strategy),
                ("max-line", new.maxLine != running.maxLine), ("max-output", new.maxOutput != running.maxOutput),
                ("workers", new.workers != running.workers), ("thread-stack", new.threadStack != running.threadStack),
                ("daemon", new.daemon != running.daemon), ("pidfile", new.pidFile != running.pidFile),
                ("log-file", new.logFile != running.logFile),
            ] where differs {
                ignored.append(name)
            }
            running.logLevel = new.logLevel
            running.maxClients = new.maxClients
            running.idleTimeout = new.idleTimeout
            running.lineTimeout = new.lineTimeout
            running.closeTimeout = new.closeTimeout
            running.shutdownTimeout = new.shutdownTimeout
            return ignored
        }
        generation.wrappingAdd(1, ordering: .releasing)
        return ignored
    }
}

/// One thread's copy of the live settings: `refresh()` costs one atomic load
/// when nothing changed, so loops call it every iteration.
struct LiveSettings {
    private let settings: RuntimeSettings
    private var version: Int
    private(set) var limits: Limits
    private(set) var closeTimeout: Int64
    private(set) var shutdownTimeout: Int64

    init(_ settings: RuntimeSettings) {
        self.settings = settings
        version = settings.version
        let configuration = settings.configuration
        limits = configuration.limits
        closeTimeout = Int64(configuration.closeTimeout * 1e9)
        shutdownTimeout = Int64(configuration.shutdownTimeout * 1e9)
    }

    @inline(__always)
    mutating func refresh() {
        if settings.version != version { self = LiveSettings(settings) }
    }
}

/// Requests from other threads (the signal watcher) to a strategy's loop: a
/// flag per request and one eventfd the loop polls. The loop owns all state,
/// so it is the loop that acts on them.
final class ControlRequests: Sendable {
    let wakeup: Wakeup
    private let shutdown = Atomic<Bool>(false)
    private let stats = Atomic<Bool>(false)

    init() throws(SystemError) {
        wakeup = try Wakeup()
    }

    deinit { wakeup.close() }

    func requestShutdown() {
        shutdown.store(true, ordering: .releasing)
        wakeup.ring()
    }

    func requestStats() {
        stats.store(true, ordering: .releasing)
        wakeup.ring()
    }

    var shutdownRequested: Bool { shutdown.load(ordering: .acquiring) }

    /// True once per `requestStats()`.
    func takeStatsRequest() -> Bool { stats.exchange(false, ordering: .acquiring) }
}
