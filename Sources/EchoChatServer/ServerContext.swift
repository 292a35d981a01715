import EchoChatCore
import EchoChatPOSIX

/// A concurrency strategy: serves a bound listener until shut down.
public protocol ServerStrategy: AnyObject, Sendable {
    /// Serves until a requested shutdown has completed. Call from one thread.
    func run() throws(SystemError)
    /// Begins the graceful shutdown of PROTOCOL.md §4. Safe from any thread.
    func requestShutdown()
    /// The `/stats` counters; call from any thread after `run()` returned, or
    /// from the thread that runs the server.
    func serverStats() -> ServerStats
}

/// What every strategy shares: settings, logger, start time.
public struct ServerContext: Sendable {
    public let configuration: ServerConfiguration
    public let logger: Logger
    public let startedAt: Int64

    public init(configuration: ServerConfiguration, logger: Logger) {
        self.configuration = configuration
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
