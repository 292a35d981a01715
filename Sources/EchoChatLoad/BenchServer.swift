import EchoChatPOSIX
import EchoChatOptions

/// One of the benchmark's workloads.
public struct BenchWorkload: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case echo(connections: Int, size: Int, pipeline: Int)
        case hold(connections: Int)
        case chat(clients: Int, senders: Int, rate: Double)
        /// Uploads of `size`-byte files for the run's duration, then downloads of them all.
        case upload(clients: Int, size: Int)
        /// A chat ping's p99 alone, then while `uploaders` upload `size`-byte files in a loop.
        case chatDuringUploads(uploaders: Int, size: Int)
    }

    public var name: String
    public var title: String
    public var kind: Kind
    /// Chat through a cluster: this many servers of the strategy and one
    /// `redis-server` (0: one server, no cluster). Clients spread over them.
    public var clusterServers = 0

    public static let all: [BenchWorkload] = [
        BenchWorkload(name: "pp1", title: "ping-pong 64 B, 1 connection", kind: .echo(connections: 1, size: 64, pipeline: 1)),
        BenchWorkload(name: "pp10", title: "ping-pong 64 B, 10 connections", kind: .echo(connections: 10, size: 64, pipeline: 1)),
        BenchWorkload(name: "pp100", title: "ping-pong 64 B, 100 connections", kind: .echo(connections: 100, size: 64, pipeline: 1)),
        BenchWorkload(name: "pp1000", title: "ping-pong 64 B, 1,000 connections", kind: .echo(connections: 1000, size: 64, pipeline: 1)),
        BenchWorkload(name: "pipe16x100", title: "16 in flight x 100 connections, 64 B", kind: .echo(connections: 100, size: 64, pipeline: 16)),
        BenchWorkload(name: "4k10", title: "ping-pong 4 KiB, 10 connections", kind: .echo(connections: 10, size: 4096, pipeline: 1)),
        BenchWorkload(name: "hold10k", title: "10,000 idle connections", kind: .hold(connections: 10_000)),
        BenchWorkload(name: "chat100", title: "chat fan-out, 100 clients, 10 senders x 1,000 lines/s", kind: .chat(clients: 100, senders: 10, rate: 1000)),
        BenchWorkload(
            name: "chat1000", title: "chat fan-out, 1,000 clients, 10 senders x 50 lines/s", kind: .chat(clients: 1000, senders: 10, rate: 50)),
        BenchWorkload(
            name: "cluster1", title: "chat, 1 server with --cluster, 100 clients, 10 senders x 100 lines/s",
            kind: .chat(clients: 100, senders: 10, rate: 100), clusterServers: 1),
        BenchWorkload(
            name: "cluster2", title: "chat across 2 servers (Redis), 100 clients, 10 senders x 100 lines/s",
            kind: .chat(clients: 100, senders: 10, rate: 100), clusterServers: 2),
        BenchWorkload(
            name: "cluster3", title: "chat across 3 servers (Redis), 100 clients, 10 senders x 100 lines/s",
            kind: .chat(clients: 100, senders: 10, rate: 100), clusterServers: 3),
        BenchWorkload(name: "upload", title: "file sharing, 4 clients, 4 MiB files", kind: .upload(clients: 4, size: 4 << 20)),
        BenchWorkload(
            name: "chat-uploads", title: "chat p99 during uploads, 10 clients x 16 MiB files",
            kind: .chatDuringUploads(uploaders: 10, size: 16 << 20)),
    ]
}

/// What one workload run against one strategy measured.
public struct BenchMeasurement: Sendable, Equatable {
    public var workload: String
    public var strategy: String
    /// msgs/s (echo) or deliveries/s (chat); 0 for hold.
    public var rate: Double = 0
    public var p99Micros: Double = 0
    /// Server CPU time per message (echo) or delivery (chat), µs.
    public var serverMicrosPerMessage: Double = 0
    /// hold: server VmRSS before and while holding, bytes; threads while holding.
    public var rssBefore = 0
    public var rssHolding = 0
    public var threadsHolding = 0
    public var connections = 0
    /// upload: MB/s of each phase; p99 per download (p99Micros is per upload).
    public var uploadMBPerSecond: Double = 0
    public var downloadMBPerSecond: Double = 0
    public var downloadP99Micros: Double = 0
    /// chat-uploads: the chat ping's p99 without uploads (p99Micros is with them).
    public var chatP99BaselineMicros: Double = 0
    /// The run verified: no mismatch, loss or error.
    public var passed = true
    public var note = ""

