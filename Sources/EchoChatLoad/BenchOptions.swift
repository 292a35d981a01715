extension LoadCommandLine {
    static let benchSettings: [OptionSetting<BenchOptions>] = [
        OptionSetting(name: "server", short: nil, placeholder: "path", help: "The echochat-server binary",
                      defaultText: "echochat-server beside this program") { o, v, _ throws(LoadUsageError) in o.server = v },
        OptionSetting(name: "out", short: nil, placeholder: "dir", help: "Where strategies.md, .svg and .json go",
                      defaultText: ".bench") { o, v, _ throws(LoadUsageError) in o.outputDirectory = v },
        OptionSetting(name: "quick", short: nil, placeholder: nil, help: "1 run of 1 s per workload, for a smoke test",
                      defaultText: nil) { o, _, _ throws(LoadUsageError) in o.quick = true },
        OptionSetting(name: "runs", short: nil, placeholder: "n", help: "Runs per workload and strategy; the median is shown",
                      defaultText: "3, or 1 with --quick") { o, v, n throws(LoadUsageError) in
            o.runs = try Parse.integer(v, n, in: 1...50)
        },
        OptionSetting(name: "duration", short: nil, placeholder: "seconds", help: "Measured seconds per run",
                      defaultText: "5, or 1 with --quick") { o, v, n throws(LoadUsageError) in
            o.duration = try Parse.seconds(v, n, positive: true)
        },
        OptionSetting(name: "strategies", short: nil, placeholder: "list", help: "Comma-separated strategies",
                      defaultText: "epoll,thread,pool") { o, v, n throws(LoadUsageError) in
            let names = v.split(separator: ",").map(String.init)
            guard !names.isEmpty, names.allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isLetter || $0.isNumber || $0 == "-" } }) else {
                throw LoadUsageError("invalid value '\(v)' for \(n): expected names separated by commas")
            }
            o.strategies = names
        },
        OptionSetting(name: "workloads", short: nil, placeholder: "list",
                      help: "Comma-separated workloads: " + BenchWorkload.all.map(\.name).joined(separator: ", "),
                      defaultText: "all") { o, v, n throws(LoadUsageError) in
            let names = v.split(separator: ",").map(String.init)
            for name in names where !BenchWorkload.all.contains(where: { $0.name == name }) {
                throw LoadUsageError("invalid value '\(v)' for \(n): unknown workload '\(name)'")
            }
            guard !names.isEmpty else { throw LoadUsageError("invalid value '\(v)' for \(n): expected workload names") }
            o.workloads = names
        },
    ]

    static let compareSettings: [OptionSetting<CompareOptions>] = [
        OptionSetting(name: "loadgen", short: nil, placeholder: "path", help: "The C reference load generator",
                      defaultText: "/tmp/loadgen") { o, v, _ throws(LoadUsageError) in o.loadgen = v },
        OptionSetting(name: "server", short: nil, placeholder: "path", help: "The echochat-server binary",
                      defaultText: "echochat-server beside this program") { o, v, _ throws(LoadUsageError) in o.server = v },
        OptionSetting(name: "runs", short: nil, placeholder: "n", help: "Runs of each tool per workload; medians are compared",
                      defaultText: "3") { o, v, n throws(LoadUsageError) in o.runs = try Parse.integer(v, n, in: 1...50) },
        OptionSetting(name: "duration", short: nil, placeholder: "seconds", help: "Measured seconds per run (after 1 s warmup)",
                      defaultText: "5") { o, v, n throws(LoadUsageError) in o.duration = try Parse.seconds(v, n, positive: true) },
    ]

    static func parseBench(_ arguments: [String]) throws(LoadUsageError) -> LoadCommand {
        var options = BenchOptions()
        switch try parseFlags(arguments, settings: benchSettings, into: &options) {
        case .help: return .help(benchHelpText)
        case .version: return .version
        case .parsed: return .bench(options)
        }
    }

    static func parseCompare(_ arguments: [String]) throws(LoadUsageError) -> LoadCommand {
        var options = CompareOptions()
        switch try parseFlags(arguments, settings: compareSettings, into: &options) {
        case .help: return .help(compareHelpText)
        case .version: return .version
        case .parsed: return .compare(options)
        }
    }

    public static var benchHelpText: String {
        """
        OVERVIEW: Start echochat-server with each strategy in turn, run a fixed set
        of workloads against it, and write a markdown table and an SVG chart.
        The server runs on CPU 0 and the load on CPU 1 (with taskset) when the
        machine has two or more CPUs.

        USAGE: echochat-load bench [--server <path>] [--out <dir>] [--quick] [--runs <n>] [--strategies <list>] [--workloads <list>]

        WORKLOADS:
        \(BenchWorkload.all.map { "  " + Format.pad($0.name, 12) + $0.title }.joined(separator: "\n"))

        OPTIONS:
        \(renderOptions(benchSettings))

        """
    }

    public static var compareHelpText: String {
        """
        OVERVIEW: Measure echochat-load against the C reference load generator
        (../shared/bench/loadgen.c) on the same server (epoll strategy, CPU 0),
        both on CPU 1, ping-pong with 100 connections and 16 in flight on 100
        connections; print both rates and the ratio. Build loadgen first:
          gcc -O2 -pthread -o /tmp/loadgen ../shared/bench/loadgen.c

        USAGE: echochat-load bench-loadgen [--loadgen <path>] [--server <path>] [--runs <n>] [--duration <seconds>]

        OPTIONS:
        \(renderOptions(compareSettings))

        """
    }
}
