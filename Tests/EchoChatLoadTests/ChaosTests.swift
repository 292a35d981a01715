@testable import EchoChatLoad
import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// `echochat-load chaos` against the real server, every strategy and mode:
/// a short pass (4 s of load) must find every well-behaved message verified,
/// every kind of hostile client handled and the server's descriptors back
/// to baseline; against a server that drops a byte it must fail. Serialized:
/// each run floods its server, and two at once on two cores would measure
/// each other. No assertion on speed or CPU figures beyond the tool's own
/// check that running out of descriptors does not make the server spin.
@Suite("echochat-load chaos", .ownThreads, .serialized)
struct ChaosTests {
    static var binary: String { builtProduct("echochat-load", override: "ECHOCHAT_LOAD") }

    /// Runs chaos with `--json -` and decodes stdout.
    func runChaos(_ arguments: [String], timeout: Double = 120) throws -> (status: Int32, json: [String: Any], stderr: String) {
        let result = try runProgram(Self.binary, ["chaos", "--json", "-"] + arguments, timeout: timeout)
        #expect(!result.stderr.contains("Sanitizer"), "\(result.stderr)")
        let object = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))
        guard let json = object as? [String: Any] else {
            throw TestFailure("no JSON on stdout (status \(result.status)): \(result.stdout)\n\(result.stderr)")
        }
        return (result.status, json, result.stderr)
    }

    static func object(_ json: [String: Any], _ path: String...) -> [String: Any] {
        var current = json
        for key in path { current = current[key] as? [String: Any] ?? [:] }
        return current
    }

    static func int(_ json: [String: Any], _ key: String) -> Int? { (json[key] as? NSNumber)?.intValue }

    @Test(arguments: Strategy.tested, LoadWorkload.chaosModes)
    func aShortChaosRunLosesNothingAndEveryDescriptorComesBack(strategy: Strategy, mode: LoadWorkload) throws {
        let chat = mode == .chat
        // In chat a short line-timeout, so the run can require every slowloris closed.
        let server = try ServerProcess(["--mode", mode.rawValue] + (chat ? ["--line-timeout", "2"] : []), strategy: strategy)
        let limit = try Self.openFileLimit(of: server.pid)
        let (status, json, stderr) = try runChaos(
            ["--port", String(server.port), "--mode", mode.rawValue, "--server-pid", String(server.pid), "-d", "4", "--resets", "300"]
                + (chat ? ["--line-timeout", "2"] : []))
        #expect(status == 0, "\(stderr)")
        #expect((json["failures"] as? [String])?.isEmpty == true, "\(json["failures"] ?? "")")
        #expect(json["passed"] as? Bool == true)

        let good = Self.object(json, "well_behaved")
        let sent = try #require(Self.int(good, "sent"))
        #expect(sent > 0)
        #expect(Self.int(good, "verified") == sent)
        for key in ["lost", "mismatches", "duplicated", "reordered", "errors"] { #expect(Self.int(good, key) == 0, "\(key)") }

        let hostile = Self.object(json, "hostile")
        for kind in ["flooders", "slow_consumers", "resets", "slowloris", "garbage", "exhaustion"] {
            #expect(try #require(Self.int(Self.object(hostile, kind), "handled"), "\(kind)") > 0, "\(kind) handled")
        }
        let slow = Self.object(hostile, "slow_consumers")
        if chat {
            #expect(Self.int(slow, "dropped") == Self.int(slow, "clients"), "every slow consumer dropped")
            let loris = Self.object(hostile, "slowloris")
            #expect(Self.int(loris, "closed_by_server") == Self.int(loris, "clients"), "every slowloris closed by line-timeout")
            #expect(Self.int(Self.object(hostile, "garbage"), "controls_relayed") == 0)
        } else {
            #expect(Self.int(slow, "backpressured") == Self.int(slow, "clients"), "every slow consumer backpressured")
            #expect(Self.int(Self.object(hostile, "garbage"), "echo_mismatched") == 0)
        }
        let exhaustion = Self.object(hostile, "exhaustion")
        #expect(try #require(Self.int(exhaustion, "served")) > 0)
        #expect(exhaustion["accepts_again"] as? Bool == true)
        #expect(exhaustion["limit_restored"] as? Bool == true)

        let figures = Self.object(json, "server")
        #expect(figures["fds_back_to_baseline"] as? Bool == true)
        #expect(Self.int(figures, "fds_end") == Self.int(figures, "fds_baseline"))
        #expect(try #require(Self.int(figures, "fds_peak")) > Self.int(figures, "fds_baseline")!)
        #expect(try #require(Self.int(figures, "rss_peak_bytes")) > 0)
        #expect(figures["exited"] as? Bool == false)
        // The limit chaos lowered is the server's own again.
        #expect(try Self.openFileLimit(of: server.pid) == limit)

        // Still a healthy server.
        let client = try server.connect()
        if chat {
            #expect(try client.readLine().hasPrefix("* welcome "))
        } else {
            try client.send("after the chaos\n")
            #expect(try client.readLine() == "after the chaos")
        }
    }

    /// "Max open files" from /proc/PID/limits: (soft, hard).
    static func openFileLimit(of pid: Int32) throws -> String {
        let text = try String(contentsOfFile: "/proc/\(pid)/limits", encoding: .utf8)
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("Max open files") })
        return line.split(separator: " ", omittingEmptySubsequences: true).dropFirst(3).prefix(2).joined(separator: " ")
    }

    @Test func aServerThatDropsAByteFailsTheRun() throws {
        // Each connection loses one byte after its first 2,000: every
        // well-behaved connection's stream shifts, so its messages mismatch.
        let server = try FaultyEchoServer(fault: .dropByte, after: 2000)
        defer { server.stop() }
        let (status, json, stderr) = try runChaos([
            "--port", String(server.port), "-d", "2", "--flooders", "1", "--slow-consumers", "0", "--resets", "10",
            "--slowloris", "1",
        ])
        #expect(status == 1, "\(stderr)")
        #expect(json["passed"] as? Bool == false)
        let good = Self.object(json, "well_behaved")
        #expect(try #require(Self.int(good, "mismatches")) > 0)
        #expect(Self.int(good, "verified") != Self.int(good, "sent"))
        let failures = try #require(json["failures"] as? [String])
        #expect(failures.contains { $0.hasPrefix("well-behaved:") }, "\(failures)")
        // Without the server's pid, the figures that need it say so.
        #expect(json["server"] is NSNull)
        #expect((json["unavailable"] as? [String]) == ["rss", "descriptors", "cpu", "exhaustion"])
        #expect(stderr.contains("RSS, descriptors and CPU unavailable (give --server-pid)"), "\(stderr)")
        #expect(stderr.contains("FAILED: well-behaved:"), "\(stderr)")
    }

    @Test func ctrlCPrintsWhatWasMeasuredAndRestoresTheServersLimit() throws {
        let server = try ServerProcess(["--mode", "echo"], strategy: .epoll)
        let before = try Self.openFileLimit(of: server.pid)
        let process = try TestProcess(
            Self.binary, ["chaos", "--port", String(server.port), "--server-pid", String(server.pid), "-d", "60"],
            stdin: .null, stdout: .pipe, stderr: .pipe)
        // Under way: the resets have made the server accept hundreds of connections.
        let deadline = Date().addingTimeInterval(30)
        var stormy = false
        while !stormy && Date() < deadline {
            server.signal(.user1)
            stormy = server.log.waitFor({ line in
                guard let total = line.split(separator: " ").first(where: { $0.hasPrefix("connections_total=") }) else { return false }
                return (Int(total.dropFirst("connections_total=".count)) ?? 0) > 200
            }, timeout: 0.3) != nil
        }
        try #require(stormy, "the chaos never got going:\n\(server.log.text)")
        #expect(process.signal(.interrupt))
        let status = try process.waitForExit(timeout: 30)
        #expect(status == 130, "\(process.stderr?.text ?? "")")
        let stdout = process.stdout?.text ?? ""
        #expect(stdout.contains("(interrupted by SIGINT)"), "\(stdout)")
        #expect(stdout.contains("INTERRUPTED by SIGINT"), "\(stdout)")
        #expect(stdout.contains("well-behaved"), "\(stdout)")
        #expect(try Self.openFileLimit(of: server.pid) == before)
    }

    @Test func usageErrors() throws {
        let help = try runProgram(Self.binary, ["chaos", "--help"], timeout: 30)
        #expect(help.status == 0)
        #expect(help.stdout.contains("USAGE: echochat-load chaos"))
        #expect(help.stdout.contains("--server-pid <pid>"))
        let remote = try runProgram(Self.binary, ["chaos", "--host", "192.0.2.1"], timeout: 30)
        #expect(remote.status == 64)
        #expect(remote.stderr.contains("on this machine only"), "\(remote.stderr)")
        let echoTimeout = try runProgram(Self.binary, ["chaos", "--line-timeout", "2"], timeout: 30)
        #expect(echoTimeout.status == 64)
        let short = try runProgram(Self.binary, ["chaos", "-d", "1"], timeout: 30)
        #expect(short.status == 64)
    }

    @Test func parsingKeepsTheDefaultsAndTakesEveryFlag() throws {
        guard case .chaos(let defaults) = try LoadCommandLine.parse(["chaos"]) else { throw TestFailure("not chaos") }
        #expect(defaults.duration == 20 && defaults.clients == 20 && defaults.flooders == 20 && defaults.resets == 1000)
        #expect(defaults.slowConsumers == 20 && defaults.slowloris == 50 && defaults.serverPID == nil && defaults.mode == .echo)
        #expect(defaults.effectiveRate == 50)
        guard case .chaos(let o) = try LoadCommandLine.parse([
            "chaos", "--host", "::1", "--mode", "chat", "-d", "30", "--server-pid", "42", "-c", "8", "-r", "10",
            "--flooders", "3", "--slow-consumers", "4", "--resets", "5", "--slowloris", "6", "--line-timeout", "2",
            "--settle", "7", "--max-saturated-cpu", "30", "--json", "x.json", "-q",
        ]) else { throw TestFailure("not chaos") }
        #expect(o.host == "::1" && o.mode == .chat && o.duration == 30 && o.serverPID == 42 && o.clients == 8)
        #expect(o.effectiveRate == 10 && o.flooders == 3 && o.slowConsumers == 4 && o.resets == 5 && o.slowloris == 6)
        #expect(o.lineTimeout == 2 && o.settle == 7 && o.maxSaturatedCPU == 30 && o.jsonPath == "x.json" && o.quiet)
    }

    /// The soft limit that leaves exactly N descriptor numbers free counts
    /// the holes below the highest open one.
    @Test func theExhaustionLimitLeavesExactlyTheHeadroomFree() {
        #expect(ExhaustionChaos.limit(open: [0, 1, 2, 3], free: 2) == 6)
        #expect(ExhaustionChaos.limit(open: [0, 1, 2, 3, 4, 5, 7, 9], free: 2) == 9)
        #expect(ExhaustionChaos.limit(open: [0, 1, 2, 10, 11], free: 8) == 13)
    }

    /// The server's side of each connection, by client port, from /proc/net/tcp.
    @Test func theServerSideOfEachConnectionIsReadFromProcNetTCP() {
        let text = """
              sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
               0: 0100007F:1B5F 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1206 1
               1: 0100007F:1B5F 0100007F:A2DD 01 00000000:00000000 00:00000000 00000000  1000        0 1207 1
               2: 0100007F:1B5F 0100007F:A2DE 04 00010000:00000000 00:00000000 00000000  1000        0 0 3
               3: 0100007F:A2DD 0100007F:1B5F 01 00000000:00000000 00:00000000 00000000  1000        0 1208 1
            """
        let states = ProcFacts.serverSideTCPStates(text, serverPort: 0x1B5F)
        #expect(states == [0: 10, 0xA2DD: 1, 0xA2DE: 4])
    }

    /// The verdict: each check that can fail says so in `failures`.
    @Test func theVerdictNamesWhatFailed() {
        var result = ChaosResult()
        result.mode = .chat
        var report = LoadReport()
        report.kind = .chat
        report.connections = 4
        report.expected = 30
        report.deliveries = 30
        result.wellBehaved = report
        #expect(result.failures.isEmpty)
        #expect(result.exitStatus == 0)
        result.flood.slowConsumers = 2
        result.flood.slowDropped = 1
        result.serverPID = 7
        result.descriptorsBaseline = 9
        result.descriptorsEnd = 12
        result.settleSeconds = 10
        report.deliveries = 29
        report.lost = 1
        result.wellBehaved = report
        let failures = result.failures
        #expect(failures.contains("well-behaved: 30 sent, 29 verified"), "\(failures)")
        #expect(failures.contains("well-behaved: 1 lost"), "\(failures)")
        #expect(failures.contains("slow consumers: the server dropped 1 of 2"), "\(failures)")
        #expect(failures.contains { $0.hasPrefix("descriptors: the server holds 12, its baseline is 9") }, "\(failures)")
        #expect(result.exitStatus == 1)
        result.interruption = .interrupt
        #expect(result.exitStatus == 130)
        #expect(result.summary.contains("INTERRUPTED by SIGINT"))
    }
}

@Suite("chaos: what a chat client must never receive", .ownThreads)
struct ChaosCheckTests {
    /// Feeds `text`'s UTF-8 byte by byte as the garbage clients do.
    private func forbiddenCount(_ text: String) -> Int {
        var previous: UInt16 = 0
        var count = 0
        for byte in text.utf8 {
            if ChaosCheck.endsForbidden(previous: previous, byte) { count += 1 }
            previous = previous << 8 | UInt16(byte)
        }
        return count
    }

    @Test func everyCharacterTheServerMustRemoveIsCaught() {
        let forbidden: [UInt32] = [0x00, 0x1B, 0x7F, 0x80, 0x9B, 0x9F, 0x061C, 0x200E, 0x200F, 0x2028, 0x2029]
            + Array(0x202A...0x202E) + Array(0x2066...0x2069)
        for value in forbidden {
            let text = "a" + String(Unicode.Scalar(value)!) + "b"
            #expect(forbiddenCount(text) == 1, "U+\(String(value, radix: 16))")
        }
    }

    @Test func cleanTextPasses() {
        #expect(forbiddenCount("<guest1> héllo wörld \t tab, € and 😀 and \u{2027}\u{202F}\u{2065}\u{206A}\u{200D}\n") == 0)
    }
}