    public init(workload: String, strategy: String) {
        self.workload = workload
        self.strategy = strategy
    }

    public var bytesPerConnection: Double {
        connections > 0 ? Double(rssHolding - rssBefore) / Double(connections) : 0
    }

    /// chat-uploads: how many times the chat p99 grew under the uploads.
    public var chatP99Ratio: Double {
        chatP99BaselineMicros > 0 ? p99Micros / chatP99BaselineMicros : 0
    }
}

/// /proc/PID/status and /proc/PID/stat, parsed (pure, for tests).
public enum ProcFacts {
    /// `VmRSS` and `Threads` from a /proc/PID/status text: (bytes, threads).
    public static func status(_ text: String) -> (rss: Int, threads: Int) {
        var rss = 0
        var threads = 0
        for line in text.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard fields.count >= 2 else { continue }
            if fields[0] == "VmRSS:" { rss = (Int(fields[1]) ?? 0) * 1024 }
            if fields[0] == "Threads:" { threads = Int(fields[1]) ?? 0 }
        }
        return (rss, threads)
    }

    /// The server side of local TCP connections, from /proc/net/tcp or
    /// tcp6 text: for each connection whose local port is `serverPort`, its
    /// remote (client) port and its state (1 = ESTABLISHED; 4 = FIN-WAIT-1,
    /// the server has closed it; see include/net/tcp_states.h).
    public static func serverSideTCPStates(_ text: String, serverPort: Int) -> [Int: Int] {
        var states: [Int: Int] = [:]
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 3, let local = fields[1].split(separator: ":").last, let remote = fields[2].split(separator: ":").last,
                Int(local, radix: 16) == serverPort, let client = Int(remote, radix: 16), let state = Int(fields[3], radix: 16)
            else { continue }
            states[client] = state
        }
        return states
    }

    /// utime + stime in clock ticks from a /proc/PID/stat text (fields 14 and
    /// 15; the command name in parentheses may contain spaces).
    public static func cpuTicks(_ text: String) -> Int {
        guard let close = text.lastIndex(of: ")") else { return 0 }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is the state (field 3), so utime (14) is fields[11].
        guard fields.count > 12, let user = Int(fields[11]), let system = Int(fields[12]) else { return 0 }
        return user + system
    }
}

/// An `echochat-server` started for a benchmark run: on its CPUs when pinning,
/// port 0, its stderr read until it logs its port, then drained in the background.
final class BenchServer {
    let process: ChildProcess
    let port: Int
    let log: Lock<[String]>

    init(binary: String, arguments: [String], cpus: CPUList?) throws(LoadRunError) {
        let full = ["--host", "127.0.0.1", "--port", "0"] + arguments
        do {
            if let cpus {
                process = try ChildProcess("taskset", ["-c", cpus.description, binary] + full, stdout: .discard, stderr: .pipe)
            } else {
                process = try ChildProcess(binary, full, stdout: .discard, stderr: .pipe)
            }
        } catch {
            throw LoadRunError("cannot start \(binary): \(error)")
        }
        var seen: [String] = []
        var port: Int?
        while port == nil, let line = process.readLine(timeout: 10) {
            seen.append(line)
            if let rest = line.suffix(after: "listening on ") {
                let address = rest.prefix(while: { $0 != " " })
                port = address.split(separator: ":").last.flatMap { Int($0) }
            }
        }
        guard let port else {
            process.terminate(grace: 2)
            throw LoadRunError("the server did not start; its log:\n" + seen.joined(separator: "\n"))
        }
        self.port = port
        let log = Lock<[String]>(seen)
        self.log = log
        try? process.drainStandardError { line in
            log.withLock { lines in
                lines.append(line)
                if lines.count > 200 { lines.removeFirst(100) }
            }
        }
    }

    var pid: Int32 { process.pid }

    /// VmRSS (bytes) and thread count.
    func status() -> (rss: Int, threads: Int) {
        guard let bytes = try? System.readFile("/proc/\(pid)/status") else { return (0, 0) }
        return ProcFacts.status(String(decoding: bytes, as: UTF8.self))
    }

    /// CPU seconds the server has used.
    func cpuSeconds() -> Double {
        guard let bytes = try? System.readFile("/proc/\(pid)/stat") else { return 0 }
        return Double(ProcFacts.cpuTicks(String(decoding: bytes, as: UTF8.self))) / Double(System.clockTicksPerSecond)
    }

