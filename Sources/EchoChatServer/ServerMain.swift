import EchoChatCore
import EchoChatPOSIX

/// `echochat-server`: parse options, bind, start the chosen strategy, wire the
/// signals, run until shut down. Returns the exit status.
public enum ServerMain {
    public static func run(_ arguments: [String]) -> Int32 {
        let command: ServerOptions.Command
        do {
            command = try ServerOptions.parse(arguments) { path in
                String(decoding: try System.readFile(path), as: UTF8.self)
            }
        } catch {
            System.writeToStandardError(ServerOptions.errorText(error))
            return 64
        }
        let configuration: ServerConfiguration
        switch command {
        case .help:
            System.writeToStandardOutput(ServerOptions.helpText)
            return 0
        case .version:
            System.writeToStandardOutput("echochat-server \(ServerOptions.version)\n")
            return 0
        case .run(let settings):
            configuration = settings
        }

        // Before any thread exists, so every thread inherits the mask and only
        // the watcher thread receives these signals.
        Signals.ignoreBrokenPipe()
        let handled: [Signal] = [.interrupt, .terminate]
        Signals.block(handled)

        let logger = Logger(level: configuration.logLevel)
        let listener: Socket
        do {
            listener = try Socket.listen(host: configuration.host, port: configuration.port)
        } catch {
            System.writeToStandardError("Error: cannot listen on \(configuration.host):\(configuration.port): \(error.errno)\n")
            return 1
        }
        let context = ServerContext(configuration: configuration, logger: logger)
        let server: any ServerStrategy
        do {
            server = try context.makeServer(listener: listener)
            try Signals.watch(handled) { signal in
                logger.info("received \(signal), shutting down")
                server.requestShutdown()
            }
        } catch {
            System.writeToStandardError("Error: cannot start the server: \(error)\n")
            return 1
        }
        let address = (try? listener.localAddress())?.description ?? "\(configuration.host):\(configuration.port)"
        logger.info(
            "listening on \(address) (mode=\(configuration.mode.rawValue) strategy=\(configuration.strategy.rawValue) pid=\(System.processID))")
        do {
            try server.run()
        } catch {
            logger.error("server failed: \(error)")
            return 1
        }
        logger.info("stopped: \(server.serverStats().keyValues)")
        return 0
    }
}
