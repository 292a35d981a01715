import EchoChatLoad
import EchoChatOptions
import EchoChatPOSIX
import EchoChatTestSupport
import Foundation
import Testing

/// The real `echochat-load` binary against the real server (and against a
/// server that corrupts or drops on purpose). Short, bounded runs; no test
/// asserts on speed: the bench commands show figures.
@Suite("echochat-load end to end", .ownThreads)
struct EndToEndTests {
    static var binary: String { builtProduct("echochat-load", override: "ECHOCHAT_LOAD") }

    func run(_ arguments: [String], timeout: Double = 60) throws -> ProgramResult {
        try runProgram(Self.binary, arguments, timeout: timeout)
    }

    /// Runs with `--json -` and decodes stdout.
    func runJSON(_ arguments: [String]) throws -> (status: Int32, json: [String: Any], stderr: String) {
        let result = try run(arguments + ["--json", "-"])
        // Under --sanitize=thread the client is instrumented too.
        #expect(!result.stderr.contains("Sanitizer"), "\(result.stderr)")
        let object = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))
        guard let json = object as? [String: Any] else {
            throw TestFailure("no JSON on stdout (status \(result.status)): \(result.stdout)\n\(result.stderr)")
        }
        return (result.status, json, result.stderr)
    }

    func int(_ json: [String: Any], _ key: String) -> Int? { (json[key] as? NSNumber)?.intValue }
    func double(_ json: [String: Any], _ key: String) -> Double? { (json[key] as? NSNumber)?.doubleValue }

    @Test func echoVerifiesAndTheJSONHasTheDocumentedFields() throws {
        let server = try ServerProcess(["--mode", "echo"])
        let (status, json, stderr) = try runJSON([
            "--port", String(server.port), "--threads", "2", "-c", "4", "-d", "1", "-w", "0.2", "-p", "4", "-s", "100",
        ])
        #expect(status == 0, "\(stderr)")
        #expect(stderr.contains("OK: every byte came back as sent"))
        for key in ["connections", "threads", "duration_s", "messages", "msgs_per_s", "mb_per_s", "latency_us", "errors", "mismatches"] {
            #expect(json[key] != nil, "missing \(key)")
        }
        #expect(int(json, "connections") == 4)
        #expect(int(json, "threads") == 2)
        #expect(double(json, "duration_s") == 1)
        #expect(int(json, "errors") == 0 && int(json, "mismatches") == 0 && int(json, "lost") == 0)
        let messages = try #require(int(json, "messages"))
        #expect(messages > 0)
        #expect(abs(try #require(double(json, "msgs_per_s")) - Double(messages)) < 1)
        #expect(abs(try #require(double(json, "mb_per_s")) - Double(messages * 100) / 1e6) < 0.01)
        let latency = try #require(json["latency_us"] as? [String: Any])
        let values = try ["min", "p50", "p90", "p99", "p999", "max"].map { try #require(double(latency, $0)) }
        #expect(values[0] > 0)
        #expect(values == values.sorted(), "percentiles out of order: \(values)")
    }

    @Test func aFixedNumberOfMessagesIsExactlyThatMany() throws {
        let server = try ServerProcess(["--mode", "echo"])
        let (status, json, stderr) = try runJSON(["--port", String(server.port), "-c", "3", "-m", "50", "-p", "8", "-s", "1000"])
        #expect(status == 0, "\(stderr)")
        #expect(int(json, "messages") == 150)
        #expect(int(json, "messages_total") == 150)
    }

    @Test func openLoopSendsOnScheduleAndNeverMore() throws {
        let server = try ServerProcess(["--mode", "echo"])
        let (status, json, stderr) = try runJSON(["--port", String(server.port), "-c", "2", "--rate", "200", "-d", "1", "-w", "0"])
        #expect(status == 0, "\(stderr)")
        let total = try #require(int(json, "messages_total"))
        #expect(total > 0 && total <= 2 * 200)
        #expect(double(json, "rate") == 200)
    }

    @Test func openLoopWithAMessageCountSendsExactlyThatMany() throws {
        let server = try ServerProcess(["--mode", "echo"])
        let (status, json, stderr) = try runJSON(["--port", String(server.port), "-c", "2", "--rate", "500", "-m", "40", "-p", "2"])
        #expect(status == 0, "\(stderr)")
        #expect(int(json, "messages_total") == 80)
        #expect(int(json, "lost") == 0)
    }

    @Test func chatVerifiesEveryDeliveryExactlyOnceInOrder() throws {
        let server = try ServerProcess(["--mode", "chat"])
        let (status, json, stderr) = try runJSON([
            "--port", String(server.port), "--mode", "chat", "--threads", "2", "-c", "6", "--senders", "3",
            "--rate", "50", "-m", "20", "--connect-rate", "200",
        ])
        #expect(status == 0, "\(stderr)")
        // Welcomes arrive while later clients are still connecting; none is
        // taken for a connect completing.
        #expect(int(json, "connections") == 6)
        let connectLatency = try #require(json["connect_latency_us"] as? [String: Any])
        #expect(try #require(double(connectLatency, "max")) < 10_000_000)
        #expect(int(json, "messages") == 60)
        #expect(int(json, "expected") == 3 * 20 * 5)
        #expect(int(json, "deliveries") == 3 * 20 * 5)
        for key in ["lost", "duplicated", "reordered", "mismatches", "errors"] { #expect(int(json, key) == 0, "\(key)") }
        #expect(try #require(double(json, "deliveries_per_s")) > 0)
        #expect(stderr.contains("fan-out latency"))
    }

    /// A server that keeps delivering, only late, loses nothing: the run
    /// waits while lines still arrive (here for about 6 s after the last send,
    /// through a relay that passes 400 bytes/s) and counts them with their
    /// latency. Waiting a fixed 3 s would have called the tail lost.
    @Test func linesThatArriveLateAreLateNotLost() throws {
        let server = try ServerProcess(["--mode", "chat"])
        let relay = try SlowRelay(upstreamPort: server.port, bytesPerTick: 40, tick: 0.1)
        defer { relay.stop() }
        let (status, json, stderr) = try runJSON([
            "--port", String(relay.port), "--mode", "chat", "-c", "3", "--senders", "2", "--rate", "20", "-d", "1", "-s", "64",
        ])
        #expect(status == 0, "\(stderr)")
        // 2 senders x 20 lines, each to the 2 other clients.
        #expect(int(json, "deliveries") == 2 * 20 * 2, "\(stderr)")
        #expect(int(json, "expected") == 2 * 20 * 2)
        for key in ["lost", "duplicated", "reordered", "mismatches", "errors"] { #expect(int(json, key) == 0, "\(key)") }
        // The tail came more than 3 s after the last send (at 1 s).
        let latency = try #require(json["latency_us"] as? [String: Any])
        #expect(try #require(double(latency, "max")) > 4_000_000, "\(latency)")
    }

    @Test func holdKeepsIdleConnectionsFromSeveralSourceAddresses() throws {
        let server = try ServerProcess(["--mode", "echo"])
        let (status, json, stderr) = try runJSON(["--port", String(server.port), "--hold", "-c", "20", "-d", "0.3", "--per-source", "6", "--connect-rate", "2000"])
        #expect(status == 0, "\(stderr)")
        #expect(json["mode"] as? String == "hold")
        #expect(int(json, "alive_after_connect") == 20)
        #expect(int(json, "alive_at_end") == 20)
        #expect(int(json, "source_addresses") == 4)
    }

    @Test func aFlippedByteFailsTheRun() throws {
        let server = try FaultyEchoServer(fault: .flipByte, after: 1000)
        defer { server.stop() }
        let (status, json, stderr) = try runJSON(["--port", String(server.port), "-c", "2", "-m", "100", "--timeout", "20"])
        #expect(status == 1)
        // One message per connection is corrupt; everything else still verifies.
        #expect(int(json, "mismatches") == 2, "\(stderr)")
        #expect(int(json, "messages_total") == 200)
        #expect(stderr.contains("FAILED"))
    }

    @Test func aDroppedConnectionFailsTheRun() throws {
        let server = try FaultyEchoServer(fault: .close, after: 1000)
        defer { server.stop() }
        let (status, json, stderr) = try runJSON(["--port", String(server.port), "-c", "2", "-m", "100", "--timeout", "20"])
        #expect(status == 1)
        #expect(int(json, "unexpected_closes") == 2, "\(stderr)")
        #expect(try #require(int(json, "lost")) >= 2)
        #expect(int(json, "mismatches") == 0)
    }

    @Test func nothingListeningIsAConnectFailure() throws {
        // A port nobody listens on: bind one, close it, use it.
        let probe = try Socket.listen(host: "127.0.0.1", port: 0)
        let port = try probe.localAddress().port
        probe.close()
        let (status, json, _) = try runJSON(["--port", String(port), "-c", "3", "-d", "1", "-w", "0"])
        #expect(status == 1)
        #expect(int(json, "connect_failed") == 3)
        #expect(int(json, "connections") == 0)
    }

    @Test(arguments: [
        ["--bogus"], ["-c", "zero"], ["--mode", "x"], ["--duration", "1", "--messages", "1"], ["bench", "--runs", "x"],
    ])
    func badUsageExits64(arguments: [String]) throws {
        let result = try run(arguments)
        #expect(result.status == 64)
        #expect(result.stderr.hasPrefix("Error: "))
        #expect(result.stderr.contains("--help' for more information"))
        #expect(result.stdout.isEmpty)
    }

    @Test func helpAndVersionExit0() throws {
        let help = try run(["--help"])
        #expect(help.status == 0 && help.stdout.contains("USAGE: echochat-load"))
        let version = try run(["--version"])
        #expect(version.status == 0 && version.stdout == "echochat-load \(Release.version)\n")
    }

    @Test func benchWritesTableAndChart() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("echochat-bench-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let result = try run([
            "bench", "--quick", "--strategies", "epoll", "--workloads", "pp10", "--duration", "0.3",
            "--out", directory, "--server", ServerProcess.binary,
        ], timeout: 60)
        #expect(result.status == 0, "\(result.stderr)")
        let markdown = try String(contentsOfFile: directory + "/strategies.md", encoding: .utf8)
        #expect(markdown.contains("| ping-pong 64 B, 10 connections (msgs/s) |"))
        #expect(!markdown.contains("✗"), "\(markdown)\n\(result.stderr)")
        let svg = try String(contentsOfFile: directory + "/strategies.svg", encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("epoll"))
        #expect(result.stdout == markdown)
    }

    @Test func benchRunsTheUploadRow() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("echochat-bench-upload-\(getpid())").path
        // The bench puts the server's upload directory under TMPDIR: a scratch one, to see it removed.
        let scratch = directory + "-tmp"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer {
            try? FileManager.default.removeItem(atPath: directory)
            try? FileManager.default.removeItem(atPath: scratch)
        }
        var environment = ProcessInfo.processInfo.environment
        environment["TMPDIR"] = scratch
        let result = try runProgram(Self.binary, [
            "bench", "--quick", "--strategies", "epoll", "--workloads", "upload", "--duration", "0.3",
            "--out", directory, "--server", ServerProcess.binary,
        ], environment: environment, timeout: 120)
        #expect(result.status == 0, "\(result.stderr)")
        let markdown = try String(contentsOfFile: directory + "/strategies.md", encoding: .utf8)
        #expect(markdown.contains("| file sharing, 4 clients, 4 MiB files: upload MB/s |"))
        #expect(!markdown.contains("✗"), "\(markdown)\n\(result.stderr)")
        // The server's upload directory is gone with the run.
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch).isEmpty)
    }
}
