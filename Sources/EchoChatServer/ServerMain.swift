import EchoChatCore
import EchoChatOptions
import EchoChatPOSIX

/// `echochat-server`: parse options, detach if asked, bind, start the chosen
/// strategy, wire the signals, run until shut down. Returns the exit status.
public enum ServerMain {
    /// Descriptors the server needs besides its clients: stdio, the listener,
    /// epoll, eventfds, the pid file, the reserve descriptor, lingering refusals.
    static let reservedDescriptors = 16

    /// `reservedDescriptors`, and what the metrics endpoint may hold if it
    /// is on, and each further reactors loop (its epoll and eventfd).
    static func reservedDescriptors(for configuration: ServerConfiguration) -> Int {
        let loops = configuration.strategy == .reactors ? 2 * (configuration.effectiveLoops - 1) : 0
        return reservedDescriptors + loops + (configuration.metrics == nil ? 0 : MetricsServer.descriptors)
    }

    public static func run(_ arguments: [String]) -> Int32 {
        var configuration: ServerConfiguration
        // Relative paths keep meaning what they meant here, also on a SIGHUP
        // reload after a daemon has changed directory to /.
        let directory = startDirectory()
        switch parse(arguments, directory: directory) {
        case .failure(let error):
            System.writeToStandardError(ServerOptions.errorText(error))
            return usageExitStatus
        case .success(.help):
            System.writeToStandardOutput(ServerOptions.helpText)
            return 0
        case .success(.version):
            System.writeToStandardOutput(ServerOptions.versionText)
            return 0
        case .success(.checkConfig(let settings)):
            System.writeToStandardOutput(ServerOptions.render(settings))
            return 0
        case .success(.run(let settings)):
            configuration = settings
        }
        // A daemon changes directory to /; relative paths must keep meaning
        // the same files (and the config file is re-read on SIGHUP).
        absolutePaths(&configuration, directory: directory)

        // From here on, failures go to the launcher when detached.
        var readiness: Daemon.Readiness?
        if configuration.daemon {
            // The launcher detaches and executes this program again; the new
            // image (the daemon) finds the readiness pipe and carries on.
            readiness = Daemon.adopt()
            if readiness == nil {
                do {
                    try Daemon.detach(relaunching: [CommandLine.arguments.first ?? "echochat-server"] + arguments)
                } catch {
                    System.writeToStandardError("Error: cannot start a daemon: \(error)\n")
                    return 1
                }
            }
        }
        func fail(_ message: String) -> Int32 {
            if let readiness {
                readiness.failed(message)
            } else {
                System.writeToStandardError("Error: \(message)\n")
            }
            return 1
        }
        let logFile: LogFile?
        do {
            logFile = try configuration.logFile.map { (path) throws(SystemError) in try LogFile(path: path) }
        } catch {
            return fail("cannot open the log file: \(error)")
        }

        // Before any thread exists, so every thread inherits the mask and only
        // the watcher thread receives these signals.
        Signals.ignoreBrokenPipe()
        Signals.ignoreFileSizeLimit()
        let handled: [Signal] = [.interrupt, .terminate, .hangup, .user1]
        Signals.block(handled)

        let logger = Logger(level: configuration.logLevel)
        fitMaxClientsToDescriptors(&configuration, logger: logger)
        let pidFile: PidFile?
        do {
            pidFile = try configuration.pidFile.map { (path) throws(SystemError) in try PidFile(path: path) }
        } catch {
            return fail("\(error)")
        }
        let listener: Socket
        do {
            listener = try Socket.listen(host: configuration.host, port: configuration.port)
        } catch {
            pidFile?.remove()
            return fail("cannot listen on \(configuration.host):\(configuration.port): \(error.errno)")
        }
        var metrics: MetricsServer?
        if let endpoint = configuration.metrics {
            do {
                metrics = try MetricsServer(endpoint: endpoint, logger: logger)
            } catch {
                listener.close()
                pidFile?.remove()
                return fail("cannot listen for metrics on \(endpoint): \(error.errno)")
            }
        }
        var files: FileStore?
        if let directory = configuration.uploadDir, configuration.mode == .chat {
            do {
                let sharing = FileSharing(maxUpload: configuration.maxUpload, quota: configuration.uploadQuota)
                let store = try FileStore(path: directory, sharing: sharing, logger: logger)
                try store.start()
                files = store
                if store.removedPartials > 0 { logger.info("removed \(store.removedPartials) partial uploads left in \(directory)") }
                logger.info("file sharing in \(directory): \(store.catalog.count) files, \(store.catalog.storedBytes) bytes")
            } catch {
                metrics?.shutDown()
                listener.close()
                pidFile?.remove()
                return fail("\(error.operation)")
            }
        }
        var cluster: ClusterLink?
        if let url = configuration.cluster {
            if configuration.mode == .chat {
                let port = (try? listener.localAddress())?.port ?? configuration.port
                let node = configuration.nodeID ?? "\(System.hostName):\(port)"
                do {
                    cluster = try ClusterLink(url: url, node: node, timeoutSeconds: configuration.clusterTimeout, logger: logger)
                } catch {
                    files?.stop()
                    metrics?.shutDown()
                    listener.close()
                    pidFile?.remove()
                    return fail("cannot start the cluster link: \(error)")
                }
            } else {
                logger.warn("--cluster is for chat mode; echo mode serves alone")
            }
        }
        let context = ServerContext(configuration: configuration, logger: logger, files: files, cluster: cluster)
        let server: any ServerStrategy
        do {
            try pidFile?.write()
            server = try context.makeServer(listener: listener)
            let control = server.control
            let reload = Reloader(arguments: arguments, directory: directory, context: context, logFile: logFile)
            // A stop signal can come twice (timeout(1) signals the command and
            // then its process group): the shutdown is said once.
            let stopping = Lock(false)
            try Signals.watch(handled) { signal in
                switch signal {
                case .hangup:
                    reload.reload()
                case .user1:
                    control.requestStats()
                default:
                    if stopping.withLock({ (already: inout Bool) in defer { already = true }; return already }) {
                        logger.debug("received \(signal) again: already shutting down")
                    } else {
                        logger.info("received \(signal), shutting down")
                    }
                    control.requestShutdown()
                }
            }
            cluster?.start()
            if let metrics {
                let stats = StatsReader(server: server)
                try metrics.start { let stats = stats.server.serverStats(); return stats.pairs + stats.transport.detail }
                logger.info("metrics on http://\(metrics.address)/metrics")
            }
        } catch {
            metrics?.shutDown()
            pidFile?.remove()
            return fail("cannot start the server: \(error)")
        }
        let address = (try? listener.localAddress())?.description ?? "\(configuration.host):\(configuration.port)"
        logger.info(
            "listening on \(address) (mode=\(configuration.mode.rawValue) strategy=\(configuration.strategy.rawValue) pid=\(System.processID))"
        )
        readiness?.ready()
        var status: Int32 = 0
        do {
            try server.run()
            logger.info("stopped: \(server.serverStats().keyValues)")
        } catch {
            logger.error("server failed: \(error)")
            status = 1
        }
        cluster?.stop()
        files?.stop()
        metrics?.shutDown()
        pidFile?.remove()
        return status
    }

