import EchoChatOptions
import EchoChatPOSIX
import Synchronization

/// `echochat-load storm`: a connect storm against a chat server. N clients
/// connect as fast as possible; each reads exactly its welcome line and then
/// nothing more, so the join notices of later clients pile up in kernel
/// buffers (and in whatever the server queues). Measures the time until the
/// last welcome arrived, then holds, closes everything at once and, with
/// `--server-pid` (or `--strategies`), samples the server's RSS every 20 ms
/// and its CPU time through the storm and the teardown.
public struct StormOptions: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port = 7007
    public var clients = 5000
    public var threads = 4
    /// Seconds to keep every connection open after the last welcome.
    public var hold = 1.0
    /// Seconds to keep sampling after the close.
    public var settle = 2.0
    /// Close with SO_LINGER 0 (RST) instead of a plain close.
    public var reset = false
    public var serverPID: Int32?
    public var jsonPath: String?
    /// Upper bound in seconds for connecting and for the welcomes.
    public var timeout = 120.0
    /// Start a server per strategy (pinned) instead of using --host/--port.
    public var strategies: [String]?
    /// The server binary for --strategies; nil = echochat-server beside this program.
    public var server: String?
    public var connectionsPerSource: Int?
    public init() {}
}

/// What one storm measured.
public struct StormResult: Sendable {
    public var strategy: String?
    public var clients = 0
    public var threads = 0
    public var sourceAddresses = 1
    public var connected = 0
    public var connectFailed = 0
    public var welcomed = 0
    /// Seconds from the first connect until the last welcome line arrived
    /// (or until the timeout, when not all arrived).
    public var welcomeSeconds = 0.0
    /// Seconds until every connect completed (per worker, the slowest).
    public var connectSeconds = 0.0
    public var largestRoom = 0
    public var errors = 0
    public var firstError = ""
    public var allWelcomed: Bool { welcomed == clients }
    public var closeSeconds = 0.0
    public var holdSeconds = 0.0
    public var settleSeconds = 0.0
    public var reset = false
    // Server, when its pid is known (0 otherwise).
    public var serverPID: Int32 = 0
    public var rssBefore = 0
    public var rssPeak = 0
    /// Seconds after the start at which the peak was sampled.
    public var rssPeakAt = 0.0
    public var rssAtLastWelcome = 0
    public var rssAfterSettle = 0
    public var samples = 0
    public var threadsPeak = 0
    public var serverCPUSeconds = 0.0
    public var serverCPUToLastWelcome = 0.0
    public var serverExited = false
    public var note = ""

    public var exitStatus: Int32 { allWelcomed && errors == 0 ? 0 : 1 }

    static func mib(_ bytes: Int) -> String { Format.fixed(Double(bytes) / 1_048_576, decimals: 1) }

    public var summary: String {
        var lines: [String] = []
        let label = strategy.map { "[\($0)] " } ?? ""
        if allWelcomed {
            lines.append("\(label)\(Format.grouped(clients)) clients, all welcomed in \(Format.fixed(welcomeSeconds, decimals: 3)) s (connected in \(Format.fixed(connectSeconds, decimals: 3)) s, \(threads) threads, \(sourceAddresses) source address\(sourceAddresses == 1 ? "" : "es"))")
        } else {
            lines.append("\(label)\(Format.grouped(clients)) clients: NOT all welcomed: \(Format.grouped(welcomed)) welcomed, \(Format.grouped(connected)) connected after \(Format.fixed(welcomeSeconds, decimals: 1)) s")
        }
        if serverPID != 0 {
            lines.append("  server RSS: before \(Self.mib(rssBefore)) MiB, peak \(Self.mib(rssPeak)) MiB (at \(Format.fixed(rssPeakAt, decimals: 2)) s), at last welcome \(Self.mib(rssAtLastWelcome)) MiB, after settle \(Self.mib(rssAfterSettle)) MiB; peak threads \(threadsPeak); \(samples) samples")
            lines.append("  server CPU: \(Format.fixed(serverCPUSeconds, decimals: 2)) s over the storm and teardown (\(Format.fixed(serverCPUToLastWelcome, decimals: 2)) s until the last welcome)")
        }
        lines.append("  held \(Format.fixed(holdSeconds, decimals: 1)) s, closed all (\(reset ? "RST" : "FIN")) in \(Format.fixed(closeSeconds * 1000, decimals: 1)) ms, sampled \(Format.fixed(settleSeconds, decimals: 1)) s more")
        lines.append("  errors: \(errors)\(firstError.isEmpty ? "" : " (first: \(firstError))")\(connectFailed > 0 ? ", \(connectFailed) connects failed" : "")")
        if serverExited { lines.append("  the server exited during the storm") }
        if !note.isEmpty { lines.append("  note: \(note)") }
        return lines.joined(separator: "\n") + "\n"
    }

