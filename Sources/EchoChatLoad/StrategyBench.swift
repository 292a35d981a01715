import EchoChatPOSIX

/// `echochat-load bench`: each strategy in turn against the fixed workloads,
/// a fresh server per run, results as markdown, SVG and JSON.
enum StrategyBench {
    static func run(_ options: BenchOptions, arguments: [String]) -> Int32 {
        let pinning = Pinning(server: options.serverCPUs, load: options.loadCPUs)
        if let invalid = pinning.invalid {
            System.writeToStandardError("Error: \(invalid)\n")
            return 2
        }
        let serverCPUs = pinning.pinSelf(arguments: ["bench"] + arguments) ? pinning.server : nil
        Signals.ignoreBrokenPipe()
        // Servers inherit this limit; 10,000 held connections need it.
        let limit = System.openFileLimit()
        if limit.soft < limit.hard { try? System.setOpenFileLimit(soft: limit.hard) }
        guard let server = serverBinary(options.server) else { return 1 }
        let workloads = options.workloads.map { names in BenchWorkload.all.filter { names.contains($0.name) } } ?? BenchWorkload.all
        let duration = options.effectiveDuration
        var measurements: [BenchMeasurement] = []
        let started = Clock.monotonicNanoseconds()
        for run in 1...options.effectiveRuns {
            for workload in workloads {
                for strategy in options.strategies {
                    var measurement: BenchMeasurement
                    do {
                        measurement = try measure(
                            workload, strategy: strategy, server: server, pin: serverCPUs, duration: duration,
                            quick: options.quick)
                    } catch {
                        measurement = BenchMeasurement(workload: workload.name, strategy: strategy)
                        measurement.passed = false
                        measurement.note = error.description
                    }
                    measurements.append(measurement)
                    System.writeToStandardError(progressLine(workload, measurement, run: run, of: options.effectiveRuns))
                }
            }
        }
        let summary = BenchSummary(
            strategies: options.strategies, workloads: workloads, measurements: measurements,
            machine: MachineFacts.summary, pinning: pinning.description, runs: options.effectiveRuns,
            duration: duration, date: String(Clock.timestamp().prefix(10)))
        do {
            try System.makeDirectory(options.outputDirectory)
            try System.writeFile(options.outputDirectory + "/strategies.md", summary.markdown)
            try System.writeFile(options.outputDirectory + "/strategies.svg", summary.svg)
            try System.writeFile(options.outputDirectory + "/strategies.json", summary.json.text + "\n")
        } catch {
            System.writeToStandardError("Error: \(error)\n")
            return 1
        }
        System.writeToStandardOutput(summary.markdown)
        let minutes = Double(Clock.monotonicNanoseconds() - started) / 60e9
        System.writeToStandardError(
            "wrote \(options.outputDirectory)/strategies.md, .svg and .json in \(Format.fixed(minutes, decimals: 1)) min\n")
        return 0
    }

    static func serverBinary(_ given: String?) -> String? {
        var path = given
        if path == nil, let executable = System.executablePath, let slash = executable.lastIndex(of: "/") {
            path = String(executable[...slash]) + "echochat-server"
        }
        guard let path, System.isExecutable(path) else {
            System.writeToStandardError("Error: no server binary at \(path ?? "?"); pass --server PATH\n")
            return nil
        }
        return path
    }

