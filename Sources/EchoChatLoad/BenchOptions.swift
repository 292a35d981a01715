import EchoChatOptions

extension LoadCommandLine {
    static let benchSettings: [Option<BenchOptions>] = [
        Option("server", placeholder: "path", help: "The echochat-server binary",
               default: "echochat-server beside this program") { o, v, n throws(UsageError) in o.server = try Value.path(v, n) },
        Option("out", placeholder: "dir", help: "Where strategies.md, .svg and .json go",
               default: ".bench") { o, v, n throws(UsageError) in o.outputDirectory = try Value.path(v, n) },
        Option("quick", placeholder: nil, help: "1 run of 1 s per workload, for a smoke test") { o, _, _ throws(UsageError) in
            o.quick = true
        },
        Option("runs", placeholder: "n", help: "Runs per workload and strategy; the median is shown",
               default: "3, or 1 with --quick") { o, v, n throws(UsageError) in
            o.runs = try Value.integer(v, n, in: 1...50)
        },
        Option("duration", placeholder: "seconds", help: "Measured seconds per run",
               default: "5, or 1 with --quick") { o, v, n throws(UsageError) in
            o.duration = try Value.seconds(v, n, positive: true, maximum: 86_400)
        },
        Option("strategies", placeholder: "list", help: "Comma-separated strategies",
               default: "epoll,reactors,async,thread,pool") { o, v, n throws(UsageError) in
            let names = v.split(separator: ",").map(String.init)
            guard !names.isEmpty, names.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" } }) else {
                throw UsageError("invalid value '\(v)' for \(n): expected names separated by commas")
            }
            o.strategies = names
        },
        Option("server-cpus", placeholder: "list",
               help: "CPUs the server runs on (taskset list, e.g. 0 or 0-3)",
               default: "0 on a machine with 2 or more CPUs, else not pinned") { o, v, n throws(UsageError) in
            o.serverCPUs = try CPUList.parse(v, n)
        },
        Option("load-cpus", placeholder: "list", help: "CPUs this load client runs on (taskset list)",
               default: "1 on a machine with 2 or more CPUs, else not pinned") { o, v, n throws(UsageError) in
            o.loadCPUs = try CPUList.parse(v, n)
        },
        Option("workloads", placeholder: "list",
               help: "Comma-separated workloads: " + BenchWorkload.all.map(\.name).joined(separator: ", "),
               default: "all") { o, v, n throws(UsageError) in
            let names = v.split(separator: ",").map(String.init)
            for name in names where !BenchWorkload.all.contains(where: { $0.name == name }) {
                throw UsageError("invalid value '\(v)' for \(n): unknown workload '\(name)'")
            }
            guard !names.isEmpty else { throw UsageError("invalid value '\(v)' for \(n): expected workload names") }
            o.workloads = names
        },
    ]

    static let compareSettings: [Option<CompareOptions>] = [
        Option("loadgen", placeholder: "path",
               help: "The C reference load generator, built from loadgen.c of the development kit (required)",
               isRequired: true) {
            o, v, n throws(UsageError) in o.loadgen = try Value.path(v, n)
        },
        Option("server", placeholder: "path", help: "The echochat-server binary",
               default: "echochat-server beside this program") { o, v, n throws(UsageError) in o.server = try Value.path(v, n) },
        Option("runs", placeholder: "n", help: "Runs of each tool per workload; medians are compared",
               default: "3") { o, v, n throws(UsageError) in o.runs = try Value.integer(v, n, in: 1...50) },
        Option("duration", placeholder: "seconds", help: "Measured seconds per run (after 1 s warmup)",
               default: "5") { o, v, n throws(UsageError) in
            o.duration = try Value.seconds(v, n, positive: true, maximum: 86_400)
        },
    ]

    static let benchParser = OptionParser(
        command: "echochat-load bench",
        overview: """
            Start echochat-server with each strategy in turn, run a fixed set
            of workloads against it, and write a markdown table and an SVG chart.
            The server runs on CPU 0 and the load on CPU 1 (with taskset) when the
            machine has two or more CPUs; --server-cpus and --load-cpus choose
            others (a strategy that sizes its threads by CPUs, like reactors
            and pool, follows the server's list).
            """,
        options: benchSettings,
        sections: [("WORKLOADS", OptionParser<BenchOptions>.table(BenchWorkload.all.map { ($0.name, $0.title) }))])

    /// What bench-loadgen needs and this repository does not hold: said by
    /// its help and by the error when `--loadgen` is missing.
    static let loadgenNeeded = """
        bench-loadgen needs the C reference load generator, loadgen.c, from the
        EchoChat development kit (it is not part of this repository). Build it,
        for example with 'gcc -O2 -pthread -o loadgen loadgen.c', and pass the
        binary with --loadgen PATH.
        """

    static let compareParser = OptionParser(
        command: "echochat-load bench-loadgen",
        overview: """
            Measure echochat-load against the C reference load generator on the
            same server (epoll strategy, CPU 0), both on CPU 1: ping-pong with 100
            connections and 16 in flight on 100 connections; print both rates
            and the ratio.

            \(loadgenNeeded)
            """,
        options: compareSettings)

    static func parseBench(_ arguments: [String]) throws(UsageError) -> LoadCommand {
        var options = BenchOptions()
        switch try benchParser.parse(arguments, into: &options) {
        case .help: return .help(benchHelpText)
        case .version: return .version
        case .parsed: return .bench(options)
        }
    }

    static func parseCompare(_ arguments: [String]) throws(UsageError) -> LoadCommand {
        var options = CompareOptions()
        switch try compareParser.parse(arguments, into: &options) {
        case .help: return .help(compareHelpText)
        case .version: return .version
        case .parsed:
            guard options.loadgen != nil else {
                throw UsageError("missing '--loadgen <path>'.\n" + loadgenNeeded)
            }
            return .compare(options)
        }
    }

    public static var benchHelpText: String { benchParser.helpText }
    public static var compareHelpText: String { compareParser.helpText }
}