    public var json: JSONValue {
        var pairs: [(String, JSONValue)] = []
        if let strategy { pairs.append(("strategy", .string(strategy))) }
        pairs += [
            ("clients", .int(clients)),
            ("welcomed", .int(welcomed)),
            ("all_welcomed", .bool(allWelcomed)),
            ("welcome_s", .number(welcomeSeconds, decimals: 4)),
            ("connected", .int(connected)),
            ("connect_s", .number(connectSeconds, decimals: 4)),
            ("connect_failed", .int(connectFailed)),
            ("largest_room", .int(largestRoom)),
            ("threads", .int(threads)),
            ("source_addresses", .int(sourceAddresses)),
            ("hold_s", .number(holdSeconds, decimals: 3)),
            ("close_s", .number(closeSeconds, decimals: 4)),
            ("reset", .bool(reset)),
            ("settle_s", .number(settleSeconds, decimals: 3)),
            ("errors", .int(errors)),
            ("first_error", .string(firstError)),
        ]
        if serverPID != 0 {
            pairs += [
                ("server_pid", .int(Int(serverPID))),
                ("server_rss_before_bytes", .int(rssBefore)),
                ("server_rss_peak_bytes", .int(rssPeak)),
                ("server_rss_peak_mb", .number(Double(rssPeak) / 1_048_576, decimals: 1)),
                ("server_rss_peak_at_s", .number(rssPeakAt, decimals: 3)),
                ("server_rss_at_last_welcome_bytes", .int(rssAtLastWelcome)),
                ("server_rss_after_settle_bytes", .int(rssAfterSettle)),
                ("server_threads_peak", .int(threadsPeak)),
                ("server_cpu_s", .number(serverCPUSeconds, decimals: 3)),
                ("server_cpu_to_last_welcome_s", .number(serverCPUToLastWelcome, decimals: 3)),
                ("rss_samples", .int(samples)),
                ("server_exited", .bool(serverExited)),
            ]
        }
        if !note.isEmpty { pairs.append(("note", .string(note))) }
        return .object(pairs)
    }
}

// MARK: - Command line

