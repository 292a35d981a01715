import EchoChatOptions
import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// The server's settings from all four layers: defaults < config file <
/// environment (`ECHOCHAT_*`) < flags, in memory and through the real binary.
@Suite("Server settings: file, environment, flags", .ownThreads)
struct ServerOptionsTests {
    func command(
        _ arguments: [String], environment: [String: String] = [:], file: String? = nil
    ) throws(UsageError) -> ServerOptions.Command {
        try ServerOptions.parse(arguments, environment: { environment[$0] }) { _ in
            guard let file else { throw TestFailure("no file") }
            return file
        }
    }

    @Test func allFourLayersEachWinWhatTheySet() throws {
        let file = "port = 8000\nmode = chat\nmax-clients = 50\nidle-timeout = 9\n"
        let environment = ["ECHOCHAT_PORT": "8100", "ECHOCHAT_MAX_CLIENTS": "1_500", "ECHOCHAT_SERVER": "/not/a/setting"]
        guard case .checkConfig(let layers) = try command(
            ["--check-config", "--config", "x.conf", "--port", "8200"], environment: environment, file: file)
        else {
            Issue.record("not check-config")
            return
        }
        let config = layers.settings
        #expect(config.port == 8200)  // flag > env > file
        #expect(config.maxClients == 1500)  // env > file
        #expect(config.mode == .chat && config.idleTimeout == 9)  // file > default
        #expect(config.strategy == .epoll)  // default
        #expect(layers.source(of: "port") == .flag("--port"))
        #expect(layers.source(of: "max-clients") == .environment(variable: "ECHOCHAT_MAX_CLIENTS"))
        #expect(layers.source(of: "mode") == .file(path: "x.conf", line: 2))
        #expect(layers.source(of: "strategy") == .defaultValue)
        // The same without --check-config runs with the same settings.
        #expect(try command(["--config", "x.conf", "--port", "8200"], environment: environment, file: file) == .run(config))
    }

    /// Each setting reads its own variable: a value it rejects is reported
    /// with the variable's name.
    @Test(arguments: ServerOptions.settingNames)
    func everySettingHasItsVariable(name: String) throws {
        let variable = "ECHOCHAT_" + name.uppercased().replacingOccurrences(of: "-", with: "_")
        // Paths and hosts take nearly anything, but not ''.
        let value = ["pidfile", "log-file", "host", "upload-dir"].contains(name) ? "" : "bad value"
        #expect(throws: UsageError.self) { try command([], environment: [variable: value]) }
        do {
            _ = try command([], environment: [variable: value])
        } catch {
            #expect(error.message.hasPrefix("invalid value '\(value)' for \(variable): "), "\(error.message)")
        }
    }

