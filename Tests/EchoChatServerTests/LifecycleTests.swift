import EchoChatCore
import EchoChatOptions
import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// Start-up, IPv6, descriptor exhaustion and graceful shutdown, against every strategy.
@Suite("Lifecycle", .ownThreads)
struct LifecycleTests {
    @Test(arguments: Strategy.tested)
    func startLineShowsTheRealPortAndStrategy(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: strategy)
        #expect(server.port > 0)
        let line = try #require(server.log.lines.first { $0.contains("listening on") })
        #expect(line.contains("127.0.0.1:\(server.port)"))
        #expect(line.contains("mode=echo"))
        #expect(line.contains("strategy=\(strategy.rawValue)"))
        #expect(line.contains(" INFO "))
    }

    @Test(arguments: Strategy.tested, ServerMode.allCases)
    func servesIPv6(strategy: Strategy, mode: ServerMode) throws {
        let server = try ServerProcess(["--mode", mode.rawValue], strategy: strategy, host: "::1")
        #expect(server.log.lines.contains { $0.contains("listening on [::1]:\(server.port)") })
        let client = try server.connect()
        if mode == .chat {
            #expect(try client.readLine() == "* welcome guest1, you are in #lobby (1 here); /help lists commands")
        } else {
            try client.send("over v6\n")
            #expect(try client.readLine() == "over v6")
        }
    }

    @Test(arguments: Strategy.tested)
    func sigtermInChatNotifiesEveryoneAndExitsZero(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat"], strategy: strategy)
        let (alice, _) = try server.joinChat()
        let (bob, _) = try server.joinChat()
        _ = try alice.readLine()
        try bob.send("/join other\n")
        _ = try bob.readLine()
        _ = try alice.readLine()
        server.signal(.terminate)
        for client in [alice, bob] {
            #expect(try client.readLine() == "* server shutting down")
            #expect(try client.isClosedByServer())  // and no left notices before the close
        }
        #expect(try server.waitForExit(timeout: 10) == 0)
        #expect(server.log.lines.contains { $0.contains("stopped:") })
        #expect(throws: (any Error).self) { try server.connect(timeout: 1) }
    }

    /// An idle echo client is let go at once, not at the shutdown deadline:
    /// nothing is owed to it, and whatever waits for it must be woken.
    @Test(arguments: Strategy.tested)
    func sigtermInEchoDeliversWhatIsOwed(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "echo", "--shutdown-timeout", "120"], strategy: strategy)
        let client = try server.connect()
        let idle = try server.connect()
        try client.send("before shutdown\n")
        #expect(try client.readLine() == "before shutdown")
        #expect(try server.stop(.interrupt, timeout: 60) == 0)
        #expect(try client.isClosedByServer())
        #expect(try idle.isClosedByServer())
    }

    /// A stop signal that comes again during the shutdown (timeout(1) sends
    /// one to the command and one to its process group) is not announced
    /// twice. Strategy-independent (the signal watcher is shared): one strategy.
    @Test func aSecondStopSignalIsNotAnnouncedAgain() throws {
        let server = try ServerProcess(
            ["--mode", "echo", "--max-output", "64K", "--shutdown-timeout", "3", "--log-level", "debug"], strategy: .epoll)
        // Output owed to a client that reads nothing keeps the shutdown
        // going until its deadline: the window for the second signal.
        let stuck = try server.connect(timeout: 1, receiveBuffer: .small)
        let chunk = [UInt8](repeating: 0x61, count: 64 * 1024)
        for _ in 0..<64 { if (try? stuck.send(chunk)) == nil { break } }
        #expect(server.signal(.terminate))
        #expect(server.log.waitFor({ $0.contains("received SIGTERM, shutting down") }, timeout: 10) != nil)
        #expect(server.signal(.terminate), "the server was still shutting down")
        #expect(server.log.waitFor({ $0.contains("received SIGTERM again: already shutting down") }, timeout: 10) != nil)
        #expect(try server.waitForExit(timeout: 30) == 0)
        #expect(server.log.lines.filter { $0.contains("shutting down") && !$0.contains("again") }.count == 1, "\(server.log.lines)")
    }

    /// With a tiny descriptor limit the server refuses what it cannot hold —
    /// with the server-full line, not a hang — keeps serving its clients, and
    /// accepts again once descriptors free up.
    @Test(arguments: Strategy.tested)
    func survivesDescriptorExhaustion(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: strategy)
        try server.lowerOpenFileLimit(to: 48)
        var clients: [TestClient] = []
        var refusals = 0
        for index in 0..<80 {
            let client = try server.connect()
            try? client.send("hello \(index)\n")
            switch try? client.readLine() {
            case "hello \(index)"?: clients.append(client)
            case "! server full, try again later"?: refusals += 1
            case let other: Issue.record("client \(index) got \(String(describing: other))")
            }
        }
        #expect(clients.count >= 20, "the server should hold most of its descriptors for clients")
        #expect(refusals > 0, "some clients must have been refused")
        // Existing clients are still served.
        for (index, client) in clients.enumerated() {
            try client.send("still \(index)\n")
            #expect(try client.readLine() == "still \(index)")
        }
        // Free some descriptors: new clients are accepted again (bounded retries,
        // since the server learns of the closes asynchronously).
        for client in clients.prefix(10) { client.close() }
        var admitted = false
        for attempt in 0..<100 where !admitted {
            let client = try server.connect()
            try? client.send("again \(attempt)\n")
            admitted = (try? client.readLine()) == "again \(attempt)"
        }
        #expect(admitted)
        #expect(try server.stop() == 0)
    }
}