    /// Settings from the config file, the process's environment and
    /// `arguments`. The environment is read, never changed, so a reload that
    /// parses again sees the same variables as the start did.
    static func parse(_ arguments: [String], directory: String) -> Result<ServerOptions.Command, UsageError> {
        Result { () throws(UsageError) in
            try ServerOptions.parse(arguments, environment: System.environmentVariable) { path in
                String(decoding: try System.readFile(absolute(path, in: directory)), as: UTF8.self)
            }
        }
    }

    /// The working directory at start, to resolve relative paths against.
    static func startDirectory() -> String {
        let here = System.absolutePath(".")
        guard here.hasSuffix("/.") else { return here }
        let trimmed = String(here.dropLast(2))
        return trimmed.isEmpty ? "/" : trimmed
    }

    static func absolute(_ path: String, in directory: String) -> String {
        path.hasPrefix("/") ? path : (directory.hasSuffix("/") ? directory : directory + "/") + path
    }

    static func absolutePaths(_ configuration: inout ServerConfiguration, directory: String) {
        configuration.pidFile = configuration.pidFile.map { absolute($0, in: directory) }
        configuration.logFile = configuration.logFile.map { absolute($0, in: directory) }
        configuration.configFile = configuration.configFile.map { absolute($0, in: directory) }
    }