    @Test func switchesTakeYesOrNoFromTheEnvironment() throws {
        #expect(try command([], environment: ["ECHOCHAT_DAEMON": "yes"]) == .run({
            var config = ServerConfiguration()
            config.daemon = true
            return config
        }()))
    }

    @Test func checkConfigShowsEachSource() throws {
        var layers = LayeredSettings(ServerConfiguration())
        guard case .checkConfig(let found) = try command(
            ["--check-config", "--config", "x.conf", "--port=8200"], environment: ["ECHOCHAT_MODE": "chat"],
            file: "# comment\nmax-line = 1K\n")
        else {
            Issue.record("not check-config")
            return
        }
        layers = found
        let text = ServerOptions.render(layers)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines[0] == "# effective settings: defaults < x.conf < environment (ECHOCHAT_*) < flags")
        #expect(lines.contains { $0.hasPrefix("port = 8200 ") && $0.hasSuffix("# flag --port") })
        #expect(lines.contains { $0.hasPrefix("mode = chat ") && $0.hasSuffix("# env ECHOCHAT_MODE") })
        #expect(lines.contains { $0.hasPrefix("max-line = 1024 ") && $0.hasSuffix("# file x.conf:2") })
        #expect(lines.contains { $0.hasPrefix("host = 127.0.0.1 ") && $0.hasSuffix("# default") })
        // The output is a config file: read back, it gives the same settings.
        var again = ServerConfiguration()
        try ServerOptions.applyConfigFile(text, path: "check.out", to: &again)
        var expected = layers.settings
        expected.configFile = nil
        #expect(again == expected)
    }

    // MARK: - The real binary

    func environment(_ extra: [String: String]) -> [String: String] {
        ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ECHOCHAT_") }.merging(extra) { $1 }
    }

    @Test func aBadEnvironmentValueIsAUsageError() throws {
        let result = try runProgram(
            ServerProcess.binary, ["--check-config"], environment: environment(["ECHOCHAT_PORT": "seventy"]))
        #expect(result.status == 64)
        #expect(result.stdout.isEmpty)
        #expect(result.stderr.hasPrefix(
            "Error: invalid value 'seventy' for ECHOCHAT_PORT: expected an integer from 0 to 65535\nUsage: echochat-server "))
        #expect(result.stderr.hasSuffix("See 'echochat-server --help' for more information.\n"))
    }

    @Test func checkConfigThroughTheBinary() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("echochat-\(UUID()).conf").path
        try "port = 8000\nmode = chat\nmax-clients = 50\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let result = try runProgram(
            ServerProcess.binary, ["--check-config", "--config", path, "--port", "8200"],
            environment: environment(["ECHOCHAT_PORT": "8100", "ECHOCHAT_MAX_CLIENTS": "70"]))
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("port = 8200 ") && $0.hasSuffix("# flag --port") }, "\(result.stdout)")
        #expect(lines.contains { $0.hasPrefix("max-clients = 70 ") && $0.hasSuffix("# env ECHOCHAT_MAX_CLIENTS") })
        #expect(lines.contains { $0.hasPrefix("mode = chat ") && $0.hasSuffix("# file \(path):2") })
        #expect(lines.contains { $0.hasPrefix("strategy = epoll ") && $0.hasSuffix("# default") })
    }

    /// SIGHUP re-reads the file; the environment and the flags given at start
    /// still override it.
    @Test func reloadKeepsEnvironmentAndFlagsOverTheNewFile() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("echochat-\(UUID()).conf").path
        try "max-clients = 5\nidle-timeout = 4\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let process = try TestProcess(
            ServerProcess.binary, ["--port", "0", "--config", path, "--close-timeout", "7"],
            environment: environment(["ECHOCHAT_MAX_CLIENTS": "3"]), stdin: .null, stdout: .null, stderr: .pipe)
        defer {
            _ = process.signal(.terminate)
            _ = try? process.waitForExit(timeout: 10)
        }
        let log = try #require(process.stderr)
        #expect(log.waitFor({ $0.contains("listening on ") }, timeout: 10) != nil, "\(log.text)")
        try "max-clients = 9\nidle-timeout = 1\nclose-timeout = 2\nlog-level = debug\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        #expect(process.signal(.hangup))
        let line = log.waitFor({ $0.contains("SIGHUP: reloaded") }, timeout: 10)
        // max-clients from the environment, close-timeout from the flag, the rest from the new file.
        #expect(line?.contains("log-level=debug max-clients=3 idle-timeout=1 line-timeout=60 send-timeout=60 rate-limit=0 rate-burst=0 close-timeout=7") == true,
                "\(log.text)")
    }

    /// A daemon moves to /, but relative paths (config, pid and log file)
    /// keep meaning the files in the directory it started in, also when
    /// SIGHUP re-reads the config file.
    @Test func aDaemonReloadsARelativeConfigPath() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("echochat-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = { (name: String) in directory.appendingPathComponent(name).path }
        try "max-clients = 5\n".write(toFile: file("rel.conf"), atomically: true, encoding: .utf8)
        // Started from `directory` (sh changes to it, then becomes the server),
        // under a guardian that kills the daemon whatever happens.
        let launcher = try GuardedProgram(
            "/bin/sh",
            ["-c", "cd \"$0\" && exec \"$1\" --port 0 --daemon --config rel.conf --pidfile rel.pid --log-file rel.log",
             directory.path, ServerProcess.binary],
            environment: environment([:]))
        defer { launcher.release() }
        let started = try launcher.waitForExit(timeout: 30)
        try #require(started.status == 0, "\(launcher.transcript)")
        let daemon = try launcher.adopt(pidFile: file("rel.pid"))
        defer {
            _ = daemon.signal(.terminate)
            _ = daemon.waitUntilGone(timeout: 10)
        }
        try "max-clients = 9\n".write(toFile: file("rel.conf"), atomically: true, encoding: .utf8)
        #expect(daemon.signal(.hangup))
        let reloaded = waitForLine(inFile: file("rel.log")) { $0.contains("SIGHUP: reloaded") }
        let log = (try? String(contentsOfFile: file("rel.log"), encoding: .utf8)) ?? ""
        #expect(reloaded?.contains("SIGHUP: reloaded log-level=info max-clients=9 ") == true, "\(log)")
    }
}