    /// SIGTERM and wait; false if it had to be killed or exited non-zero.
    @discardableResult
    func stop() -> Bool {
        process.terminate(grace: 15) == 0
    }
}

/// A set of CPUs in taskset's list syntax: "0", "0-3", "0,2-3".
public struct CPUList: Sendable, Equatable, CustomStringConvertible {
    public let cpus: [Int]

    public init(_ cpus: [Int]) { self.cpus = Array(Set(cpus)).sorted() }

    public static func parse(_ text: String, _ name: String) throws(UsageError) -> CPUList {
        var cpus: [Int] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let bounds = part.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(bounds.count), let low = Int(bounds[0]), let high = Int(bounds[bounds.count - 1]),
                bounds.allSatisfy({ !$0.isEmpty && $0.allSatisfy({ $0.isASCII && $0.isNumber }) }), low <= high, high < 4096
            else { throw UsageError("invalid value '\(text)' for \(name): expected CPUs like 0, 0-3 or 0,2") }
            cpus += Array(low...high)
        }
        return CPUList(cpus)
    }

    /// The list as taskset takes it, ranges folded: "0-3,6".
    public var description: String {
        var parts: [String] = []
        var index = 0
        while index < cpus.count {
            var last = index
            while last + 1 < cpus.count && cpus[last + 1] == cpus[last] + 1 { last += 1 }
            parts.append(last == index ? String(cpus[index]) : "\(cpus[index])-\(cpus[last])")
            index = last + 1
        }
        return parts.joined(separator: ",")
    }
}

/// CPU pinning for the benchmark commands: by default the load on CPU 1 and
/// servers on CPU 0 (on a machine with two or more CPUs), or the lists given.
struct Pinning {
    let server: CPUList?
    let load: CPUList?

    init(server: CPUList? = nil, load: CPUList? = nil) {
        let pins = System.onlineCores >= 2
        self.server = server ?? (pins ? CPUList([0]) : nil)
        self.load = load ?? (pins ? CPUList([1]) : nil)
    }

    /// A CPU the machine does not have, as an error message.
    var invalid: String? {
        let online = System.onlineCores
        for (what, list) in [("--server-cpus", server), ("--load-cpus", load)] {
            if let list, let cpu = list.cpus.first(where: { $0 >= online }) {
                return "\(what): CPU \(cpu) is not online (this machine has \(online))"
            }
        }
        return nil
    }

    /// Re-executes this program under `taskset -c LOAD` unless it already
    /// runs on exactly those CPUs (then returns true). False: cannot pin.
    func pinSelf(arguments: [String]) -> Bool {
        guard let load, Threads.affinity != load.cpus else { return true }
        guard let executable = System.executablePath else { return false }
        let error = ChildProcess.replaceCurrentProcess(with: "taskset", ["-c", load.description, executable] + arguments)
        System.writeToStandardError("echochat-load: cannot pin to CPU \(load) (\(error)); running unpinned\n")
        return false
    }

    /// For reports: where the server and the load ran.
    var description: String {
        func cpus(_ list: CPUList) -> String { list.cpus.count == 1 ? "CPU \(list)" : "CPUs \(list)" }
        guard let server, let load, Threads.affinity == load.cpus else { return "not pinned (\(System.onlineCores) CPU online)" }
        return "server on \(cpus(server)), load client on \(cpus(load)) (taskset)"
    }
}

/// The machine, for the record.
enum MachineFacts {
    static var summary: String {
        var model = "unknown CPU"
        if let bytes = try? System.readFile("/proc/cpuinfo") {
            let text = String(decoding: bytes, as: UTF8.self)
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("model name") }),
               let colon = line.firstIndex(of: ":") {
                model = line[line.index(after: colon)...].trimmingCharacters()
            }
        }
        var memory = ""
        if let bytes = try? System.readFile("/proc/meminfo") {
            let text = String(decoding: bytes, as: UTF8.self)
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemTotal:") }) {
                let kib = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
                memory = ", \(Format.fixed(Double(kib) / 1024 / 1024, decimals: 0)) GiB RAM"
            }
        }
        return "\(System.onlineCores) x \(model)\(memory), \(System.kernelDescription)"
    }
}

extension Substring {
    func trimmingCharacters() -> String {
        String(drop(while: { $0 == " " || $0 == "\t" }).reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
    }
}

/// The median of `values` (mean of the middle two for an even count); 0 when empty.
public func median(_ values: [Double]) -> Double {
    guard !values.isEmpty else { return 0 }
    let sorted = values.sorted()
    let middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}