/// Flags, config file and exit codes of the real binary.
@Suite("Command line", .ownThreads)
struct CommandLineTests {
    /// The server binary run to completion through the shared runner
    /// (pipes read concurrently, a deadline, the status as a shell shows it).
    func run(_ arguments: [String]) throws -> ProgramResult {
        try runProgram(ServerProcess.binary, arguments, timeout: 30)
    }

    @Test func helpListsEveryOptionWithDefaults() throws {
        let result = try run(["--help"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("USAGE: echochat-server"))
        #expect(result.stdout.contains("OPTIONS:"))
        for flag in ["--host", "--port", "--mode", "--strategy", "--max-clients", "--max-line", "--max-output",
                     "--idle-timeout", "--config", "--log-level", "-h, --help", "--version"] {
            #expect(result.stdout.contains(flag), "help lacks \(flag)")
        }
        #expect(result.stdout.contains("(default: 7007)"))
        #expect(try run(["-h"]).stdout == result.stdout)
    }

    @Test func versionPrintsAndExitsZero() throws {
        let result = try run(["--version"])
        #expect(result.status == 0)
        #expect(result.stdout == "echochat-server \(Release.version)\n")
    }

    @Test(arguments: [
        (["--bogus"], "Error: unknown option '--bogus'"),
        (["--strategy", "fibers"], "Error: invalid value 'fibers' for --strategy: expected one of"),
        (["--port", "70000"], "Error: invalid value '70000' for --port"),
        (["--strategy", "reactors", "--loops", "0"], "Error: invalid value '0' for --loops"),
        (["--mode"], "Error: missing value for '--mode'"),
        (["stray"], "Error: unexpected argument 'stray'"),
    ])
    func badUsageExits64(arguments: [String], message: String) throws {
        let result = try run(arguments)
        #expect(result.status == 64)
        #expect(result.stdout.isEmpty)
        #expect(result.stderr.hasPrefix(message), "\(result.stderr)")
        #expect(result.stderr.contains("Usage: echochat-server"))
    }

    @Test func bindFailureIsReported() throws {
        let holder = try Socket.listen(host: "127.0.0.1", port: 0)
        defer { holder.close() }
        let port = try holder.localAddress().port
        let result = try run(["--port", String(port)])
        #expect(result.status == 1)
        #expect(result.stderr.contains("Error: cannot listen on 127.0.0.1:\(port): Address already in use"))
    }

    @Test func configFileAppliesAndFlagsWin() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("echochat-\(UUID()).conf").path
        try "# test config\nmode = chat\nmax-line = 8\nlog-level=debug  # trailing comment\n\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let server = try ServerProcess(["--config", path, "--max-line", "12"])
        let (client, _) = try server.joinChat()  // mode came from the file
        try client.send("thirteen byte\n")
        #expect(try client.readLine() == "! line too long (max 12 bytes)")  // the flag beat the file
        #expect(server.log.waitFor({ $0.contains(" DEBUG ") }, timeout: 5) != nil)
    }