    static func progressLine(_ workload: BenchWorkload, _ m: BenchMeasurement, run: Int, of runs: Int) -> String {
        var text = "[\(run)/\(runs)] \(Format.pad(workload.name, 11)) \(Format.pad(m.strategy, 7)) "
        switch workload.kind {
        case .hold:
            text += "RSS \(Format.bytes(Double(m.rssBefore))) -> \(Format.bytes(Double(m.rssHolding))), "
                + "\(Format.bytes(m.bytesPerConnection))/conn, \(m.threadsHolding) threads"
        case .chat:
            text += "\(Format.compact(m.rate)) deliveries/s, p99 \(Format.micros(m.p99Micros))"
        case .echo:
            text += "\(Format.compact(m.rate)) msgs/s, p99 \(Format.micros(m.p99Micros)), server \(Format.fixed(m.serverMicrosPerMessage, decimals: 1)) µs/msg"
        case .upload:
            text += "up \(Format.fixed(m.uploadMBPerSecond, decimals: 1)) MB/s (p99 \(Format.micros(m.p99Micros))), "
                + "down \(Format.fixed(m.downloadMBPerSecond, decimals: 1)) MB/s (p99 \(Format.micros(m.downloadP99Micros)))"
        case .chatDuringUploads:
            text += "chat p99 \(Format.micros(m.chatP99BaselineMicros)) alone, \(Format.micros(m.p99Micros)) during uploads "
                + "(\(Format.fixed(m.chatP99Ratio, decimals: 2))x) at \(Format.fixed(m.uploadMBPerSecond, decimals: 1)) MB/s"
        }
        if !m.passed { text += "  FAILED \(m.note)" }
        return text + "\n"
    }

    static func measure(
        _ workload: BenchWorkload, strategy: String, server binary: String, pin: CPUList?, duration: Double, quick: Bool
    ) throws(LoadRunError) -> BenchMeasurement {
        switch workload.kind {
        case .upload(let clients, let size):
            return try measureUploads(
                workload, strategy: strategy, server: binary, pin: pin, duration: duration, uploaders: clients, size: size,
                chat: false)
        case .chatDuringUploads(let uploaders, let size):
            return try measureUploads(
                workload, strategy: strategy, server: binary, pin: pin, duration: duration, uploaders: uploaders, size: size,
                chat: true)
        default: break
        }
        if workload.clusterServers > 0 {
            return try measureCluster(workload, strategy: strategy, server: binary, pin: pin, duration: duration)
        }
        var m = BenchMeasurement(workload: workload.name, strategy: strategy)
        var options = LoadOptions()
        options.quiet = true
        options.duration = duration
        options.timeout = 60
        let mode: String
        switch workload.kind {
        case .echo(let connections, let size, let pipeline):
            mode = "echo"
            options.connections = connections
            options.size = size
            options.pipeline = pipeline
            options.warmup = quick ? 0.5 : 1
        case .hold(let connections):
            mode = "echo"
            options.connections = connections
            options.hold = true
            options.duration = quick ? 1 : 3
        case .chat(let clients, let senders, let rate):
            mode = "chat"
            options.mode = .chat
            options.connections = clients
            options.senders = senders
            options.rate = rate
        case .upload, .chatDuringUploads: throw LoadRunError("measured by measureUploads")
        }
        let server = try BenchServer(
            binary: binary, arguments: ["--mode", mode, "--strategy", strategy, "--max-clients", "20000"], cpus: pin)
        options.port = server.port
        let before = server.status()
        let cpuBefore = server.cpuSeconds()
        let pid = server.pid
        let holding = Lock<(rss: Int, threads: Int)>((0, 0))
        let report: LoadReport
        do {
            report = try LoadRunner.run(options, progress: false) {
                let status = readStatus(pid: pid)
                holding.withLock { $0 = status }
            }
        } catch {
            server.stop()
            throw error
        }
        let cpu = server.cpuSeconds() - cpuBefore
        if !server.stop() { m.note = "server did not stop cleanly" }
        m.passed = report.passed
        if !report.passed {
            m.note += (m.note.isEmpty ? "" : "; ")
                + "errors \(report.errors), mismatches \(report.mismatches), lost \(report.lost)"
        }
        m.p99Micros = report.latency.p99
        switch workload.kind {
        case .echo:
            m.rate = report.msgsPerSecond
            m.serverMicrosPerMessage = report.messagesTotal > 0 ? cpu * 1e6 / Double(report.messagesTotal) : 0
        case .chat:
            m.rate = report.deliveriesPerSecond
            m.serverMicrosPerMessage = report.deliveries > 0 ? cpu * 1e6 / Double(report.deliveries) : 0
        case .hold:
            let status = holding.withLock { $0 }
            m.rssBefore = before.rss
            m.rssHolding = status.rss
            m.threadsHolding = status.threads
            m.connections = report.aliveAfterConnect
        case .upload, .chatDuringUploads: break
        }
        return m
    }

