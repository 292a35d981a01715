import EchoChatLoad
import EchoChatPOSIX
import EchoChatTestSupport
import Foundation
import Testing

/// Ctrl-C (SIGINT) and SIGTERM end a load run early with a report of what
/// was measured, marked as interrupted, and the exit status a shell expects
/// of a process ended by that signal (128 + its number).
@Suite("echochat-load interrupted", .ownThreads)
struct InterruptTests {
    static var binary: String { builtProduct("echochat-load", override: "ECHOCHAT_LOAD") }

    /// Starts echochat-load against `server`, waits until the server has
    /// echoed messages (its SIGUSR1 stats line says so), sends `signal`,
    /// and returns the exit status, stdout and the JSON file's object.
    func interruptedRun(_ signal: Signal, server: ServerProcess, extra: [String] = []) throws
        -> (status: Int32, stdout: String, json: [String: Any])
    {
        let jsonPath = FileManager.default.temporaryDirectory.appendingPathComponent("echochat-load-\(UUID()).json").path
        defer { try? FileManager.default.removeItem(atPath: jsonPath) }
        let process = try TestProcess(
            Self.binary, ["--port", String(server.port), "-c", "4", "-d", "60", "-w", "0", "--json", jsonPath] + extra,
            stdin: .null, stdout: .pipe, stderr: .null)

        // Measured something: the server has answered messages.
        let deadline = Date().addingTimeInterval(20)
        var measuring = false
        while !measuring && Date() < deadline {
            server.signal(.user1)
            measuring = server.log.waitFor({ $0.contains("stats:") && !$0.contains("messages_in=0 ") }, timeout: 0.3) != nil
        }
        try #require(measuring, "the server never saw a message:\n\(server.log.text)")

        #expect(process.signal(signal))
        // Exited, and all of its stdout collected (or killed and thrown after 20 s).
        let status = try process.waitForExit(timeout: 20)
        #expect(process.killedBySignal == nil, "it should exit, not die of the signal")
        let text = process.stdout?.text ?? ""
        let data = try Data(contentsOf: URL(fileURLWithPath: jsonPath))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        return (status, text, json)
    }

    @Test func sigintPrintsWhatWasMeasuredAndExits130() throws {
        let server = try ServerProcess(["--mode", "echo"])
        let (status, stdout, json) = try interruptedRun(.interrupt, server: server)
        #expect(status == 130)
        #expect(stdout.contains("(interrupted by SIGINT)"), "\(stdout)")
        #expect(stdout.contains("result           INTERRUPTED by SIGINT"), "\(stdout)")
        #expect(json["interrupted"] as? Bool == true)
        #expect(json["signal"] as? String == "SIGINT")
        let messages = try #require((json["messages"] as? NSNumber)?.intValue)
        #expect(messages > 0)
        let duration = try #require((json["duration_s"] as? NSNumber)?.doubleValue)
        #expect(duration > 0 && duration < 60, "the measured window ends at the interruption")
        #expect((json["mismatches"] as? NSNumber)?.intValue == 0)
        #expect((json["lost"] as? NSNumber)?.intValue == 0, "what was in flight drains before the report")
    }

    /// Ctrl-C while chat lines are still on their way: the report comes
    /// within the usual 3 s, not after the longer wait for late lines (up to
    /// 30 s) an uninterrupted run allows. Through a relay that passes 200
    /// bytes/s, the tail is still in flight then, so it is reported lost.
    @Test func sigintDuringChatDoesNotWaitForLateLines() throws {
        let server = try ServerProcess(["--mode", "chat"])
        let relay = try SlowRelay(upstreamPort: server.port, bytesPerTick: 20, tick: 0.1)
        defer { relay.stop() }
        let jsonPath = FileManager.default.temporaryDirectory.appendingPathComponent("echochat-load-\(UUID()).json").path
        defer { try? FileManager.default.removeItem(atPath: jsonPath) }
        let process = try TestProcess(
            Self.binary,
            ["--port", String(relay.port), "--mode", "chat", "-c", "3", "--senders", "2", "--rate", "20", "-d", "60",
             "--json", jsonPath],
            stdin: .null, stdout: .null, stderr: .null)
        // The senders have sent 60 lines (1.5 s of them): 4 KiB or more for
        // each receiver, 20 s at the relay's pace.
        let deadline = Date().addingTimeInterval(30)
        var sent = 0
        while sent < 60 && Date() < deadline {
            let seen = server.log.lines.count
            server.signal(.user1)
            let line = server.log.waitFor({ $0.contains("stats:") }, timeout: 1, after: seen)
            if let line, let field = line.split(separator: " ").first(where: { $0.hasPrefix("messages_in=") }) {
                sent = Int(field.dropFirst("messages_in=".count)) ?? sent
            }
        }
        try #require(sent >= 60, "the server had \(sent) chat lines:\n\(server.log.text.suffix(2000))")
        #expect(process.signal(.interrupt))
        #expect(try process.waitForExit(timeout: 40) == 130)
        let data = try Data(contentsOf: URL(fileURLWithPath: jsonPath))
        let json = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(json["interrupted"] as? Bool == true)
        #expect(try #require((json["lost"] as? NSNumber)?.intValue) > 0, "it waited for the late lines")
        #expect((json["mismatches"] as? NSNumber)?.intValue == 0)
    }

    @Test func sigtermExits143() throws {
        let server = try ServerProcess(["--mode", "echo"])
        let (status, stdout, json) = try interruptedRun(.terminate, server: server, extra: ["-p", "4"])
        #expect(status == 143)
        #expect(stdout.contains("INTERRUPTED by SIGTERM"), "\(stdout)")
        #expect(json["interrupted"] as? Bool == true && json["signal"] as? String == "SIGTERM")
    }
}

@Suite("Interrupted report", .ownThreads)
struct InterruptedReportTests {
    @Test func statusMarkerAndJSON() {
        var report = LoadReport()
        report.connections = 1
        report.connectionsRequested = 1
        #expect(report.exitStatus == 0)
        #expect(report.json.text.contains("\"interrupted\":false,\"signal\":null"))
        report.interruption = .interrupt
        #expect(report.exitStatus == 130)
        report.interruption = .terminate
        #expect(report.exitStatus == 143)
        #expect(report.json.text.contains("\"interrupted\":true,\"signal\":\"SIGTERM\""))
        #expect(report.summary.contains("INTERRUPTED by SIGTERM"))
    }
}
