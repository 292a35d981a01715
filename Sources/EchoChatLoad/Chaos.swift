import EchoChatOptions
import EchoChatPOSIX

/// `echochat-load chaos`: well-behaved verifying clients and hostile ones
/// against a running server on this machine, for a bounded time. Exits 0
/// only if the well-behaved clients lost nothing (and, with the server's
/// pid, its descriptors came back to their baseline).
///
/// Timeline, from the moment the well-behaved clients are connected and
/// settled (chat: in their own room, #chaos-verify) and start sending:
/// - the storm, the first 60% of `--duration` (90% without `--server-pid`):
///   flooders and slow consumers, clients vanishing with RST, garbage;
/// - slowloris clients, for the whole duration;
/// - descriptor exhaustion, the rest of the time (needs `--server-pid`):
///   the server's soft RLIMIT_NOFILE lowered, more clients than fit, its CPU
///   measured while saturated, then everyone leaves and the limit is restored;
/// - then the well-behaved clients drain, every socket is closed, and the
///   server's descriptors must return to their baseline within `--settle`.
///
/// Threads: the well-behaved clients' (one `LoadRunner` worker), one per
/// hostile kind, the server sampler, and the calling thread, which
/// coordinates and runs the exhaustion phase.
public struct ChaosOptions: Sendable, Equatable {
    public var host = "127.0.0.1"
    public var port = 7007
    public var mode: LoadWorkload = .echo
    public var duration = 20.0
    public var serverPID: Int32?
    public var jsonPath: String?
    /// Well-behaved clients.
    public var clients = 20
    /// Well-behaved rate: messages per second per connection (echo) or lines
    /// per second per sender (chat); nil = 50 (echo) or 20 (chat).
    public var rate: Double?
    public var flooders = 20
    public var slowConsumers = 20
    public var resets = 1000
    public var slowloris = 50
    /// The server's line-timeout (chat): every slowloris client must be closed.
    public var lineTimeout: Double?
    /// Seconds to wait for the server's descriptors to return to baseline.
    public var settle = 10.0
    /// What running out of descriptors may add to the server's CPU (points
    /// of one core, over the same load before the limit was lowered).
    public var maxSaturatedCPU = 15.0
    public var quiet = false
    public init() {}

    public var effectiveRate: Double { rate ?? (mode == .chat ? 20 : 50) }
    /// Chat: how many of the well-behaved clients send.
    public var senders: Int { min(clients, 5) }
}

// MARK: - Command line

