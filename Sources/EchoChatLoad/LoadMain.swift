import EchoChatOptions
import EchoChatPOSIX

/// `echochat-load`: parse, run, report. Returns the exit status.
public enum LoadMain {
    public static func run(_ arguments: [String]) -> Int32 {
        let command: LoadCommand
        do {
            command = try LoadCommandLine.parse(arguments)
        } catch {
            System.writeToStandardError(LoadCommandLine.errorText(error, arguments: arguments))
            return usageExitStatus
        }
        switch command {
        case .help(let text):
            System.writeToStandardOutput(text)
            return 0
        case .version:
            System.writeToStandardOutput(LoadCommandLine.parser.versionText)
            return 0
        case .bench(let options):
            return StrategyBench.run(options, arguments: Array(arguments.dropFirst()))
        case .compare(let options):
            return LoadgenComparison.run(options, arguments: Array(arguments.dropFirst()))
        case .storm(let options):
            return Storm.run(options, arguments: Array(arguments.dropFirst()))
        case .chaos(let options):
            return Chaos.run(options)
        case .run(let options):
            return runLoad(options)
        }
    }

    static func runLoad(_ options: LoadOptions) -> Int32 {
        let progress = !options.quiet && Terminal.isTerminal(FileDescriptor.standardError.rawValue)
        // Ctrl-C or SIGTERM ends the run early with a report of what was
        // measured (exit 130 or 143); a second one ends the process at once.
        // Watched before any worker thread exists, so only the watcher gets them.
        let interruption = Interruption()
        do {
            try Signals.watch([.interrupt, .terminate]) { signal in
                if !interruption.request(signal) { System.exit(128 + signal.rawValue) }
            }
        } catch {
            System.writeToStandardError("echochat-load: cannot watch signals (Ctrl-C will not report): \(error)\n")
        }
        let report: LoadReport
        do {
            report = try LoadRunner.run(options, progress: progress, interruption: interruption)
        } catch {
            System.writeToStandardError("Error: \(error)\n")
            return 1
        }
        return emit(summary: report.summary, json: report.json.text, to: options.jsonPath, status: report.exitStatus)
    }

    /// Prints a run's summary and writes its JSON where asked; returns
    /// `status`, or 1 if the JSON cannot be written. With `--json -`, stdout
    /// carries the JSON alone and the summary goes to stderr.
    static func emit(summary: String, json: String, to jsonPath: String?, status: Int32) -> Int32 {
        if jsonPath == "-" {
            System.writeToStandardError(summary)
            System.writeToStandardOutput(json + "\n")
            return status
        }
        System.writeToStandardOutput(summary)
        if let path = jsonPath {
            do { try System.writeFile(path, json + "\n") } catch {
                System.writeToStandardError("Error: cannot write \(path): \(error)\n")
                return 1
            }
        }
        return status
    }
}
