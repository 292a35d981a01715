/// The strategy benchmark's results, rendered as a markdown table and an SVG
/// chart (both written by hand; pure functions of the measurements).
public struct BenchSummary: Sendable {
    public var strategies: [String]
    public var workloads: [BenchWorkload]
    /// Medians per (workload, strategy).
    public var cells: [String: BenchMeasurement]
    public var machine: String
    public var pinning: String
    public var runs: Int
    public var duration: Double
    public var date: String

    public init(
        strategies: [String], workloads: [BenchWorkload], measurements: [BenchMeasurement], machine: String,
        pinning: String, runs: Int, duration: Double, date: String
    ) {
        self.strategies = strategies
        self.workloads = workloads
        self.machine = machine
        self.pinning = pinning
        self.runs = runs
        self.duration = duration
        self.date = date
        var cells: [String: BenchMeasurement] = [:]
        for workload in workloads {
            for strategy in strategies {
                let runs = measurements.filter { $0.workload == workload.name && $0.strategy == strategy }
                guard !runs.isEmpty else { continue }
                var cell = BenchMeasurement(workload: workload.name, strategy: strategy)
                cell.rate = median(runs.map(\.rate))
                cell.p99Micros = median(runs.map(\.p99Micros))
                cell.serverMicrosPerMessage = median(runs.map(\.serverMicrosPerMessage))
                cell.rssBefore = Int(median(runs.map { Double($0.rssBefore) }))
                cell.rssHolding = Int(median(runs.map { Double($0.rssHolding) }))
                cell.threadsHolding = Int(median(runs.map { Double($0.threadsHolding) }))
                cell.connections = Int(median(runs.map { Double($0.connections) }))
                cell.uploadMBPerSecond = median(runs.map(\.uploadMBPerSecond))
                cell.downloadMBPerSecond = median(runs.map(\.downloadMBPerSecond))
                cell.downloadP99Micros = median(runs.map(\.downloadP99Micros))
                cell.chatP99BaselineMicros = median(runs.map(\.chatP99BaselineMicros))
                cell.passed = runs.allSatisfy(\.passed)
                cell.note = runs.map(\.note).filter { !$0.isEmpty }.joined(separator: "; ")
                cells[workload.name + "/" + strategy] = cell
            }
        }
        self.cells = cells
    }

    public func cell(_ workload: String, _ strategy: String) -> BenchMeasurement? {
        cells[workload + "/" + strategy]
    }

    static func isHold(_ workload: BenchWorkload) -> Bool {
        if case .hold = workload.kind { return true }
        return false
    }

    static func isChat(_ workload: BenchWorkload) -> Bool {
        if case .chat = workload.kind { return true }
        return false
    }

    static func isUpload(_ workload: BenchWorkload) -> Bool {
        if case .upload = workload.kind { return true }
        return false
    }

    static func isChatDuringUploads(_ workload: BenchWorkload) -> Bool {
        if case .chatDuringUploads = workload.kind { return true }
        return false
    }

    /// Memory per connection and the chat p99's growth under uploads: the less the better.
    static func lowerIsBetter(_ workload: BenchWorkload) -> Bool { isHold(workload) || isChatDuringUploads(workload) }

    /// What the chart's label says a workload's bars are.
    static func unit(_ workload: BenchWorkload) -> String {
        switch workload.kind {
        case .hold: "server RSS per connection, lower is better"
        case .chat: "deliveries/s"
        case .echo: "msgs/s"
        case .upload: "upload MB/s"
        case .chatDuringUploads: "chat p99 during uploads / alone, lower is better"
        }
    }

    /// The figure a workload is judged by.
    func headline(_ workload: BenchWorkload, _ cell: BenchMeasurement) -> (value: Double, text: String) {
        if Self.isHold(workload) { return (cell.bytesPerConnection, Format.bytes(cell.bytesPerConnection)) }
        if Self.isUpload(workload) { return (cell.uploadMBPerSecond, Format.fixed(cell.uploadMBPerSecond, decimals: 1) + " MB/s") }
        if Self.isChatDuringUploads(workload) {
            return (cell.chatP99Ratio, Format.fixed(cell.chatP99Ratio, decimals: 2) + "x (" + Format.micros(cell.p99Micros) + ")")
        }
        return (cell.rate, Format.compact(cell.rate))
    }

    // MARK: - Markdown