extension LoadCommandLine {
    static let stormSettings: [Option<StormOptions>] = [
        Option("host", placeholder: "host", help: "Server address", default: "127.0.0.1") { o, v, n throws(UsageError) in
            o.host = try Value.host(v, n)
        },
        Option("port", placeholder: "port", help: "Server port", default: "7007") { o, v, n throws(UsageError) in
            o.port = try Value.integer(v, n, in: 1...65535)
        },
        Option("clients", short: "-c", placeholder: "n", help: "Clients that connect at once", default: "5000") {
            o, v, n throws(UsageError) in o.clients = try Value.integer(v, n, in: 1...200_000)
        },
        Option("threads", placeholder: "n", help: "Connecting threads, each with its own epoll loop", default: "4") {
            o, v, n throws(UsageError) in o.threads = try Value.integer(v, n, in: 1...256)
        },
        Option("hold", placeholder: "seconds", help: "Keep every connection open after the last welcome", default: "1") {
            o, v, n throws(UsageError) in o.hold = try Value.seconds(v, n, maximum: 86_400)
        },
        Option("settle", placeholder: "seconds", help: "Keep sampling the server after closing", default: "2") {
            o, v, n throws(UsageError) in o.settle = try Value.seconds(v, n, maximum: 86_400)
        },
        Option("reset", placeholder: nil, help: "Close with SO_LINGER 0 (RST) instead of a plain close", default: nil) {
            o, _, _ throws(UsageError) in o.reset = true
        },
        Option("server-pid", placeholder: "pid", help: "Sample this server's RSS every 20 ms and its CPU time", default: nil) {
            o, v, n throws(UsageError) in o.serverPID = Int32(try Value.integer(v, n, in: 1...Int(Int32.max)))
        },
        Option("timeout", placeholder: "seconds", help: "Upper bound for connecting and the welcomes", default: "120") {
            o, v, n throws(UsageError) in o.timeout = try Value.seconds(v, n, positive: true, maximum: 86_400)
        },
        Option("per-source", placeholder: "n", help: "Connections per 127.0.0.x source address before the next one is used",
               default: "from the ephemeral port range") { o, v, n throws(UsageError) in
            o.connectionsPerSource = try Value.integer(v, n, in: 1...65535)
        },
        Option("strategies", placeholder: "list",
               help: "Start a chat server per strategy (CPU 0; this client on CPU 1) and storm each; ignores --host, --port, --server-pid",
               default: nil) { o, v, n throws(UsageError) in
            let names = v.split(separator: ",").map(String.init)
            guard !names.isEmpty, names.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" } }) else {
                throw UsageError("invalid value '\(v)' for \(n): expected names separated by commas")
            }
            o.strategies = names
        },
        Option("server", placeholder: "path", help: "The echochat-server binary for --strategies",
               default: "echochat-server beside this program") { o, v, n throws(UsageError) in o.server = try Value.path(v, n) },
        Option("json", placeholder: "file", help: "Write the result as JSON (- for stdout)", default: nil) {
            o, v, _ throws(UsageError) in o.jsonPath = v
        },
    ]

    static let stormParser = OptionParser(
        command: "echochat-load storm",
        overview: """
            Connect storm against a chat server. Opens --clients connections as fast
            as possible; each reads exactly its welcome line and nothing more (later
            join notices pile up). Reports the time until the last welcome, then
            holds, closes all at once and keeps sampling. With --server-pid, the
            server's peak RSS (VmRSS every 20 ms) and CPU time (utime+stime) over the
            storm and teardown. With --strategies, starts echochat-server --mode chat
            per strategy on CPU 0 itself (this client on CPU 1).
            """,
        options: stormSettings,
        sections: [("EXIT STATUS", "  0 when every client was welcomed without errors, 1 otherwise, 64 for bad usage.")])

    static func parseStorm(_ arguments: [String]) throws(UsageError) -> LoadCommand {
        var options = StormOptions()
        switch try stormParser.parse(arguments, into: &options) {
        case .help: return .help(stormHelpText)
        case .version: return .version
        case .parsed(let given):
            if options.strategies != nil && given.contains("server-pid") {
                throw UsageError("--strategies starts its own servers; --server-pid does not apply")
            }
            return .storm(options)
        }
    }

    public static var stormHelpText: String { stormParser.helpText }
}

// MARK: - Running

enum Storm {
    /// Descriptors beyond one per client: epoll instances, /proc reads, stdio, spare.
    static let spareDescriptors = 64

    static func run(_ options: StormOptions, arguments: [String]) -> Int32 {
        Signals.ignoreBrokenPipe()
        if let strategies = options.strategies {
            return runStrategies(options, strategies: strategies, arguments: arguments)
        }
        let result: StormResult
        do {
            result = try storm(options, serverPID: options.serverPID)
        } catch {
            System.writeToStandardError("Error: \(error)\n")
            return 1
        }
        return emit(result, options: options)
    }

    static func emit(_ result: StormResult, options: StormOptions) -> Int32 {
        LoadMain.emit(summary: result.summary, json: result.json.text, to: options.jsonPath, status: result.exitStatus)
    }

    static func table(_ results: [StormResult]) -> String {
        var text = "\n| strategy | clients | welcomed | all welcomed in | peak server RSS | server CPU | errors |\n|---|---:|---:|---:|---:|---:|---:|\n"
        for r in results {
            let time = r.allWelcomed ? Format.fixed(r.welcomeSeconds, decimals: 2) + " s"
                : "not all after " + Format.fixed(r.welcomeSeconds, decimals: 0) + " s"
            text += "| \(r.strategy ?? "-") | \(Format.grouped(r.clients)) | \(Format.grouped(r.welcomed)) | \(time) | \(StormResult.mib(r.rssPeak)) MiB | \(Format.fixed(r.serverCPUSeconds, decimals: 2)) s | \(r.errors) |\n"
        }
        return text
    }