    @Test func configFileErrorsNameTheLine() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("echochat-\(UUID()).conf").path
        try "port = 7007\n\ncolour = blue\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try run(["--config", path])
        #expect(result.status == 64)
        #expect(result.stderr.hasPrefix("Error: \(path):3: unknown key 'colour'"))
        try "max-output = lots\n".write(toFile: path, atomically: true, encoding: .utf8)
        let bad = try run(["--config", path])
        #expect(bad.status == 64)
        #expect(bad.stderr.hasPrefix("Error: \(path):1: invalid value 'lots' for 'max-output'"))
        let missing = try run(["--config", path + ".missing"])
        #expect(missing.status == 64)
        #expect(missing.stderr.hasPrefix("Error: cannot read config file"))
    }

    @Test func shippedConfigFileIsValidAndDocumentsEveryKey() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let path = root.appendingPathComponent("Configs/echochat.conf").path
        let text = try String(contentsOfFile: path, encoding: .utf8)
        var config = ServerConfiguration()
        try ServerOptions.applyConfigFile(text, path: path, to: &config)
        #expect(config == ServerConfiguration(), "the shipped file should restate the defaults")
        for key in ServerOptions.settingNames {
            #expect(text.contains("\n# \(key) =") || text.contains("\n\(key) ="), "Configs/echochat.conf lacks \(key)")
        }
    }
}

/// Option parsing in memory: precedence and value forms.
@Suite("Option parsing", .ownThreads)
struct OptionParsingTests {
    func parse(_ arguments: [String], file: String? = nil) throws -> ServerConfiguration {
        let command = try ServerOptions.parse(arguments) { _ in
            guard let file else { throw TestFailure("no file") }
            return file
        }
        guard case .run(let config) = command else { throw TestFailure("expected run, got \(command)") }
        return config
    }

    @Test func defaults() throws {
        let config = try parse([])
        #expect(config.host == "127.0.0.1")
        #expect(config.port == 7007)
        #expect(config.mode == .echo)
        #expect(config.strategy == .epoll)
        #expect(config.maxClients == 10_000)
        #expect(config.maxLine == 4096)
        #expect(config.maxOutput == 1 << 20)
        #expect(config.idleTimeout == 0)
        #expect(config.shutdownTimeout == 5)
    }

    @Test func equalsFormAndSizeSuffixes() throws {
        let config = try parse(["--max-output=2M", "--max-line", "1k", "--idle-timeout=1.5", "--port=0"])
        #expect(config.maxOutput == 2 << 20)
        #expect(config.maxLine == 1024)
        #expect(config.idleTimeout == 1.5)
        #expect(config.port == 0)
    }

    @Test func precedenceDefaultsThenFileThenFlags() throws {
        let config = try parse(["--config", "x.conf", "--port", "9000"], file: "port = 8000\nmode = chat\n")
        #expect(config.port == 9000)
        #expect(config.mode == .chat)
        #expect(config.configFile == "x.conf")
        // Flag order does not matter: --config after the flag still loses to it.
        let later = try parse(["--port", "9000", "--config", "x.conf"], file: "port = 8000\n")
        #expect(later.port == 9000)
    }

    @Test func helpAndVersionWinOverEverythingElse() throws {
        #expect(try ServerOptions.parse(["--port", "1", "--help"]) { _ in "" } == .help)
        #expect(try ServerOptions.parse(["--version", "--bogus"]) { _ in "" } == .version)
    }

    @Test(arguments: ["--max-clients=0", "--max-line=0", "--idle-timeout=-1", "--mode=loud", "--log-level=loud", "--host="])
    func rejectsBadValues(argument: String) throws {
        #expect(throws: UsageError.self) { try parse([argument]) }
    }
}
