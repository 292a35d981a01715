import EchoChatCore
import EchoChatPOSIX

/// Every setting of `echochat-server`, with its default. Flags, the
/// environment and the config file set the same fields through the same
/// table (`ServerOptions.parser`).
public struct ServerConfiguration: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port = 7007
    public var mode: ServerMode = .echo
    public var strategy: Strategy = .epoll
    public var maxClients = 10_000
    /// Connections one source address may hold; 0 = no limit.
    public var maxPerAddress = 0
    public var maxLine = 4096
    public var maxOutput = 1 << 20
    /// Seconds; 0 = off.
    public var idleTimeout = 0.0
    /// Seconds; 0 = off. Chat only (echo has no lines).
    public var lineTimeout = 60.0
    /// Seconds output may wait with none of it taken before the connection
    /// is closed; 0 = off.
    public var sendTimeout = 60.0
    /// Chat: lines per second per client; 0 = off.
    public var rateLimit = 0
    /// Chat: lines at once before the rate applies; 0 = twice `rateLimit`.
    public var rateBurst = 0
    /// Seconds to deliver what is owed after SIGTERM/SIGINT.
    public var shutdownTimeout = 5.0
    /// Seconds a client whose session is over (quit, EOF, timeout, refusal)
    /// has to take its last output before the server closes it anyway.
    public var closeTimeout = 30.0
    public var logLevel: LogLevel = .info
    /// Pool strategy: worker threads; nil = the CPUs this process may use.
    public var workers: Int?
    /// Reactors strategy: event loops; nil = the CPUs this process may use.
    public var loops: Int?
    /// Thread strategy: stack size of each client thread, in bytes.
    public var threadStack = 256 * 1024
    public var configFile: String?
    /// Detach and run in the background (the launcher exits once it listens).
    public var daemon = false
    /// Written after the listener is bound, locked while running, removed at exit.
    public var pidFile: String?
    /// Log lines (and anything else on stderr) go here; SIGHUP reopens it.
    public var logFile: String?
    /// Where to serve Prometheus metrics (`GET /metrics`); nil = nowhere.
    public var metrics: Endpoint?
    /// Chat: where shared files are kept; nil = file sharing is off.
    public var uploadDir: String?
    /// Chat: the largest file one `/upload` may send, in bytes.
    public var maxUpload = FileSharing.defaultMaxUpload
    /// Chat: the total size of all stored files, in bytes.
    public var uploadQuota = FileSharing.defaultQuota
    /// Chat: the Redis that joins this server to a cluster; nil = standalone.
    public var cluster: RedisURL?
    /// Seconds after which a silent node is declared lost (and a Redis
    /// request unanswered, the link down).
    public var clusterTimeout = 10.0
    /// This server's name in the cluster; nil = `hostname:port`.
    public var nodeID: String?

    public init() {}

    /// The pool's worker count after applying the default.
    public var effectiveWorkers: Int { workers ?? max(1, Threads.availableCores) }

    /// The reactors' loop count after applying the default.
    public var effectiveLoops: Int { loops ?? Threads.availableCores }

    /// The limits the protocol core decides with.
    public var limits: Limits {
        Limits(
            maxClients: maxClients, maxLine: maxLine, maxOutput: maxOutput,
            idleTimeoutNanoseconds: Int64(idleTimeout * 1e9), lineTimeoutNanoseconds: Int64(lineTimeout * 1e9),
            sendTimeoutNanoseconds: Int64(sendTimeout * 1e9), rateLimit: rateLimit, rateBurst: rateBurst,
            maxPerAddress: maxPerAddress)
    }
}

/// A host and a port to listen on: `127.0.0.1:9107`, `[::1]:9107`.
public struct Endpoint: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// IPv6 addresses in brackets, as in a URL.
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
