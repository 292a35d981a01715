import EchoChatPOSIX

/// Why a run could not start (as opposed to a run that found errors).
public struct LoadRunError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Runs one workload: starts the worker threads, steps them through their
/// phases, prints progress, merges their results into a `LoadReport`.
///
/// Threads: `threads` workers, each with its own epoll instance and its share
/// of the connections (connection i goes to worker i mod T), and the calling
/// thread, which only coordinates and prints. Workers share nothing but the
/// read-only options and message pattern, and counters they publish with
/// relaxed atomic stores; their histograms and counts are merged after they end.
public enum LoadRunner {
    /// The server's first address.
    static func resolve(host: String, port: Int) throws(LoadRunError) -> SocketAddress {
        do {
            guard let first = try SocketAddress.resolve(host: host, port: port, passive: false).first else {
                throw LoadRunError("cannot resolve \(host)")
            }
            return first
        } catch let error as LoadRunError {
            throw error
        } catch {
            throw LoadRunError("cannot resolve \(host): \(error)")
        }
    }

    /// `interruption`, when requested, ends the run early; the report then
    /// covers what was measured until then and says so. `onStart` is called
    /// once every connection is ready and the load begins (not for `--hold`).
    public static func run(
        _ options: LoadOptions, progress: Bool = false, onHolding: (@Sendable () -> Void)? = nil,
        onStart: (@Sendable () -> Void)? = nil, interruption: Interruption = Interruption()
    ) throws(LoadRunError) -> LoadReport {
        if options.mode == .upload {
            return try UploadRunner.run(options, progress: progress, interruption: interruption, onUploadsStart: onStart)
        }
        Signals.ignoreBrokenPipe()
        let targets = options.hosts.isEmpty ? [LoadOptions.Target(host: options.host, port: options.port)] : options.hosts
        var addresses: [SocketAddress] = []
        for target in targets { addresses.append(try resolve(host: target.host, port: target.port)) }
        let address = addresses[0]
        let connections = options.connections
        let threads = max(1, min(options.threads ?? Threads.availableCores, connections))

        // Descriptors: one per connection plus a few per worker (epoll) and spare.
        let needed = connections + 4 * threads + 64
        let limit = System.openFileLimit()
        if limit.soft < needed {
            guard limit.hard >= needed else {
                throw LoadRunError("\(connections) connections need about \(needed) file descriptors; the hard limit is \(limit.hard)")
            }
            do { try System.setOpenFileLimit(soft: limit.hard) } catch {
                throw LoadRunError("cannot raise the open-file limit to \(limit.hard): \(error)")
            }
        }

        // Source addresses: one 127.0.0.x per `perSource` connections when one
        // address's ephemeral ports would not be enough.
        var perSource = options.connectionsPerSource
        if perSource == nil, address.isIPv4Loopback {
            let ports = ephemeralPortCount()
            let usable = max(1000, ports - 2000)
            if connections > usable { perSource = usable }
        }
        if perSource != nil && !addresses.allSatisfy(\.isIPv4Loopback) {
            System.writeToStandardError("echochat-load: --per-source applies to IPv4 loopback targets only; ignored\n")
            perSource = nil
        }

        var perSenderLines = 0
        if options.mode == .chat {
            perSenderLines = options.messages ?? Int((options.effectiveRate * options.duration).rounded(.up)) + 1
            let memory = ChatTracker.memoryNeeded(
                receivers: connections, senders: options.effectiveSenders, perSender: perSenderLines)
            if memory > 2 << 30 {
                throw LoadRunError("tracking every line would need \(Format.bytes(Double(memory))); lower --connections, --senders, --rate or --duration")
            }
        }
        let pattern = options.mode == .echo && !options.hold
            ? EchoPattern(size: options.size, contiguous: options.pipeline) : nil
        let control = RunControl(
            options: options, addresses: addresses, perSource: perSource, pattern: pattern, workers: threads,
            onHolding: onHolding, interruption: interruption)

        var shares = [[Int]](repeating: [], count: threads)
        for id in 0..<connections { shares[id % threads].append(id) }
        let began = Clock.monotonicNanoseconds()
        var handles: [ThreadHandle] = []
        for worker in 0..<threads {
            let ids = shares[worker]
            do {
                handles.append(try Threads.spawn(name: "load-\(worker)") {
                    switch options.mode {
                    case .echo: EchoWorker.run(worker: worker, ids: ids, control: control)
                    case .chat: ChatWorker.run(worker: worker, ids: ids, control: control)
                    case .upload: break  // UploadRunner runs it
                    }
                })
            } catch {
                // Threads already started would wait for the others forever.
                System.writeToStandardError("echochat-load: cannot start worker threads: \(error)\n")
                System.exit(1)
            }
        }

        // Phase hand-offs; every worker bounds each phase itself.
        let phaseDeadline = { Clock.monotonicNanoseconds() + Int64((options.timeout + 60) * 1e9) }
        _ = control.waitForArrivals(deadline: phaseDeadline())
        let connectSeconds = Double(Clock.monotonicNanoseconds() - began) / 1e9
        switch (options.mode, options.hold) {
        case (.echo, false):
            control.startTime.store(Clock.monotonicNanoseconds(), ordering: .releasing)
            control.letGo()
            onStart?()
        case (.echo, true):
            control.startTime.store(Clock.monotonicNanoseconds(), ordering: .releasing)
            control.letGo()
            _ = control.waitForArrivals(deadline: phaseDeadline())
            onHolding?()
            control.letGo()
        case (.chat, _):
            control.letGo()
            _ = control.waitForArrivals(deadline: phaseDeadline())
            let room = control.shared.map { $0.maxWelcome.load(ordering: .relaxed) }.max() ?? 0
            control.roomSize.store(room, ordering: .releasing)
            control.letGo()
            _ = control.waitForArrivals(deadline: phaseDeadline())
            control.startTime.store(Clock.monotonicNanoseconds(), ordering: .releasing)
            control.letGo()
            onStart?()
        case (.upload, _): break
        }
        let start = control.startTime.load(ordering: .relaxed)
        let cpuAtStart = System.processCPUSeconds()

        // Progress until every worker has delivered its result.
        var done = 0
        var nextTick = Clock.monotonicNanoseconds() + 1_000_000_000
        var lastMessages = 0
        var lastBytes = 0
        var lastTick = Clock.monotonicNanoseconds()
        while done < threads {
            if control.finished.wait(untilMonotonicNanoseconds: nextTick) {
                done += 1
                continue
            }
            let now = Clock.monotonicNanoseconds()
            nextTick = now + 1_000_000_000
            guard progress else { continue }
            let messages = control.shared.reduce(0) { $0 + $1.messages.load(ordering: .relaxed) }
            let bytes = control.shared.reduce(0) { $0 + $1.bytes.load(ordering: .relaxed) }
            let seconds = Double(now - lastTick) / 1e9
            let line = LoadReport.progressLine(
                elapsed: Double(now - start) / 1e9,
                connections: control.shared.reduce(0) { $0 + $1.alive.load(ordering: .relaxed) },
                messagesPerSecond: Double(messages - lastMessages) / seconds,
                megabytesPerSecond: Double(bytes - lastBytes) / seconds / 1e6,
                p99Micros: Double(control.shared.map { $0.p99.load(ordering: .relaxed) }.max() ?? 0) / 1000,
                errors: control.shared.reduce(0) { $0 + $1.errors.load(ordering: .relaxed) },
                label: options.mode == .chat ? "deliveries/s" : "msgs/s")
            System.writeToStandardError("\r\u{1B}[K" + line)
            lastMessages = messages
            lastBytes = bytes
            lastTick = now
        }
        let finishedAt = Clock.monotonicNanoseconds()
        if progress { System.writeToStandardError("\r\u{1B}[K") }
        for handle in handles { handle.join() }
        let cpuAfter = System.processCPUSeconds()

        let results = control.results.withLock { table in (0..<threads).compactMap { table[$0]?.value } }
        var report = LoadReport()
        report.host = targets[0].host
        report.port = targets[0].port
        report.hosts = targets.count > 1 ? targets.map { ($0.host.contains(":") ? "[\($0.host)]" : $0.host) + ":\($0.port)" } : []
        report.threads = threads
        report.connectionsRequested = connections
        report.size = options.size
        report.pipeline = options.pipeline
        report.rate = options.mode == .chat ? options.effectiveRate : options.rate
        report.messagesPerConnection = options.messages
        report.connectSeconds = connectSeconds
        report.sourceAddresses = perSource.map { (connections + $0 - 1) / $0 } ?? 1
        let connectLatency = Histogram()
        let latency = Histogram()
        let sameServer = Histogram()
        let crossServer = Histogram()
        for result in results {
            report.connections += result.connected
            report.connectFailed += result.connectFailed
            report.errors += result.errors + result.connectFailed
            report.unexpectedCloses += result.unexpectedCloses
            report.mismatches += result.mismatches
            report.lost += result.lost
            connectLatency.merge(result.connectLatency)
            latency.merge(result.latency)
            sameServer.merge(result.sameServerLatency)
            crossServer.merge(result.crossServerLatency)
        }
        report.connectLatency = connectLatency.summaryMicroseconds
        report.latency = latency.summaryMicroseconds
        if !report.hosts.isEmpty && options.mode == .chat {
            report.sameServerLatency = sameServer.summaryMicroseconds
            report.crossServerLatency = crossServer.summaryMicroseconds
        }
        let runSeconds = Double(finishedAt - start) / 1e9
        let cpuSeconds = (cpuAfter.user + cpuAfter.system) - (cpuAtStart.user + cpuAtStart.system)
        report.loadCPUPercent = runSeconds > 0 ? 100 * cpuSeconds / runSeconds : 0
        report.loadCPUSeconds = cpuSeconds
        report.interruption = interruption.signal
        // Seconds of the planned measuring window that ran before an interruption.
        func measured(from: Int64, planned: Double) -> Double {
            guard report.interruption != nil else { return planned }
            return min(planned, max(0, Double(interruption.stopAt - from) / 1e9))
        }

        switch (options.mode, options.hold) {
        case (.echo, true):
            report.kind = .hold
            report.durationSeconds = measured(from: start, planned: options.duration)
            for result in results {
                report.aliveAfterConnect += result.aliveAfterConnect
                report.droppedDuringHold += result.dropped
                report.aliveAtEnd += result.aliveAtEnd
                report.heldSeconds = max(report.heldSeconds, Double(result.heldNanoseconds) / 1e9)
            }
        case (.echo, false):
            report.kind = .echo
            report.warmupSeconds = options.messages == nil ? options.effectiveWarmup : 0
            report.durationSeconds = options.messages == nil
                ? measured(from: start + Int64(options.effectiveWarmup * 1e9), planned: options.duration) : runSeconds
            report.messages = results.reduce(0) { $0 + $1.windowMessages }
            report.messagesTotal = results.reduce(0) { $0 + $1.totalMessages }
            let bytes = results.reduce(0) { $0 + $1.windowBytes }
            report.msgsPerSecond = Double(report.messages) / max(report.durationSeconds, 1e-9)
            report.mbPerSecond = Double(bytes) / max(report.durationSeconds, 1e-9) / 1e6
        case (.chat, _):
            report.kind = .chat
            report.senders = options.effectiveSenders
            report.durationSeconds = options.messages == nil ? measured(from: start, planned: options.duration) : runSeconds
            var sent = [Int](repeating: 0, count: report.senders)
            for result in results {
                for (id, lines) in result.sentBySender where id < sent.count { sent[id] = lines }
            }
            report.messages = sent.reduce(0, +)
            report.messagesTotal = report.messages
            report.msgsPerSecond = Double(report.messages) / max(report.durationSeconds, 1e-9)
            var windowDeliveries = 0
            var deliveredBytes = 0
            for result in results {
                guard let tracker = result.tracker else { continue }
                report.expected += tracker.expected(sent: sent)
                report.lost += tracker.lost(sent: sent)
                report.deliveries += tracker.delivered
                report.duplicated += tracker.duplicated
                report.reordered += tracker.reordered
                report.mismatches += tracker.outOfRange + tracker.selfReceived
                report.sendSkipped += result.sendSkipped
                report.notices += result.notices
                report.maxSendLagMicros = max(report.maxSendLagMicros, Double(result.maxSendLag) / 1000)
                windowDeliveries += result.windowDeliveries
                deliveredBytes += result.deliveredBytes
            }
            report.deliveriesPerSecond = Double(options.messages == nil ? windowDeliveries : report.deliveries)
                / max(report.durationSeconds, 1e-9)
            report.mbPerSecond = Double(deliveredBytes) / max(runSeconds, 1e-9) / 1e6
        case (.upload, _): break
        }
        return report
    }

    /// Ports in /proc/sys/net/ipv4/ip_local_port_range (28,232 by default).
    static func ephemeralPortCount() -> Int {
        guard let bytes = try? System.readFile("/proc/sys/net/ipv4/ip_local_port_range") else { return 28232 }
        let numbers = String(decoding: bytes, as: UTF8.self).split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" })
            .compactMap { Int($0) }
        guard numbers.count == 2, numbers[1] > numbers[0] else { return 28232 }
        return numbers[1] - numbers[0] + 1
    }
}