extension LoadCommandLine {
    static let chaosSettings: [Option<ChaosOptions>] = [
        Option("host", placeholder: "host", help: "Server address: 127.0.0.1, ::1 or localhost (chaos is for local servers only)",
               default: "127.0.0.1") { o, v, n throws(UsageError) in
            o.host = try Value.host(v, n)
        },
        Option("port", placeholder: "port", help: "Server port", default: "7007") { o, v, n throws(UsageError) in
            o.port = try Value.integer(v, n, in: 1...65535)
        },
        Option("mode", placeholder: "mode", help: "echo or chat: what the server runs", default: "echo") { o, v, n throws(UsageError) in
            guard let mode = LoadWorkload(rawValue: v), LoadWorkload.chaosModes.contains(mode) else {
                throw UsageError("invalid value '\(v)' for \(n): expected one of echo, chat")
            }
            o.mode = mode
        },
        Option("duration", short: "-d", placeholder: "seconds", help: "How long the well-behaved clients send (2 at least)",
               default: "20") { o, v, n throws(UsageError) in
            o.duration = try Value.seconds(v, n, positive: true, maximum: 86_400)
        },
        Option("server-pid", placeholder: "pid",
               help: "The server's pid: sample its RSS, descriptors and CPU from /proc, and run the descriptor-exhaustion phase",
               default: nil) { o, v, n throws(UsageError) in
            o.serverPID = Int32(try Value.integer(v, n, in: 1...Int(Int32.max)))
        },
        Option("clients", short: "-c", placeholder: "n", help: "Well-behaved verifying clients (chat: 5 of them send)",
               default: "20", inUsage: false) { o, v, n throws(UsageError) in o.clients = try Value.integer(v, n, in: 2...1000) },
        Option("rate", short: "-r", placeholder: "msgs/s", help: "Well-behaved rate per connection (chat: lines/s per sender)",
               default: "echo 50, chat 20", inUsage: false) { o, v, n throws(UsageError) in
            o.rate = try Value.positive(v, n, maximum: 100_000)
        },
        Option("flooders", placeholder: "n", help: "Clients that send as fast as the server takes it", default: "20",
               inUsage: false) { o, v, n throws(UsageError) in o.flooders = try Value.integer(v, n, in: 0...1000) },
        Option("slow-consumers", placeholder: "n", help: "Clients that never read (chat: in the flooders' room)", default: "20",
               inUsage: false) { o, v, n throws(UsageError) in o.slowConsumers = try Value.integer(v, n, in: 0...1000) },
        Option("resets", placeholder: "n", help: "Clients that vanish with RST mid-line or mid-output, over the storm",
               default: "1000", inUsage: false) { o, v, n throws(UsageError) in o.resets = try Value.integer(v, n, in: 0...100_000) },
        Option("slowloris", placeholder: "n", help: "Clients that send one byte every 2 s and never an LF", default: "50",
               inUsage: false) { o, v, n throws(UsageError) in o.slowloris = try Value.integer(v, n, in: 0...5000) },
        Option("line-timeout", placeholder: "seconds",
               help: "Chat: the server's line-timeout; then every slowloris client must have been closed", default: nil,
               inUsage: false) { o, v, n throws(UsageError) in
            o.lineTimeout = try Value.seconds(v, n, positive: true, maximum: 86_400)
        },
        Option("settle", placeholder: "seconds", help: "Wait at most this long for the server's descriptors to return to baseline",
               default: "10", inUsage: false) { o, v, n throws(UsageError) in
            o.settle = try Value.seconds(v, n, maximum: 3600)
        },
        Option("max-saturated-cpu", placeholder: "percent",
               help: "Fail if being out of descriptors adds more than this to the server's CPU (points of one core)", default: "15",
               inUsage: false) { o, v, n throws(UsageError) in
            o.maxSaturatedCPU = try Value.positive(v, n, maximum: 10_000)
        },
        Option("json", placeholder: "file", help: "Write the result as one JSON object (- for stdout)", default: nil) {
            o, v, _ throws(UsageError) in o.jsonPath = v
        },
        Option("quiet", short: "-q", placeholder: nil, help: "No phase notes on stderr (off anyway when stderr is not a terminal)",
               default: nil, inUsage: false) { o, _, _ throws(UsageError) in o.quiet = true },
    ]

    static let chaosParser = OptionParser(
        command: "echochat-load chaos",
        overview: """
            Chaos run against a server on this machine: well-behaved clients that
            verify every message (echo: every byte back; chat: every line once, in
            order, in their own room) while hostile ones flood, never read, vanish
            with RST, trickle bytes without an LF, send garbage and, with
            --server-pid, exhaust the server's descriptors (its soft RLIMIT_NOFILE
            is lowered with prlimit(2) for that phase and restored after).
            Reports what each hostile kind met and the server's peak RSS,
            descriptors and CPU (from /proc, with --server-pid).
            """,
        options: chaosSettings,
        sections: [
            (
                "EXIT STATUS",
                """
                  0 when the well-behaved clients lost nothing and every check held
                  (descriptors back to baseline, slow consumers dropped in chat, ...);
                  1 otherwise; 64 for bad usage; 130 (SIGINT) or 143 (SIGTERM) when
                  interrupted, after printing what was measured until then.
                """
            )
        ])

    static func parseChaos(_ arguments: [String]) throws(UsageError) -> LoadCommand {
        var options = ChaosOptions()
        switch try chaosParser.parse(arguments, into: &options) {
        case .help: return .help(chaosParser.helpText)
        case .version: return .version
        case .parsed:
            let host = options.host.lowercased()
            guard host == "localhost" || host == "::1" || host.hasPrefix("127.") else {
                throw UsageError("chaos runs against a server on this machine only: --host must be 127.0.0.1, ::1 or localhost")
            }
            if options.duration < 2 { throw UsageError("--duration must be at least 2 seconds") }
            if options.lineTimeout != nil && options.mode != .chat {
                throw UsageError("--line-timeout applies to chat (the server's line-timeout is chat-only)")
            }
            return .chaos(options)
        }
    }

    public static var chaosHelpText: String { chaosParser.helpText }
}

