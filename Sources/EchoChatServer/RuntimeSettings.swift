import EchoChatCore
import EchoChatPOSIX
import Synchronization

/// The configuration as it is now: SIGHUP may publish a new one, changing
/// only the settings that make sense while running (`reloadable`).
public final class RuntimeSettings: Sendable {
    private let current: Lock<ServerConfiguration>
    private let generation = Atomic<Int>(0)

    /// The settings a reload may change; the rest need a restart.
    public static let reloadable = [
        "log-level", "max-clients", "max-per-address", "idle-timeout", "line-timeout", "send-timeout", "rate-limit",
        "rate-burst", "close-timeout", "shutdown-timeout",
    ]

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
                ("workers", new.workers != running.workers), ("loops", new.loops != running.loops),
                ("thread-stack", new.threadStack != running.threadStack),
                ("daemon", new.daemon != running.daemon), ("pidfile", new.pidFile != running.pidFile),
                ("log-file", new.logFile != running.logFile), ("metrics", new.metrics != running.metrics),
            ] where differs {
                ignored.append(name)
            }
            running.logLevel = new.logLevel
            running.maxClients = new.maxClients
            running.maxPerAddress = new.maxPerAddress
            running.idleTimeout = new.idleTimeout
            running.lineTimeout = new.lineTimeout
            running.sendTimeout = new.sendTimeout
            running.rateLimit = new.rateLimit
            running.rateBurst = new.rateBurst
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
    /// What connections are served with (without a shutdown deadline): one
    /// object for all of them until the settings change.
    private(set) var connection: SharedConnectionSettings
    /// The same with the shutdown deadline, once there is one.
    private var closing: SharedConnectionSettings?

    init(_ settings: RuntimeSettings) {
        self.settings = settings
        version = settings.version
        let configuration = settings.configuration
        limits = configuration.limits
        closeTimeout = Int64(configuration.closeTimeout * 1e9)
        shutdownTimeout = Int64(configuration.shutdownTimeout * 1e9)
        connection = SharedConnectionSettings(ConnectionSettings(limits: limits, closeTimeoutNanoseconds: closeTimeout))
    }

    /// The connection settings, with the shutdown deadline once there is one
    /// (the same object on every call while nothing changes).
    mutating func connection(shutdownDeadline: Int64?) -> SharedConnectionSettings {
        guard let shutdownDeadline else { return connection }
        if let closing, closing.value.shutdownDeadline == shutdownDeadline { return closing }
        var settings = connection.value
        settings.shutdownDeadline = shutdownDeadline
        let shared = SharedConnectionSettings(settings)
        closing = shared
        return shared
    }

    @inline(__always)
    mutating func refresh() {
        if settings.version != version { self = LiveSettings(settings) }
    }
}
