@testable import EchoChatLoad
import EchoChatOptions
import Testing

@Suite("Options")
struct OptionsTests {
    func options(_ arguments: [String]) throws -> LoadOptions {
        guard case .run(let options) = try LoadCommandLine.parse(arguments) else {
            throw UsageError("not a run: \(arguments)")
        }
        return options
    }

    func usageError(_ arguments: [String]) -> String? {
        do {
            _ = try LoadCommandLine.parse(arguments)
            return nil
        } catch {
            return error.message
        }
    }

    @Test func defaultsMakeSenseForAFirstRun() throws {
        let defaults = try options([])
        #expect(defaults.host == "127.0.0.1" && defaults.port == 7007)
        #expect(defaults.threads == nil)  // = the CPUs this process may use
        #expect(defaults.connections == 10 && defaults.duration == 5 && defaults.messages == nil)
        #expect(defaults.size == 64 && defaults.pipeline == 1 && defaults.rate == nil)
        #expect(defaults.effectiveWarmup == 1 && defaults.mode == .echo && !defaults.hold && !defaults.quiet)
    }

    @Test func everyFlagInEveryForm() throws {
        let parsed = try options([
            "--host", "::1", "--port=7100", "--threads", "3", "-c", "1_000", "--messages", "50", "-s", "4096",
            "-p", "16", "--rate", "250.5", "--connect-rate", "1000", "--warmup", "0", "--mode", "chat",
            "--senders", "4", "--json", "-", "-q", "--per-source", "500", "--timeout", "9",
        ])
        #expect(parsed.host == "::1" && parsed.port == 7100 && parsed.threads == 3 && parsed.connections == 1000)
        #expect(parsed.messages == 50 && parsed.size == 4096 && parsed.pipeline == 16 && parsed.rate == 250.5)
        #expect(parsed.connectRate == 1000 && parsed.warmup == 0 && parsed.mode == .chat && parsed.senders == 4)
        #expect(parsed.jsonPath == "-" && parsed.quiet && parsed.connectionsPerSource == 500 && parsed.timeout == 9)
        #expect(try options(["--hold", "-d", "2"]).hold)
    }

    @Test func helpAndVersion() throws {
        guard case .help(let text) = try LoadCommandLine.parse(["-c", "5", "--help"]) else {
            Issue.record("no help")
            return
        }
        #expect(text.contains("USAGE: echochat-load"))
        #expect(text.contains("OPTIONS:"))
        #expect(text.contains("--pipeline <n>"))
        #expect(text.contains("(default: 64)"))
        #expect(try LoadCommandLine.parse(["--version"]) == .version)
        guard case .help(let bench) = try LoadCommandLine.parse(["bench", "-h"]) else {
            Issue.record("no bench help")
            return
        }
        #expect(bench.contains("hold10k"))
    }