    /// One server per strategy (CPU 0), this process on CPU 1.
    static func runStrategies(_ options: StormOptions, strategies: [String], arguments: [String]) -> Int32 {
        let pinning = Pinning()
        let pinned = pinning.pinSelf(arguments: ["storm"] + arguments)
        let limit = System.openFileLimit()
        if limit.soft < limit.hard { try? System.setOpenFileLimit(soft: limit.hard) }
        guard let binary = StrategyBench.serverBinary(options.server) else { return 1 }
        System.writeToStandardError("storm: \(pinning.description)\n")
        var results: [StormResult] = []
        for strategy in strategies {
            var result: StormResult
            do {
                let maxClients = min(options.clients + 1000, 1_000_000)
                let server = try BenchServer(
                    binary: binary, arguments: ["--mode", "chat", "--strategy", strategy, "--max-clients", String(maxClients)],
                    cpus: pinned ? pinning.server : nil)
                var each = options
                each.host = "127.0.0.1"
                each.port = server.port
                // Let the server settle after start-up before the baseline sample.
                Clock.sleep(nanoseconds: 200_000_000)
                do {
                    result = try storm(each, serverPID: server.pid)
                } catch {
                    result = StormResult()
                    result.clients = options.clients
                    result.note = error.description
                }
                if !server.stop() { result.note += (result.note.isEmpty ? "" : "; ") + "the server did not stop cleanly on SIGTERM" }
            } catch {
                result = StormResult()
                result.clients = options.clients
                result.note = error.description
            }
            result.strategy = strategy
            System.writeToStandardError(result.summary)
            results.append(result)
        }
        let json = JSONValue.array(results.map(\.json))
        if options.jsonPath == "-" {
            // Each summary already went to stderr; stdout carries the JSON alone.
            System.writeToStandardError(table(results))
            System.writeToStandardOutput(json.text + "\n")
        } else {
            System.writeToStandardOutput(table(results))
            if let path = options.jsonPath {
                do { try System.writeFile(path, json.text + "\n") } catch {
                    System.writeToStandardError("Error: cannot write \(path): \(error)\n")
                    return 1
                }
            }
        }
        return results.allSatisfy { $0.exitStatus == 0 } ? 0 : 1
    }