    /// A chat row through a cluster: a `redis-server` of its own on a free
    /// port, `workload.clusterServers` servers of `strategy` joined through
    /// it (all on the server's CPUs when pinning), the clients spread over
    /// them. Server CPU is the servers' and Redis's together; the note gives
    /// the extra p99 of deliveries that crossed servers.
    static func measureCluster(
        _ workload: BenchWorkload, strategy: String, server binary: String, pin: CPUList?, duration: Double
    ) throws(LoadRunError) -> BenchMeasurement {
        guard case .chat(let clients, let senders, let rate) = workload.kind else { throw LoadRunError("a cluster row is a chat row") }
        var m = BenchMeasurement(workload: workload.name, strategy: strategy)
        let redisPort: Int
        do {
            let probe = try Socket.listen(host: "127.0.0.1", port: 0)
            redisPort = try probe.localAddress().port
            probe.close()
        } catch {
            throw LoadRunError("no free port for redis-server: \(error)")
        }
        let redisArguments = ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        let redis: ChildProcess
        do {
            redis = try pin.map { try ChildProcess("taskset", ["-c", $0.description, "redis-server"] + redisArguments, stdout: .pipe, stderr: .discard) }
                ?? ChildProcess("redis-server", redisArguments, stdout: .pipe, stderr: .discard)
        } catch {
            throw LoadRunError("cannot start redis-server (apt-get install redis-server): \(error)")
        }
        defer { _ = redis.terminate(grace: 5) }
        var ready = false
        while !ready, let line = redis.readLine(timeout: 10, fromStandardOutput: true) { ready = line.contains("Ready to accept connections") }
        guard ready else { throw LoadRunError("redis-server did not start (is it installed? apt-get install redis-server)") }

        var servers: [BenchServer] = []
        defer { for server in servers { server.stop() } }
        for index in 1...workload.clusterServers {
            servers.append(try BenchServer(
                binary: binary,
                arguments: [
                    "--mode", "chat", "--strategy", strategy, "--max-clients", "20000", "--cluster", "redis://127.0.0.1:\(redisPort)",
                    "--node-id", "bench-\(index)",
                ], cpus: pin))
        }
        // Every server counts them all before the clients come.
        let formed = "cluster: \(servers.count) nodes:"
        let deadline = Clock.monotonicNanoseconds() + 10_000_000_000
        while !servers.allSatisfy({ $0.log.withLock { $0.contains { $0.contains(formed) } } }) {
            guard Clock.monotonicNanoseconds() < deadline else { throw LoadRunError("the cluster did not form within 10 s") }
            Clock.sleep(nanoseconds: 20_000_000)
        }
        var options = LoadOptions()
        options.quiet = true
        options.duration = duration
        options.timeout = 60
        options.mode = .chat
        options.connections = clients
        options.senders = senders
        options.rate = rate
        options.hosts = servers.map { LoadOptions.Target(host: "127.0.0.1", port: $0.port) }
        let cpuBefore = servers.map { $0.cpuSeconds() }.reduce(0, +) + processCPUSeconds(redis.pid)
        let report = try LoadRunner.run(options, progress: false)
        let cpu = servers.map { $0.cpuSeconds() }.reduce(0, +) + processCPUSeconds(redis.pid) - cpuBefore
        m.passed = report.passed
        if !report.passed { m.note = "errors \(report.errors), mismatches \(report.mismatches), lost \(report.lost)" }
        m.rate = report.deliveriesPerSecond
        m.p99Micros = report.latency.p99
        m.serverMicrosPerMessage = report.deliveries > 0 ? cpu * 1e6 / Double(report.deliveries) : 0
        if let same = report.sameServerLatency, let cross = report.crossServerLatency {
            m.note += (m.note.isEmpty ? "" : "; ") + "across servers p99 +\(Format.micros(max(0, cross.p99 - same.p99)))"
        }
        return m
    }