    public var markdown: String {
        let header = "| workload | " + strategies.joined(separator: " | ") + " |\n|---|" + strategies.map { _ in "---:|" }.joined() + "\n"
        func row(_ label: String, _ text: (BenchWorkload, BenchMeasurement) -> String, _ workload: BenchWorkload) -> String {
            "| \(label) | " + strategies.map { strategy in
                guard let cell = cell(workload.name, strategy) else { return "–" }
                return text(workload, cell) + (cell.passed ? "" : " ✗")
            }.joined(separator: " | ") + " |\n"
        }
        var throughput = header
        var latency = header
        var cpu = header
        var memory = "| strategy | RSS before | RSS holding | per connection | threads |\n|---|---:|---:|---:|---:|\n"
        var files = header
        for workload in workloads {
            if Self.isUpload(workload) {
                files += row("\(workload.title): upload MB/s", { Format.fixed($1.uploadMBPerSecond, decimals: 1) }, workload)
                files += row("\(workload.title): download MB/s", { Format.fixed($1.downloadMBPerSecond, decimals: 1) }, workload)
                files += row("\(workload.title): p99 per upload / download", {
                    Format.micros($1.p99Micros) + " / " + Format.micros($1.downloadP99Micros)
                }, workload)
                continue
            }
            if Self.isChatDuringUploads(workload) {
                files += row("chat p99 without uploads", { Format.micros($1.chatP99BaselineMicros) }, workload)
                files += row("\(workload.title) (goal: within 2x)", {
                    Format.micros($1.p99Micros) + " (" + Format.fixed($1.chatP99Ratio, decimals: 2) + "x)"
                }, workload)
                files += row("upload MB/s meanwhile", { Format.fixed($1.uploadMBPerSecond, decimals: 1) }, workload)
                continue
            }
            if Self.isHold(workload) {
                for strategy in strategies {
                    guard let cell = cell(workload.name, strategy) else { continue }
                    memory += "| \(strategy) | \(Format.bytes(Double(cell.rssBefore))) | \(Format.bytes(Double(cell.rssHolding))) | "
                        + "\(Format.bytes(cell.bytesPerConnection)) | \(Format.grouped(cell.threadsHolding)) |"
                        + (cell.passed ? "" : " ✗") + "\n"
                }
                throughput += row("\(workload.title): server RSS per connection (lower is better)", { self.headline($0, $1).text }, workload)
                continue
            }
            let unit = Self.isChat(workload) ? "deliveries/s" : "msgs/s"
            throughput += row("\(workload.title) (\(unit))", { self.headline($0, $1).text }, workload)
            latency += row(workload.title, { Format.micros($1.p99Micros) }, workload)
            cpu += row(workload.title, { Format.fixed($1.serverMicrosPerMessage, decimals: 1) + " µs" }, workload)
        }
        let failed = cells.values.contains { !$0.passed }
        var text = """
            Machine: \(machine); \(pinning); release build.
            Each cell is the median of \(runs) run\(runs == 1 ? "" : "s") of \(Format.fixed(duration, decimals: 1)) s \
            (echo runs after a warmup), measured by `echochat-load bench` on \(date).

            **Throughput** (higher is better, except memory):

            \(throughput)
            **Latency p99** (echo: send to echo; chat: send to delivery, from the scheduled send time):

            \(latency)
            **Server CPU per message** (chat: per delivery), from /proc/PID/stat over the whole run:

            \(cpu)
            **Memory**: the server's VmRSS (/proc/PID/status) before and while 10,000 idle echo connections are held:

            \(memory)
            """
        if workloads.contains(where: { Self.isUpload($0) || Self.isChatDuringUploads($0) }) {
            text += """

                **File sharing** (a chat server with a fresh `--upload-dir`; each client uploads new files for the \
                run's duration, then downloads every one back; every SHA-256 and every byte checked; MB = 10^6 bytes). \
                The chat ping is 2 clients in a room of their own, each sending 100 lines/s to the other, \
                p99 from send to delivery, alone and then while the uploads run:

                \(files)
                """
        }
        let cluster = workloads.filter { $0.clusterServers > 1 }
        if !cluster.isEmpty {
            var extra = header
            for workload in cluster { extra += row(workload.title, { _, cell in cell.note.isEmpty ? "–" : cell.note }, workload) }
            text += """

                **Cluster rows**: the servers (all of the strategy) and one `redis-server` on the server's CPUs, the \
                clients spread over the servers in turn; server CPU is theirs and Redis's together. What a delivery \
                that crossed servers cost at p99 beyond one that did not:

                \(extra)
                """
        }
        if failed { text += "\n✗: a run of this cell did not verify (mismatch, loss, error or drop); see strategies.json.\n" }
        return text
    }

    // MARK: - SVG

    static let colors = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948"]

