import EchoChatCore
import EchoChatPOSIX
import Synchronization

/// A concurrency strategy: serves a bound listener until shut down. Only the
/// thread that calls `run()` touches the server; other threads (the signal
/// watcher) get its `control` handle.
public protocol ServerStrategy: AnyObject {
    /// Serves until a requested shutdown has completed.
    func run() throws(SystemError)
    /// Shutdown and stats requests from any thread (the signal watcher).
    var control: ControlRequests { get }
    /// The `/stats` counters. Safe from any thread (the metrics endpoint
    /// calls it from its own): it reads only the connection layer.
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
    /// Chat with an upload directory: the file store (§5).
    public let files: FileStore?
    /// Chat with `--cluster`: the link to the other servers (§6).
    public let cluster: ClusterLink?

    public init(configuration: ServerConfiguration, logger: Logger, files: FileStore? = nil, cluster: ClusterLink? = nil) {
        self.configuration = configuration
        self.files = configuration.mode == .chat ? files : nil
        self.cluster = configuration.mode == .chat ? cluster : nil
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
        case .reactors: try ReactorsServer(context: self, listener: listener)
        case .async: try AsyncServer(context: self, listener: listener)
        }
    }
}