    static func processCPUSeconds(_ pid: Int32) -> Double {
        guard let bytes = try? System.readFile("/proc/\(pid)/stat") else { return 0 }
        return Double(ProcFacts.cpuTicks(String(decoding: bytes, as: UTF8.self))) / Double(System.clockTicksPerSecond)
    }

    /// The ping of the chat-uploads row: two clients in a room of their own,
    /// each sending 100 lines/s to the other; its p99 is send to delivery.
    static func chatPing(port: Int, duration: Double) -> LoadOptions {
        var options = LoadOptions()
        options.quiet = true
        options.port = port
        options.mode = .chat
        options.connections = 2
        options.senders = 2
        options.rate = 100
        options.duration = duration
        options.timeout = 60
        options.room = "bench-ping"
        return options
    }

    /// The file-sharing rows, on a chat server with a fresh upload
    /// directory (removed afterwards) and a quota no run reaches:
    /// `uploaders` clients upload `size`-byte files for `duration` seconds,
    /// then download them all. With `chat`, a chat ping runs alone for
    /// `duration` first, then again while the uploads go on.
    static func measureUploads(
        _ workload: BenchWorkload, strategy: String, server binary: String, pin: CPUList?, duration: Double, uploaders: Int,
        size: Int, chat: Bool
    ) throws(LoadRunError) -> BenchMeasurement {
        var m = BenchMeasurement(workload: workload.name, strategy: strategy)
        let directory = (System.environmentVariable("TMPDIR") ?? "/tmp") + "/echochat-bench-files-\(System.processID)-\(strategy)"
        defer { removeUploads(directory) }
        let server = try BenchServer(
            binary: binary,
            arguments: [
                "--mode", "chat", "--strategy", strategy, "--upload-dir", directory, "--max-upload", String(max(size, 16 << 20)),
                "--upload-quota", "1000G",
            ], cpus: pin)
        var uploads = LoadOptions()
        uploads.quiet = true
        uploads.port = server.port
        uploads.mode = .upload
        uploads.connections = uploaders
        uploads.size = size
        uploads.timeout = 60
        // The chat ping starts half a second into the uploads and must end before them.
        uploads.duration = chat ? duration + 1.5 : duration
        var report: LoadReport
        var baseline: LoadReport?
        var during: LoadReport?
        do throws(LoadRunError) {
            if chat {
                baseline = try LoadRunner.run(chatPing(port: server.port, duration: duration))
                let started = Doorbell()
                let outcome = Lock<(report: LoadReport?, error: LoadRunError?)>((nil, nil))
                let options = uploads
                let thread: ThreadHandle
                do {
                    thread = try Threads.spawn(name: "bench-uploads") {
                        do throws(LoadRunError) {
                            let report = try UploadRunner.run(options, onUploadsStart: { started.ring() })
                            outcome.withLock { $0.report = report }
                        } catch {
                            outcome.withLock { $0.error = error }
                        }
                        started.ring()
                    }
                } catch {
                    throw LoadRunError("cannot start the upload thread: \(error)")
                }
                _ = started.wait(untilMonotonicNanoseconds: Clock.monotonicNanoseconds() + 60_000_000_000)
                Clock.sleep(nanoseconds: 500_000_000)
                var pingError: LoadRunError?
                do throws(LoadRunError) { during = try LoadRunner.run(chatPing(port: server.port, duration: duration)) } catch {
                    pingError = error
                }
                thread.join()
                let result = outcome.withLock { $0 }
                if let error = result.error ?? pingError { throw error }
                guard let uploaded = result.report else { throw LoadRunError("the upload run delivered nothing") }
                report = uploaded
            } else {
                report = try UploadRunner.run(uploads)
            }
        } catch {
            server.stop()
            throw error
        }
        if !server.stop() { m.note = "server did not stop cleanly" }
        var problems: [String] = []
        if !report.passed {
            problems.append("uploads: errors \(report.errors), mismatches \(report.mismatches), lost \(report.lost)")
        }
        for (label, ping) in [("chat alone", baseline), ("chat during uploads", during)] {
            guard let ping, !ping.passed else { continue }
            problems.append("\(label): errors \(ping.errors), mismatches \(ping.mismatches), lost \(ping.lost)")
        }
        m.passed = problems.isEmpty
        if !problems.isEmpty { m.note += (m.note.isEmpty ? "" : "; ") + problems.joined(separator: "; ") }
        m.uploadMBPerSecond = report.uploadMBPerSecond
        m.downloadMBPerSecond = report.downloadMBPerSecond
        m.downloadP99Micros = report.downloadLatency.p99
        m.rate = report.uploadMBPerSecond
        if chat {
            m.chatP99BaselineMicros = baseline?.latency.p99 ?? 0
            m.p99Micros = during?.latency.p99 ?? 0
        } else {
            m.p99Micros = report.uploadLatency.p99
        }
        return m
    }