// MARK: - Running

enum Chaos {
    static let verifyRoom = "chaos-verify"

    static func run(_ options: ChaosOptions) -> Int32 {
        Signals.ignoreBrokenPipe()
        // Ctrl-C or SIGTERM ends the run early with what was measured; a second
        // one exits at once, but not with the server's descriptor limit lowered.
        let interruption = Interruption()
        let limits = LimitGuard()
        do {
            try Signals.watch([.interrupt, .terminate]) { signal in
                if !interruption.request(signal) {
                    limits.restore()
                    System.exit(128 + signal.rawValue)
                }
            }
        } catch {
            System.writeToStandardError("echochat-load: cannot watch signals (Ctrl-C will not report): \(error)\n")
        }
        let result: ChaosResult
        do {
            result = try chaos(options, interruption: interruption, limits: limits)
        } catch {
            limits.restore()
            System.writeToStandardError("Error: \(error)\n")
            return 1
        }
        return LoadMain.emit(summary: result.summary, json: result.json.text, to: options.jsonPath, status: result.exitStatus)
    }

    /// Runs `body` on a thread of its own (inline if no thread can be had).
    static func background(_ name: String, _ body: @escaping @Sendable () -> Void) -> ThreadHandle? {
        if let handle = try? Threads.spawn(name: name, body) { return handle }
        body()
        return nil
    }

