@testable import EchoChatLoad
import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// `echochat-load storm`: a small connect storm against the real chat server
/// (each strategy), and the welcome reader that must never read past the
/// welcome line. Every wait is bounded (the storm's own --timeout, and the
/// program's run time). No assertion on speed: the storm reports figures.
@Suite("echochat-load storm", .ownThreads)
struct StormTests {
    static var binary: String { builtProduct("echochat-load", override: "ECHOCHAT_LOAD") }

    @Test(arguments: Strategy.tested.map(\.rawValue))
    func aSmallStormWelcomesEveryClientAndSamplesTheServer(strategy: String) throws {
        let server = try ServerProcess(["--mode", "chat", "--strategy", strategy, "--max-clients", "1000"])
        let result = try runProgram(
            Self.binary,
            [
                "storm", "--port", String(server.port), "--clients", "200", "--threads", "2", "--hold", "0.2",
                "--settle", "0.3", "--timeout", "60", "--server-pid", String(server.pid), "--json", "-",
            ],
            timeout: 120)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(!result.stderr.contains("Sanitizer"), "\(result.stderr)")
        #expect(result.stderr.contains("200 clients, all welcomed in"), "\(result.stderr)")
        let object = try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))
        let json = try #require(object as? [String: Any], "no JSON on stdout: \(result.stdout)\n\(result.stderr)")
        func int(_ key: String) -> Int? { (json[key] as? NSNumber)?.intValue }
        #expect(int("clients") == 200)
        #expect(int("welcomed") == 200)
        #expect(json["all_welcomed"] as? Bool == true)
        #expect(int("errors") == 0)
        // The last client to join saw everybody in the room.
        #expect(int("largest_room") == 200)
        #expect(try #require(int("server_rss_peak_bytes")) > 0)
        #expect(try #require(int("rss_samples")) > 0)
        #expect(try #require((json["server_cpu_s"] as? NSNumber)?.doubleValue) >= 0)
        #expect(json["server_exited"] as? Bool == false)
        // The server is still healthy after everybody left at once.
        let client = try server.connect()
        let welcome = try client.readLine()
        #expect(welcome.hasPrefix("* welcome "), "\(welcome)")
    }

    @Test func helpAndUsageErrors() throws {
        let help = try runProgram(Self.binary, ["storm", "--help"], timeout: 30)
        #expect(help.status == 0)
        #expect(help.stdout.contains("USAGE: echochat-load storm"))
        let bad = try runProgram(Self.binary, ["storm", "--clients", "0"], timeout: 30)
        #expect(bad.status == 64)
        #expect(bad.stderr.contains("See 'echochat-load storm --help'"), "\(bad.stderr)")
        let both = try runProgram(Self.binary, ["storm", "--strategies", "epoll", "--server-pid", "1"], timeout: 30)
        #expect(both.status == 64)
    }

    @Test func tooFewDescriptorsFailBeforeConnecting() throws {
        // Port 9 (discard) on loopback: nothing listens, and nothing is tried.
        let result = try runProgram(
            "/bin/sh", ["-c", "ulimit -n 300 && exec \"$0\" storm --clients 500 --port 9", Self.binary], timeout: 30)
        #expect(result.status == 1)
        #expect(result.stderr.contains("500 clients need about"), "\(result.stderr)")
        #expect(result.stderr.contains("RLIMIT_NOFILE is 300"), "\(result.stderr)")
    }

    @Test func parsingKeepsTheDefaultsAndTakesEveryFlag() throws {
        guard case .storm(let defaults) = try LoadCommandLine.parse(["storm"]) else { throw TestFailure("not a storm") }
        #expect(defaults.clients == 5000 && defaults.hold == 1 && defaults.settle == 2 && !defaults.reset)
        guard case .storm(let o) = try LoadCommandLine.parse([
            "storm", "-c", "300", "--hold", "0", "--settle", "1.5", "--reset", "--server-pid", "42", "--json", "x.json",
            "--threads", "3",
        ]) else { throw TestFailure("not a storm") }
        #expect(o.clients == 300 && o.hold == 0 && o.settle == 1.5 && o.reset && o.serverPID == 42)
        #expect(o.jsonPath == "x.json" && o.threads == 3)
    }

    /// Feeding a welcome line in the largest pieces the reader allows never
    /// takes a byte of the line after it.
    @Test(arguments: [
        "* welcome guest1, you are in #lobby (1 here); /help lists commands\n",
        "* welcome guest123456, you are in #lobby (99999 here); /help lists commands\n",
    ])
    func theWelcomeReaderNeverReadsPastTheLine(line: String) {
        let stream = Array((line + "* guest7 joined #lobby\n").utf8)
        var reader = WelcomeReader()
        var offset = 0
        var reads = 0
        while !reader.done && reads < 100 {
            let want = reader.safeReadLength
            reader.append(stream[offset..<(offset + want)])
            offset += want
            reads += 1
        }
        #expect(reader.done)
        #expect(offset == line.utf8.count)
        #expect(reads <= 6, "\(reads) reads")
        #expect(reader.roomSize != nil)
    }
}