    /// One storm against the server at options.host:port.
    static func storm(_ options: StormOptions, serverPID: Int32?) throws(LoadRunError) -> StormResult {
        let address = try LoadRunner.resolve(host: options.host, port: options.port)
        let clients = options.clients
        let threads = max(1, min(options.threads, clients))

        // Descriptors: one per client, one epoll instance per thread, spare.
        let needed = clients + threads + spareDescriptors
        let limit = System.openFileLimit()
        if limit.soft < needed {
            guard limit.hard >= needed else {
                throw LoadRunError(
                    "\(clients) clients need about \(needed) file descriptors, but RLIMIT_NOFILE is \(limit.soft) (hard \(limit.hard)); lower --clients to at most \(max(0, limit.hard - threads - spareDescriptors))")
            }
            do { try System.setOpenFileLimit(soft: limit.hard) } catch {
                throw LoadRunError("cannot raise the open-file limit to \(limit.hard): \(error)")
            }
        }

        // Source addresses, as LoadRunner does: another 127.0.0.x per `perSource`.
        var perSource = options.connectionsPerSource
        if perSource == nil, address.isIPv4Loopback {
            let usable = max(1000, LoadRunner.ephemeralPortCount() - 2000)
            if clients > usable { perSource = usable }
        }
        if perSource != nil && !address.isIPv4Loopback { perSource = nil }

        var loadOptions = LoadOptions()
        loadOptions.host = options.host
        loadOptions.port = options.port
        loadOptions.connections = clients
        loadOptions.timeout = options.timeout
        loadOptions.mode = .chat
        let control = RunControl(
            options: loadOptions, addresses: [address], perSource: perSource, pattern: nil, workers: threads, onHolding: nil,
            interruption: Interruption())

        var result = StormResult()
        result.clients = clients
        result.threads = threads
        result.sourceAddresses = perSource.map { (clients + $0 - 1) / $0 } ?? 1
        result.reset = options.reset

        let sampler = serverPID.map { ServerSampler(pid: $0) }
        let cpuBefore = serverPID.map { ServerSampler.cpuSeconds(pid: $0) } ?? 0
        if let sampler {
            result.serverPID = sampler.pid
            result.rssBefore = ServerSampler.status(pid: sampler.pid)?.rss ?? 0
            sampler.start()
        }

        let begin = Clock.monotonicNanoseconds()
        let deadline = begin + Int64(options.timeout * 1e9)
        let outcomes = Lock<[Int: StormWorkerOutcome]>([:])
        var shares = [[Int]](repeating: [], count: threads)
        for id in 0..<clients { shares[id % threads].append(id) }
        var handles: [ThreadHandle] = []
        for worker in 0..<threads {
            let ids = shares[worker]
            do {
                handles.append(try Threads.spawn(name: "storm-\(worker)") {
                    let outcome = StormWorker.run(worker: worker, ids: ids, control: control, deadline: deadline)
                    outcomes.withLock { $0[worker] = outcome }
                })
            } catch {
                System.writeToStandardError("echochat-load: cannot start storm threads: \(error)\n")
                System.exit(1)
            }
        }
        for handle in handles { handle.join() }
        let all = outcomes.withLock { table in (0..<threads).compactMap { table[$0] } }
        var lastWelcome = begin
        var descriptors: [Int32] = []
        for outcome in all {
            result.connected += outcome.connected
            result.connectFailed += outcome.connectFailed
            result.welcomed += outcome.welcomed
            result.errors += outcome.errors + outcome.connectFailed
            result.largestRoom = max(result.largestRoom, outcome.largestRoom)
            result.connectSeconds = max(result.connectSeconds, Double(outcome.connectedAt - begin) / 1e9)
            lastWelcome = max(lastWelcome, outcome.lastWelcomeAt)
            if result.firstError.isEmpty { result.firstError = outcome.firstError }
            descriptors += outcome.descriptors
        }
        let welcomesDone = Clock.monotonicNanoseconds()
        result.welcomeSeconds = Double((result.welcomed == clients ? lastWelcome : welcomesDone) - begin) / 1e9
        if let sampler {
            result.rssAtLastWelcome = ServerSampler.status(pid: sampler.pid)?.rss ?? 0
            result.serverCPUToLastWelcome = ServerSampler.cpuSeconds(pid: sampler.pid) - cpuBefore
        }

        // Hold, then close everything at once.
        Clock.sleep(untilMonotonicNanoseconds: welcomesDone + Int64(options.hold * 1e9))
        result.holdSeconds = options.hold
        if options.reset {
            for fd in descriptors { try? Socket(descriptor: fd).setResetOnClose() }
        }
        let closeBegan = Clock.monotonicNanoseconds()
        for fd in descriptors { Socket(descriptor: fd).close() }
        let closed = Clock.monotonicNanoseconds()
        result.closeSeconds = Double(closed - closeBegan) / 1e9
        Clock.sleep(untilMonotonicNanoseconds: closed + Int64(options.settle * 1e9))
        result.settleSeconds = options.settle

        if let sampler {
            let summary = sampler.stop()
            result.rssPeak = max(summary.peak, result.rssBefore, result.rssAtLastWelcome)
            result.rssPeakAt = summary.peakAt > 0 ? Double(summary.peakAt - begin) / 1e9 : 0
            result.threadsPeak = summary.threadsPeak
            result.samples = summary.samples
            result.serverExited = summary.exited
            result.rssAfterSettle = ServerSampler.status(pid: sampler.pid)?.rss ?? 0
            if result.rssAfterSettle > result.rssPeak {
                result.rssPeak = result.rssAfterSettle
                result.rssPeakAt = Double(Clock.monotonicNanoseconds() - begin) / 1e9
            }
            result.serverCPUSeconds = ServerSampler.cpuSeconds(pid: sampler.pid) - cpuBefore
        }
        return result
    }
}

/// What one storm thread hands back.
struct StormWorkerOutcome: Sendable {
    var connected = 0
    var connectFailed = 0
    var welcomed = 0
    var errors = 0
    var firstError = ""
    var largestRoom = 0
    var connectedAt: Int64 = 0
    var lastWelcomeAt: Int64 = 0
    /// Every socket still open (welcomed or not), for the main thread to close.
    var descriptors: [Int32] = []
}