    static func chaos(_ options: ChaosOptions, interruption: Interruption, limits: LimitGuard) throws(LoadRunError) -> ChaosResult {
        let address = try LoadRunner.resolve(host: options.host, port: options.port)
        let limit = System.openFileLimit()
        if limit.soft < limit.hard { try? System.setOpenFileLimit(soft: limit.hard) }
        let target = ChaosTarget(address: address, chat: options.mode == .chat, interruption: interruption)
        let progress = !options.quiet && Terminal.isTerminal(FileDescriptor.standardError.rawValue)
        func note(_ text: String) { if progress { System.writeToStandardError("chaos: \(text)\n") } }

        var result = ChaosResult()
        result.mode = options.mode
        result.host = options.host
        result.port = options.port
        result.durationSeconds = options.duration
        result.serverPID = options.serverPID
        result.lineTimeout = options.lineTimeout
        result.maxSaturatedCPU = options.maxSaturatedCPU
        result.settleSeconds = options.settle

        // The server before anything of ours connects.
        var sampler: ServerSampler?
        if let pid = options.serverPID {
            guard let descriptors = ServerSampler.descriptorCount(pid: pid), let status = ServerSampler.status(pid: pid) else {
                throw LoadRunError("cannot read /proc/\(pid)/fd and /proc/\(pid)/status: is \(pid) the server's pid, run by this user?")
            }
            result.descriptorsBaseline = descriptors
            result.rssBaseline = status.rss
            sampler = ServerSampler(pid: pid, countsDescriptors: true)
            sampler?.start()
        }

        // Nothing to do without a server (and no point in waiting --duration to say so).
        guard let probe = ChaosSocket.open(address, timeout: 5) else {
            _ = sampler?.stop()
            throw LoadRunError("cannot connect to \(options.host):\(options.port): is the server running?")
        }
        probe.close()

        // The well-behaved clients: one LoadRunner run on a thread of its own.
        var load = LoadOptions()
        load.host = options.host
        load.port = options.port
        load.mode = options.mode
        load.connections = options.clients
        load.threads = 1
        load.duration = options.duration
        load.rate = options.effectiveRate
        load.warmup = 0
        load.timeout = 30
        if options.mode == .chat {
            load.senders = options.senders
            load.size = 100
            load.room = verifyRoom
        } else {
            load.pipeline = 4
        }
        let garbagePayloads = GarbageChaos.payloads(chat: target.chat)
        note("connecting \(options.clients) well-behaved clients")
        let wellBehaved = Lock<Result<LoadReport, LoadRunError>?>(nil)
        let started = Doorbell()
        let verifier = background("chaos-verify") { [load] in
            let outcome: Result<LoadReport, LoadRunError>
            do throws(LoadRunError) {
                outcome = .success(try LoadRunner.run(load, onStart: { started.ring() }, interruption: interruption))
            } catch {
                outcome = .failure(error)
            }
            wellBehaved.withLock { $0 = outcome }
            started.ring()
        }
        _ = started.wait(untilMonotonicNanoseconds: Clock.monotonicNanoseconds() + 120_000_000_000)

        let t0 = Clock.monotonicNanoseconds()
        let end = t0 + Int64(options.duration * 1e9)
        let stormShare = options.serverPID != nil ? 0.6 : 0.9
        let stormEnd = t0 + Int64(options.duration * stormShare * 1e9)
        result.stormSeconds = options.duration * stormShare
        var cpuStormStart = 0.0
        if let pid = options.serverPID { cpuStormStart = ServerSampler.cpuSeconds(pid: pid) }

        let startedFine = wellBehaved.withLock { state -> Bool in
            if case .failure? = state { return false }
            return true
        }
        if startedFine {
            note("storm for \(Format.compact(result.stormSeconds)) s: \(options.flooders) flooders, \(options.slowConsumers) slow consumers, \(options.resets) resets, garbage; \(options.slowloris) slowloris for \(Format.compact(options.duration)) s")
            let flood = Lock(FloodResult())
            let resets = Lock(ResetResult())
            let slowloris = Lock(SlowlorisResult())
            let garbage = Lock(GarbageResult())
            let lorisThread = background("chaos-slowloris") {
                // With the server's line-timeout: every one must be closed
                // within it (plus 5 s of slack for a busy machine).
                let outcome = SlowlorisChaos.run(
                    target, count: options.slowloris, until: end, closeWithin: options.lineTimeout.map { $0 + 5 })
                slowloris.withLock { $0 = outcome }
            }
            let storm = [
                background("chaos-flood") {
                    let outcome = FloodChaos.run(target, flooders: options.flooders, slowConsumers: options.slowConsumers, until: stormEnd)
                    flood.withLock { $0 = outcome }
                },
                background("chaos-resets") {
                    let outcome = ResetChaos.run(target, count: options.resets, until: stormEnd)
                    resets.withLock { $0 = outcome }
                },
                background("chaos-garbage") {
                    let outcome = GarbageChaos.run(target, payloads: garbagePayloads, until: stormEnd)
                    garbage.withLock { $0 = outcome }
                },
            ]
            for thread in storm { thread?.join() }
            if let pid = options.serverPID {
                let seconds = Double(Clock.monotonicNanoseconds() - t0) / 1e9
                result.cpuStormPercent = seconds > 0 ? 100 * (ServerSampler.cpuSeconds(pid: pid) - cpuStormStart) / seconds : 0
                if interruption.signal == nil {
                    note("descriptor exhaustion until the end")
                    result.exhaustion = ExhaustionChaos.run(target, pid: pid, until: end, limits: limits)
                }
            }
            lorisThread?.join()
            result.flood = flood.withLock { $0 }
            result.resets = resets.withLock { $0 }
            result.slowloris = slowloris.withLock { $0 }
            result.garbage = garbage.withLock { $0 }
        }
        verifier?.join()
        switch wellBehaved.withLock({ $0 }) {
        case .success(let report)?: result.wellBehaved = report
        case .failure(let error)?: result.wellBehavedError = error.description
        case nil: result.wellBehavedError = "no result"
        }

        // Every client of ours has closed: the server must let go of them all.
        if let pid = options.serverPID, let sampler {
            note("waiting for the server's descriptors to return to \(result.descriptorsBaseline)")
            let closed = Clock.monotonicNanoseconds()
            let deadline = closed + Int64(options.settle * 1e9)
            while true {
                let now = Clock.monotonicNanoseconds()
                guard let count = ServerSampler.descriptorCount(pid: pid) else { break }
                result.descriptorsEnd = count
                if count <= result.descriptorsBaseline {
                    result.descriptorsBackAfter = Double(now - closed) / 1e9
                    break
                }
                if now >= deadline { break }
                Clock.sleep(nanoseconds: 50_000_000)
            }
            let summary = sampler.stop()
            result.rssPeak = max(summary.peak, result.rssBaseline)
            result.threadsPeak = summary.threadsPeak
            result.descriptorsPeak = max(summary.descriptorsPeak, result.descriptorsBaseline, result.descriptorsEnd)
            result.serverExited = summary.exited || ServerSampler.status(pid: pid) == nil
        }
        result.interruption = interruption.signal
        return result
    }
}