    /// Grouped horizontal bars: one group per workload, one bar per strategy,
    /// each group scaled to its own best value so that every workload is
    /// readable whatever its magnitude; the value is printed beside each bar.
    public var svg: String {
        let width = 900
        let barX = 80
        let barArea = 640
        let barHeight = 16
        let top = 86
        let groupHeight = 20 + strategies.count * (barHeight + 3) + 14
        let height = top + workloads.count * groupHeight + 10
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" viewBox="0 0 \(width) \(height)" font-family="Helvetica, Arial, sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="10" y="22" font-size="16" font-weight="bold">EchoChat strategies: each workload scaled to its best (longer is better)</text>
            <text x="10" y="40" fill="#555">\(Self.escape(machine))</text>
            <text x="10" y="56" fill="#555">\(Self.escape("\(pinning); median of \(runs) run\(runs == 1 ? "" : "s"), \(date)"))</text>

            """
        for (index, strategy) in strategies.enumerated() {
            let x = 10 + index * 120
            out += "<rect x=\"\(x)\" y=\"64\" width=\"12\" height=\"12\" fill=\"\(Self.colors[index % Self.colors.count])\"/>"
            out += "<text x=\"\(x + 16)\" y=\"74\">\(Self.escape(strategy))</text>\n"
        }
        for (group, workload) in workloads.enumerated() {
            let y0 = top + group * groupHeight
            let hold = Self.lowerIsBetter(workload)
            let values = strategies.map { cell(workload.name, $0).map { headline(workload, $0).value } ?? 0 }
            let positive = values.filter { $0 > 0 }
            let best = hold ? (positive.min() ?? 1) : (values.max() ?? 1)
            let label = workload.title + " (" + Self.unit(workload) + ")"
            out += "<text x=\"10\" y=\"\(y0 + 13)\" font-weight=\"bold\">\(Self.escape(label))</text>\n"
            for (index, strategy) in strategies.enumerated() {
                let y = y0 + 20 + index * (barHeight + 3)
                guard let cell = cell(workload.name, strategy) else { continue }
                let value = values[index]
                // Lower is better for memory: the best gets the full bar.
                let fraction = value <= 0 ? 0 : (hold ? best / value : value / max(best, 1e-9))
                let length = max(1, Int((Double(barArea) * min(1, fraction)).rounded()))
                out += "<text x=\"\(barX - 6)\" y=\"\(y + barHeight - 4)\" text-anchor=\"end\" fill=\"#333\">\(Self.escape(strategy))</text>"
                out += "<rect x=\"\(barX)\" y=\"\(y)\" width=\"\(length)\" height=\"\(barHeight)\" fill=\"\(Self.colors[index % Self.colors.count])\"/>"
                let text = headline(workload, cell).text + (cell.passed ? "" : " ✗")
                out += "<text x=\"\(barX + length + 6)\" y=\"\(y + barHeight - 4)\">\(Self.escape(text))</text>\n"
            }
        }
        out += "</svg>\n"
        return out
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(character)
            }
        }
        return out
    }

    // MARK: - JSON

    public var json: JSONValue {
        .object([
            ("machine", .string(machine)), ("pinning", .string(pinning)), ("runs", .int(runs)),
            ("duration_s", .number(duration, decimals: 1)), ("date", .string(date)),
            ("cells", .array(workloads.flatMap { workload in
                strategies.compactMap { strategy in
                    cell(workload.name, strategy).map { cell in
                        JSONValue.object([
                            ("workload", .string(workload.name)), ("strategy", .string(strategy)),
                            ("rate", .number(cell.rate, decimals: 1)), ("p99_us", .number(cell.p99Micros, decimals: 1)),
                            ("server_us_per_msg", .number(cell.serverMicrosPerMessage, decimals: 2)),
                            ("rss_before", .int(cell.rssBefore)), ("rss_holding", .int(cell.rssHolding)),
                            ("bytes_per_connection", .number(cell.bytesPerConnection, decimals: 0)),
                            ("threads_holding", .int(cell.threadsHolding)),
                            ("upload_mb_per_s", .number(cell.uploadMBPerSecond, decimals: 1)),
                            ("download_mb_per_s", .number(cell.downloadMBPerSecond, decimals: 1)),
                            ("download_p99_us", .number(cell.downloadP99Micros, decimals: 1)),
                            ("chat_p99_alone_us", .number(cell.chatP99BaselineMicros, decimals: 1)),
                            ("passed", .bool(cell.passed)),
                            ("note", .string(cell.note)),
                        ])
                    }
                }
            })),
        ])
    }
}
