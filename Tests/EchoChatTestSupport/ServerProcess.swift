import EchoChatPOSIX
import EchoChatServer
import Foundation
import Testing

/// A product built beside the test bundle (`echochat-server`, `echochat`, …),
/// or the path in the environment variable `override` if it is set.
public func builtProduct(_ name: String, override: String? = nil) -> String {
    if let override, let path = ProcessInfo.processInfo.environment[override] { return path }
    let bundle = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    return bundle.appendingPathComponent(name).path
}

/// Errors a test helper raises: they fail the test with a message, never hang it.
public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The real `echochat-server` binary, started as a separate process on
/// 127.0.0.1 port 0 (or as asked), with its stderr (its log) collected.
public final class ServerProcess: Sendable {
    public let process: TestProcess
    public let port: Int
    public let host: String
    /// The server's log (its stderr), line by line.
    public var log: OutputCollector { process.stderr! }

    /// The server binary next to the test bundle (`swift test` builds it,
    /// since the test targets depend on it); `ECHOCHAT_SERVER` overrides.
    public static var binary: String { builtProduct("echochat-server", override: "ECHOCHAT_SERVER") }

    /// Starts the server and waits (on its log, not a clock) until it listens.
    /// `openFileLimit` sets RLIMIT_NOFILE for the server process only, from
    /// its start (so its start-up self-check sees it).
    public init(
        _ arguments: [String], strategy: Strategy? = nil, host: String = "127.0.0.1",
        openFileLimit: Int? = nil, environment: [String: String]? = nil
    ) throws {
        var full = ["--host", host, "--port", "0"]
        if let strategy { full += ["--strategy", strategy.rawValue] }
        // The pool runs with more workers than this machine has cores, so the
        // suite exercises several workers contending (--workers 4).
        if strategy == .pool && !arguments.contains("--workers") { full += ["--workers", "4"] }
        // Reactors likewise runs three loops, so chat crosses loops whatever the CPUs.
        if strategy == .reactors && !arguments.contains("--loops") { full += ["--loops", "3"] }
        full += arguments
        let process = try TestProcess(
            Self.binary, full, environment: environment, stdin: .null, stdout: .null, stderr: .pipe,
            openFileLimit: openFileLimit)
        self.process = process
        self.host = host
        // Returns early if the log ends (the server exited) without the line.
        guard let line = process.stderr!.waitFor({ $0.contains("listening on ") }, timeout: 10) else {
            let status = try? process.waitForExit(timeout: 1)
            throw TestFailure("server did not start (status \(status.map(String.init) ?? "none, killed")); its log:\n\(process.stderr!.text)")
        }
        guard let portText = line.split(separator: " ").first(where: { $0.contains(":") && $0.last?.isNumber == true })?
            .split(separator: ":").last, let port = Int(portText)
        else { throw TestFailure("no port in start line: \(line)") }
        self.port = port
    }

    public var pid: Int32 { process.pid }

    /// The port of `--metrics`, from the `metrics on http://…/metrics` line
    /// the server logs before it listens; nil when metrics are off.
    public var metricsPort: Int? {
        guard let line = log.lines.first(where: { $0.contains("metrics on http://") }),
            let url = line.split(separator: " ").last, url.hasSuffix("/metrics")
        else { return nil }
        return Int(url.dropLast("/metrics".count).split(separator: ":").last ?? "")
    }

    /// The counters of a `stats:` line, asked for with SIGUSR1 (in both
    /// modes; an echo client cannot ask with `/stats`).
    public func statsFromLog(timeout: Double = 10) throws -> [String: String] {
        // Complete lines only: the last piece may be a line still being written.
        func count(_ bytes: [UInt8]) -> Int {
            String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).dropLast()
                .filter { $0.contains(" stats: ") }.count
        }
        let before = count(log.data)
        signal(.user1)
        try log.waitFor("a stats line", timeout: timeout) { count($0) > before }
        guard let line = log.lines.last(where: { $0.contains(" stats: ") }) else { throw TestFailure("no stats line") }
        return try parseStats("* stats: " + line.components(separatedBy: " stats: ")[1])
    }

    /// Sends `signal` to the server (never to a reused pid; false once it has gone).
    @discardableResult
    public func signal(_ signal: Signal) -> Bool { process.signal(signal) }

    /// Lowers the running server's RLIMIT_NOFILE with prlimit(2): after its
    /// start-up self-check, so the server meets real EMFILE.
    public func lowerOpenFileLimit(to limit: Int) throws {
        guard process.isRunning else { throw TestFailure("the server has exited; log:\n\(log.text)") }
        // Not reaped yet (only waitForExit reaps), so the pid is still the server's.
        try Spawn.setOpenFileLimit(of: pid, to: limit)
    }

    /// Limits the size of any file the server writes (RLIMIT_FSIZE): writes
    /// past it fail with EFBIG, as on a full disk.
    public func limitFileSize(to bytes: Int) throws {
        guard process.isRunning else { throw TestFailure("the server has exited; log:\n\(log.text)") }
        try Spawn.setFileSizeLimit(of: pid, to: bytes)
    }

    /// Limits the server's address space (RLIMIT_AS, soft) to `bytes`
    /// more than it maps now, or lifts the limit again when nil: past it,
    /// mmap(2) fails, as when memory runs out.
    public func limitAddressSpace(toMoreThanNowBy bytes: Int?) throws {
        guard process.isRunning else { throw TestFailure("the server has exited; log:\n\(log.text)") }
        guard let bytes else { return try Spawn.setAddressSpaceLimit(of: pid, to: nil) }
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmSize:") }),
            let kilobytes = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first.flatMap({ Int($0) })
        else { throw TestFailure("no VmSize in /proc/\(pid)/status") }
        try Spawn.setAddressSpaceLimit(of: pid, to: kilobytes * 1024 + bytes)
    }

    public func connect(timeout: Double = 5, receiveBuffer: Int? = nil, sendBuffer: Int? = nil) throws -> TestClient {
        try TestClient(host: host, port: port, timeout: timeout, receiveBuffer: receiveBuffer, sendBuffer: sendBuffer)
    }

    /// Sends `signal` and waits for the process to exit and its log to end;
    /// returns its status.
    @discardableResult
    public func stop(_ signal: Signal = .terminate, timeout: Double = 10) throws -> Int32 {
        process.signal(signal)
        return try waitForExit(timeout: timeout)
    }

    /// Waits for the server to exit and for its whole log to be collected,
    /// so `log.lines` holds everything it wrote. Kills it after `timeout`.
    public func waitForExit(timeout: Double) throws -> Int32 {
        do {
            return try process.waitForExit(timeout: timeout)
        } catch {
            throw TestFailure("server: \(error)")
        }
    }

    /// Every server a test starts must also stop cleanly: SIGTERM ends it with
    /// status 0 and a log free of sanitizer reports (TSan and ASan run the
    /// server binary instrumented too: races are in the server's threads, and
    /// LeakSanitizer reports when the server exits).
    deinit {
        if process.exitStatus == nil {
            do {
                let status = try stop(.terminate, timeout: 10)
                if status != 0 { Issue.record("server exited with status \(status); log:\n\(log.text)") }
            } catch {
                Issue.record("\(error); log:\n\(log.text)")
            }
        }
        let reports = log.lines.filter { line in reportMarkers.contains { line.contains($0) } }
        if !reports.isEmpty { Issue.record("server log has sanitizer or runtime reports:\n\(log.text)") }
    }
}