    /// The start-up self-check: if RLIMIT_NOFILE cannot hold `max-clients`
    /// plus the server's own descriptors, raise the soft limit (up to the hard
    /// limit); if that is still too low, lower `max-clients` to fit and say so.
    static func fitMaxClientsToDescriptors(_ configuration: inout ServerConfiguration, logger: Logger) {
        let reserved = reservedDescriptors(for: configuration)
        let needed = configuration.maxClients + reserved
        var limit = System.openFileLimit()
        if limit.soft < needed && limit.soft < limit.hard {
            let raised = min(limit.hard, needed)
            if (try? System.setOpenFileLimit(soft: raised)) != nil {
                logger.info("raised the open-file limit from \(limit.soft) to \(raised)")
            }
            limit = System.openFileLimit()
        }
        guard limit.soft < needed else { return }
        let fitted = max(1, limit.soft - reserved)
        logger.warn(
            "the open-file limit (\(limit.soft), hard \(limit.hard)) cannot hold max-clients \(configuration.maxClients) "
                + "plus \(reserved) for the server: lowering max-clients to \(fitted)")
        configuration.maxClients = fitted
    }
}

/// SIGHUP: reopen the log file (logrotate's rename-then-signal) and re-read
/// the config file, building the settings as at start: defaults < the file
/// as it is now < the same environment < the same flags, so whatever the
/// environment or a flag set still overrides the file.
/// Only the settings in `RuntimeSettings.reloadable` change while running.
final class Reloader: Sendable {
    let arguments: [String]
    /// The directory the server started in: relative paths are resolved against it.
    let directory: String
    let context: ServerContext
    let logFile: LogFile?

    init(arguments: [String], directory: String, context: ServerContext, logFile: LogFile?) {
        self.arguments = arguments
        self.directory = directory
        self.context = context
        self.logFile = logFile
    }

    func reload() {
        let logger = context.logger
        if let logFile {
            do {
                try logFile.reopen()
                logger.info("SIGHUP: reopened the log file \(logFile.path)")
            } catch {
                logger.error("SIGHUP: cannot reopen the log file: \(error)")
            }
        }
        // Files put in the upload directory by hand are listed from now on.
        context.files?.lookForFiles()
        guard context.configuration.configFile != nil else {
            logger.info("SIGHUP: no config file to re-read")
            return
        }
        switch ServerMain.parse(arguments, directory: directory) {
        case .failure(let error):
            logger.error("SIGHUP: config not reloaded, keeping the running settings: \(error.message)")
        case .success(.run(var new)):
            ServerMain.absolutePaths(&new, directory: directory)
            ServerMain.fitMaxClientsToDescriptors(&new, logger: logger)
            let ignored = context.settings.apply(new)
            logger.level = new.logLevel
            let now = context.settings.configuration
            logger.info(
                "SIGHUP: reloaded log-level=\(now.logLevel.rawValue) max-clients=\(now.maxClients) "
                    + "idle-timeout=\(ServerOptions.format(now.idleTimeout)) line-timeout=\(ServerOptions.format(now.lineTimeout)) "
                    + "send-timeout=\(ServerOptions.format(now.sendTimeout)) rate-limit=\(now.rateLimit) rate-burst=\(now.rateBurst) "
                    + "close-timeout=\(ServerOptions.format(now.closeTimeout)) shutdown-timeout=\(ServerOptions.format(now.shutdownTimeout)) "
                    + "max-per-address=\(now.maxPerAddress)")
            if !ignored.isEmpty {
                logger.warn("SIGHUP: changed but only applied after a restart: \(ignored.joined(separator: ", "))")
            }
        case .success:
            break
        }
    }
}

/// Hands the strategy to the metrics thread, which only calls its
/// `serverStats()`.
/// @unchecked Sendable: `serverStats()` is safe from any thread in every
/// strategy (it reads the connection layer's atomics and the hub under its
/// lock; see `ServerStrategy`); nothing else is called through this.
private struct StatsReader: @unchecked Sendable {
    let server: any ServerStrategy
}