    @Test(arguments: [
        (["--bogus"], "unknown option '--bogus'"),
        (["-x"], "unknown option '-x'"),
        (["extra"], "unexpected argument 'extra'"),
        (["-"], "unexpected argument '-'"),
        (["--", "-c"], "unexpected argument '-c'"),
        (["--host", "a b"], "invalid value 'a b' for --host: expected an address or host name"),
        (["--port"], "missing value for '--port'"),
        (["--port", "70000"], "invalid value '70000' for --port"),
        (["-c", "0"], "invalid value '0' for --connections"),
        (["--duration", "0"], "invalid value '0' for --duration"),
        (["--rate", "-3"], "invalid value '-3' for --rate"),
        (["--mode", "fanout"], "invalid value 'fanout' for --mode: expected one of echo, chat, upload"),
        (["--duration", "2", "--messages", "5"], "--duration and --messages cannot be used together"),
        (["--hold", "--mode", "chat"], "--hold works with --mode echo only"),
        (["--hold", "--messages", "3"], "--hold takes --duration, not --messages"),
        (["--mode", "chat", "-s", "20"], "--mode chat needs --size from 48"),
        (["--mode", "chat", "-c", "1"], "--mode chat needs at least 2 connections"),
        (["--quiet=yes"], "'--quiet' takes no value"),
        (["bench", "--workloads", "pp1,nope"], "unknown workload 'nope'"),
        (["bench", "--runs", "0"], "invalid value '0' for --runs"),
        (["bench-loadgen", "--frob"], "unknown option '--frob'"),
        (["bench-loadgen"], "missing '--loadgen <path>'.\nbench-loadgen needs the C reference load generator, loadgen.c, from the\nEchoChat development kit"),
        (["bench", "-"], "unexpected argument '-'"),
        (["bench", "--server-cpus", "1-0"], "expected CPUs like 0, 0-3 or 0,2"),
        (["bench", "--load-cpus", "x"], "invalid value 'x' for --load-cpus"),
        (["bench", "--load-cpus", "1,"], "invalid value '1,' for --load-cpus"),
        (["bench", "--server-cpus", "-1"], "invalid value '-1' for --server-cpus"),
        (["bench", "--server-cpus", "+1"], "invalid value '+1' for --server-cpus"),
    ])
    func badUsageIsExplained(arguments: [String], message: String) {
        let error = usageError(arguments)
        #expect(error?.contains(message) == true, "\(arguments): \(error ?? "accepted")")
    }

    @Test func benchOptions() throws {
        guard case .bench(let bench) = try LoadCommandLine.parse(
            ["bench", "--quick", "--out", "/tmp/x", "--strategies", "epoll,pool", "--workloads", "pp1,hold10k", "--server", "/s"])
        else {
            Issue.record("not bench")
            return
        }
        #expect(bench.quick && bench.effectiveRuns == 1 && bench.effectiveDuration == 1)
        #expect(bench.outputDirectory == "/tmp/x" && bench.strategies == ["epoll", "pool"])
        #expect(bench.workloads == ["pp1", "hold10k"] && bench.server == "/s")
        #expect(bench.serverCPUs == nil && bench.loadCPUs == nil)
        guard case .bench(let pinned) = try LoadCommandLine.parse(["bench", "--server-cpus", "0,1", "--load-cpus", "3-5,2,4"])
        else {
            Issue.record("not bench")
            return
        }
        #expect(pinned.serverCPUs?.cpus == [0, 1] && pinned.serverCPUs?.description == "0-1")
        #expect(pinned.loadCPUs?.cpus == [2, 3, 4, 5] && pinned.loadCPUs?.description == "2-5")
        #expect(try CPUList.parse("7,0-2,5", "--x").description == "0-2,5,7")
        guard case .compare(let compare) = try LoadCommandLine.parse(["bench-loadgen", "--loadgen", "/l", "--runs", "5"]) else {
            Issue.record("not bench-loadgen")
            return
        }
        #expect(compare.loadgen == "/l" && compare.runs == 5 && compare.duration == 5)
        guard case .help(let compareHelp) = try LoadCommandLine.parse(["bench-loadgen", "--help"]) else {
            Issue.record("no bench-loadgen help")
            return
        }
        #expect(compareHelp.contains("--loadgen <path>") && compareHelp.contains("development kit"))
        #expect(!compareHelp.contains("../") && !compareHelp.contains("/tmp/"))
    }

    @Test func errorTextFollowsArgumentParserConventions() {
        let text = LoadCommandLine.errorText(UsageError("unknown option '--x'"), arguments: ["--x"])
        #expect(text.hasPrefix("Error: unknown option '--x'\nUsage: echochat-load "))
        #expect(text.hasSuffix("See 'echochat-load --help' for more information.\n"))
        let bench = LoadCommandLine.errorText(UsageError("unknown option '--x'"), arguments: ["bench", "--x"])
        #expect(bench.hasPrefix("Error: unknown option '--x'\nUsage: echochat-load bench "))
        #expect(bench.hasSuffix("See 'echochat-load bench --help' for more information.\n"))
    }
}