/// One storm thread: connects its share with `Connector` on its own epoll
/// instance, then reads each connection's welcome line, exactly up to its LF
/// (see `WelcomeReader`), and unregisters it: nothing after the welcome is read.
enum StormWorker {
    static func run(worker: Int, ids: [Int], control: RunControl, deadline: Int64) -> StormWorkerOutcome {
        var outcome = StormWorkerOutcome()
        let poller: Poller
        do { poller = try Poller() } catch {
            outcome.errors = ids.count
            outcome.firstError = "\(error)"
            return outcome
        }
        defer { poller.close() }
        var events = PollEvents(capacity: 1024)
        let counts = WorkerResult()
        let descriptors = Connector.connectAll(
            ids: ids, poller: poller, events: &events, control: control, worker: worker, result: counts)
        outcome.connectedAt = Clock.monotonicNanoseconds()
        outcome.connected = counts.connected
        outcome.connectFailed = counts.connectFailed

        var readers = [WelcomeReader](repeating: WelcomeReader(), count: ids.count)
        var waiting = descriptors.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) }
        var open = descriptors
        func fail(_ slot: Int, _ message: String) {
            outcome.errors += 1
            if outcome.firstError.isEmpty { outcome.firstError = message }
            try? poller.unregister(open[slot])
            Socket(descriptor: open[slot]).close()
            open[slot] = -1
            waiting -= 1
        }
        var buffer = [UInt8](repeating: 0, count: WelcomeReader.capacity)
        while waiting > 0 {
            let now = Clock.monotonicNanoseconds()
            if now >= deadline { break }
            let timeout = Int32(min(100, max(1, (deadline - now) / 1_000_000)))
            let count: Int
            do { count = try poller.wait(into: &events, timeoutMilliseconds: timeout) } catch {
                outcome.errors += 1
                if outcome.firstError.isEmpty { outcome.firstError = "\(error)" }
                break
            }
            for index in 0..<count {
                let slot = Int(events.data(at: index))
                guard slot < open.count, open[slot] >= 0, !readers[slot].done else { continue }
                let socket = Socket(descriptor: open[slot])
                // Read at most what cannot run past the welcome's line end.
                readLoop: while !readers[slot].done {
                    let want = readers[slot].safeReadLength
                    let result: ReadResult
                    do {
                        result = try buffer.withUnsafeMutableBytes { raw throws(SystemError) in
                            try socket.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<want]))
                        }
                    } catch {
                        fail(slot, "\(error)")
                        break readLoop
                    }
                    switch result {
                    case .wouldBlock: break readLoop
                    case .endOfFile:
                        fail(slot, "connection closed before its welcome line" + (readers[slot].text.isEmpty ? "" : " (got '\(readers[slot].text)')"))
                        break readLoop
                    case .bytes(let n):
                        readers[slot].append(buffer[0..<n])
                        if readers[slot].done {
                            outcome.lastWelcomeAt = Clock.monotonicNanoseconds()
                            try? poller.unregister(socket.descriptor)
                            waiting -= 1
                            if let room = readers[slot].roomSize {
                                outcome.welcomed += 1
                                outcome.largestRoom = max(outcome.largestRoom, room)
                            } else {
                                outcome.errors += 1
                                if outcome.firstError.isEmpty { outcome.firstError = "not a welcome line: '\(readers[slot].text)'" }
                            }
                        } else if readers[slot].overflowed {
                            fail(slot, "no line end within \(WelcomeReader.capacity) bytes")
                            break readLoop
                        }
                    }
                }
            }
        }
        outcome.descriptors = open.filter { $0 >= 0 }
        return outcome
    }
}

/// The bytes of one welcome line so far. Reads are sized so they never go
/// past its LF: every line a server sends on connect ends with
/// `"; /help lists commands\n"`, so at least that suffix, minus whatever of
/// it the bytes so far already end with, is still to come (when the line is
/// not a welcome, a read may overshoot; that is reported as not a welcome).
struct WelcomeReader {
    static let capacity = 512
    static let suffix = Array("; /help lists commands\n".utf8)
    private(set) var bytes: [UInt8] = []
    private(set) var done = false

    var overflowed: Bool { bytes.count >= Self.capacity }
    var text: String { String(decoding: bytes.prefix(while: { $0 != 10 }), as: UTF8.self) }

    /// How many bytes may be read without reading past the line end.
    var safeReadLength: Int {
        let suffix = Self.suffix
        var overlap = min(bytes.count, suffix.count - 1)
        while overlap > 0 && !bytes[(bytes.count - overlap)...].elementsEqual(suffix[0..<overlap]) { overlap -= 1 }
        return max(1, min(suffix.count - overlap, Self.capacity - bytes.count))
    }

    mutating func append(_ chunk: ArraySlice<UInt8>) {
        bytes += chunk
        if chunk.contains(10) { done = true }
    }

    /// K from "... (K here); /help lists commands" when the line is a welcome.
    var roomSize: Int? {
        let line = text
        guard line.hasPrefix("* welcome "), let rest = line.suffix(after: " (") else { return nil }
        return Int(String(rest.prefix(while: { $0.isNumber })))
    }
}