    /// Removes a bench upload directory: its files (the server keeps no
    /// subdirectories), then itself.
    static func removeUploads(_ path: String) {
        guard System.isDirectory(path), let names = try? System.directoryEntries(path) else { return }
        if let directory = try? Directory(path, create: false) {
            for name in names { directory.remove(name) }
        }
        try? System.removeDirectory(path)
    }

    static func readStatus(pid: Int32) -> (rss: Int, threads: Int) {
        guard let bytes = try? System.readFile("/proc/\(pid)/status") else { return (0, 0) }
        return ProcFacts.status(String(decoding: bytes, as: UTF8.self))
    }
}

/// `echochat-load bench-loadgen`: this client and the C reference against the
/// same server, alternating, same pinning; prints both rates and the ratio.
enum LoadgenComparison {
    static func run(_ options: CompareOptions, arguments: [String]) -> Int32 {
        let pinning = Pinning()
        let serverCPUs = pinning.pinSelf(arguments: ["bench-loadgen"] + arguments) ? pinning.server : nil
        Signals.ignoreBrokenPipe()
        // The parser makes --loadgen required.
        let loadgen = options.loadgen ?? ""
        guard System.isExecutable(loadgen) else {
            System.writeToStandardError(
                "Error: no executable load generator at '\(loadgen)'.\n" + LoadCommandLine.loadgenNeeded + "\n")
            return 1
        }
        guard let binary = StrategyBench.serverBinary(options.server) else { return 1 }
        let server: BenchServer
        do {
            server = try BenchServer(binary: binary, arguments: ["--mode", "echo", "--strategy", "epoll"], cpus: serverCPUs)
        } catch {
            System.writeToStandardError("Error: \(error)\n")
            return 1
        }
        defer { server.stop() }
        let workloads: [(name: String, pipeline: Int)] = [("pp100", 1), ("pipe16x100", 16)]
        var loadgenRates: [String: [Double]] = [:]
        var ourRates: [String: [Double]] = [:]
        // CPU time each tool spent per message, µs: the tool's own cost, which
        // the server's speed does not hide.
        var loadgenCPU: [String: [Double]] = [:]
        var ourCPU: [String: [Double]] = [:]
        var failed = false
        System.writeToStandardError("server: epoll on port \(server.port); \(pinning.description)\n")
        for run in 1...options.runs {
            for workload in workloads {
                // Alternate which tool goes first, so drift on a shared machine hits both.
                for ours in run % 2 == 1 ? [false, true] : [true, false] {
                    if ours {
                        var load = LoadOptions()
                        load.port = server.port
                        load.connections = 100
                        load.pipeline = workload.pipeline
                        load.duration = options.duration
                        load.warmup = 1
                        load.quiet = true
                        do {
                            let report = try LoadRunner.run(load)
                            if !report.passed { failed = true }
                            ourRates[workload.name, default: []].append(report.msgsPerSecond)
                            if report.messagesTotal > 0 {
                                ourCPU[workload.name, default: []].append(report.loadCPUSeconds * 1e6 / Double(report.messagesTotal))
                            }
                            System.writeToStandardError("[\(run)] \(workload.name) echochat-load: \(Format.compact(report.msgsPerSecond)) msgs/s, \(report.threads) thread, CPU \(Format.fixed(report.loadCPUPercent, decimals: 0))%\n")
                        } catch {
                            System.writeToStandardError("echochat-load failed: \(error)\n")
                            failed = true
                        }
                    } else {
                        let arguments = ["-c", "100", "-d", Format.fixed(options.duration, decimals: 3), "-w", "1", "-s", "64",
                                         "-p", String(workload.pipeline), "-H", "127.0.0.1", "-P", String(server.port)]
                        let measured = runLoadgen(loadgen, arguments, pin: serverCPUs == nil ? nil : pinning.load, timeout: options.duration + 60)
                        if let (rate, cpuPercent) = measured {
                            loadgenRates[workload.name, default: []].append(rate)
                            if rate > 0 { loadgenCPU[workload.name, default: []].append(cpuPercent / 100 / rate * 1e6) }
                            System.writeToStandardError("[\(run)] \(workload.name) loadgen:       \(Format.compact(rate)) msgs/s\n")
                        } else {
                            failed = true
                        }
                    }
                }
            }
        }
        var table = "| workload | loadgen (C) msgs/s | echochat-load msgs/s | ratio | CPU per msg, loadgen | CPU per msg, echochat-load |\n|---|---:|---:|---:|---:|---:|\n"
        for workload in workloads {
            let theirs = median(loadgenRates[workload.name] ?? [])
            let mine = median(ourRates[workload.name] ?? [])
            let runs = (loadgenRates[workload.name] ?? []).map { Format.compact($0) }.joined(separator: ", ")
            let ourRuns = (ourRates[workload.name] ?? []).map { Format.compact($0) }.joined(separator: ", ")
            table += "| \(workload.name) | \(Format.compact(theirs)) (\(runs)) | \(Format.compact(mine)) (\(ourRuns)) | "
                + "\(theirs > 0 ? Format.fixed(100 * mine / theirs, decimals: 1) + "%" : "–") | "
                + "\(Format.fixed(median(loadgenCPU[workload.name] ?? []), decimals: 2)) µs | "
                + "\(Format.fixed(median(ourCPU[workload.name] ?? []), decimals: 2)) µs |\n"
        }
        System.writeToStandardOutput(
            "echochat-load vs loadgen, same epoll server, medians of \(options.runs) runs of \(Format.fixed(options.duration, decimals: 1)) s after 1 s warmup; \(pinning.description)\n\n" + table)
        return failed ? 1 : 0
    }

    /// Runs loadgen; its msgs/s and its CPU% over the measured window.
    static func runLoadgen(_ path: String, _ arguments: [String], pin: CPUList?, timeout: Double) -> (Double, Double)? {
        do {
            let child = try pin.map { cpus throws(SystemError) in
                try ChildProcess("taskset", ["-c", cpus.description, path] + arguments, stdout: .pipe, stderr: .discard)
            } ?? ChildProcess(path, arguments, stdout: .pipe, stderr: .discard)
            let output = child.readAllStandardOutput(timeout: timeout)
            if child.wait(timeout: 5) == nil { child.terminate(grace: 1) }
            guard let rate = JSONValue.number(forKey: "msgs_per_s", in: output) else {
                System.writeToStandardError("loadgen printed no msgs_per_s: \(output)\n")
                return nil
            }
            return (rate, JSONValue.number(forKey: "loadgen_cpu_pct", in: output) ?? 0)
        } catch {
            System.writeToStandardError("cannot run \(path): \(error)\n")
            return nil
        }
    }
}
