import EchoChatPOSIX
import EchoChatServer
import Foundation
import Synchronization
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
/// 127.0.0.1 port 0 (or as asked), with its stderr collected line by line.
public final class ServerProcess: Sendable {
    public let process: Process
    public let port: Int
    public let host: String
    public let log: LineCollector

    /// The server binary next to the test bundle (`swift test` builds it,
    /// since the test targets depend on it); `ECHOCHAT_SERVER` overrides.
    public static var binary: String { builtProduct("echochat-server", override: "ECHOCHAT_SERVER") }

    /// Starts the server and waits (on its log, not a clock) until it listens.
    /// `openFileLimit` lowers RLIMIT_NOFILE for the server process only, from
    /// its start (so its start-up self-check sees it).
    public init(
        _ arguments: [String], strategy: Strategy? = nil, host: String = "127.0.0.1",
        openFileLimit: Int? = nil
    ) throws {
        Signals.ignoreBrokenPipe()
        var full = ["--host", host, "--port", "0"]
        if let strategy { full += ["--strategy", strategy.rawValue] }
        // The pool runs with more workers than this machine has cores, so the
        // suite exercises several workers contending (as issue 3 asks: --workers 4).
        if strategy == .pool && !arguments.contains("--workers") { full += ["--workers", "4"] }
        full += arguments
        let process = Process()
        if let openFileLimit {
            // The limit applies to the server alone, never to the test runner.
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "ulimit -n \(openFileLimit) && exec \"$0\" \"$@\"", Self.binary] + full
        } else {
            process.executableURL = URL(fileURLWithPath: Self.binary)
            process.arguments = full
        }
        let stderr = Pipe()
        process.standardError = stderr
        process.standardOutput = FileHandle.nullDevice
        process.standardInput = FileHandle.nullDevice
        log = LineCollector(stderr.fileHandleForReading)
        try process.run()
        self.process = process
        self.host = host
        guard let line = log.waitFor({ $0.contains("listening on ") }, timeout: 10) else {
            process.terminate()
            throw TestFailure("server did not start; its log:\n\(log.text)")
        }
        guard let portText = line.split(separator: " ").first(where: { $0.contains(":") && $0.last?.isNumber == true })?
            .split(separator: ":").last, let port = Int(portText)
        else { throw TestFailure("no port in start line: \(line)") }
        self.port = port
    }

    public var pid: Int32 { process.processIdentifier }

    /// Lowers the running server's RLIMIT_NOFILE with prlimit(1) (util-linux):
    /// after its start-up self-check, so the server meets real EMFILE.
    public func lowerOpenFileLimit(to limit: Int) throws {
        let result = try runProgram("/usr/bin/env", ["prlimit", "--pid", String(pid), "--nofile=\(limit):\(limit)"])
        guard result.status == 0 else { throw TestFailure("prlimit failed: \(result.stderr)") }
    }

    public func connect(timeout: Double = 5) throws -> TestClient {
        try TestClient(host: host, port: port, timeout: timeout)
    }

    /// Sends `signal` and waits for the process to exit; returns its status.
    @discardableResult
    public func stop(_ signal: Signal = .terminate, timeout: Double = 10) throws -> Int32 {
        if process.isRunning { Signals.send(signal, to: pid) }
        return try waitForExit(timeout: timeout)
    }

    public func waitForExit(timeout: Double) throws -> Int32 {
        let exited = DispatchSemaphore(value: 0)
        let watcher = Thread { [process] in
            process.waitUntilExit()
            exited.signal()
        }
        watcher.start()
        guard exited.wait(timeout: .now() + timeout) == .success else {
            Signals.send(.kill, to: pid)
            throw TestFailure("server did not exit within \(timeout) s; log:\n\(log.text)")
        }
        return process.terminationStatus
    }

    /// Every server a test starts must also stop cleanly: SIGTERM ends it with
    /// status 0 and a log free of sanitizer reports (TSan runs the server
    /// binary instrumented too, and its races are in the server's threads).
    deinit {
        if process.isRunning {
            do {
                let status = try stop(.terminate, timeout: 10)
                if status != 0 { Issue.record("server exited with status \(status); log:\n\(log.text)") }
            } catch {
                Issue.record("\(error)")
            }
        }
        log.waitForEnd(timeout: 5)
        let reports = log.lines.filter { line in
            ["ThreadSanitizer", "AddressSanitizer", "LeakSanitizer", "Fatal error", "runtime error"].contains {
                line.contains($0)
            }
        }
        if !reports.isEmpty { Issue.record("server log has sanitizer or runtime reports:\n\(log.text)") }
    }
}

/// Collects a pipe's lines on a background thread; tests wait for a line
/// matching a condition (woken by each new line, bounded by a timeout).
public final class LineCollector: Sendable {
    private let state = Lock<[String]>([])
    private let ended = Lock<Bool>(false)
    private let condition = NSCondition()

    public init(_ handle: FileHandle) {
        let thread = Thread { [self] in
            var pending = Data()
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty {
                    condition.lock()
                    ended.withLock { $0 = true }
                    condition.broadcast()
                    condition.unlock()
                    break
                }
                pending.append(chunk)
                while let newline = pending.firstIndex(of: 0x0A) {
                    let line = String(decoding: pending[pending.startIndex..<newline], as: UTF8.self)
                    pending.removeSubrange(pending.startIndex...newline)
                    condition.lock()
                    state.withLock { $0.append(line) }
                    condition.broadcast()
                    condition.unlock()
                }
            }
        }
        thread.start()
    }

    public var lines: [String] { state.withLock { $0 } }

    /// Waits until the writer closed the pipe (the process exited), so every
    /// line it wrote has been collected.
    @discardableResult
    public func waitForEnd(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while !ended.withLock({ $0 }) {
            if !condition.wait(until: deadline) { return ended.withLock { $0 } }
        }
        return true
    }
    public var text: String { lines.joined(separator: "\n") }

    /// The first line satisfying `predicate`, waiting up to `timeout` seconds.
    public func waitFor(_ predicate: (String) -> Bool, timeout: Double) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if let line = lines.first(where: predicate) { return line }
            if !condition.wait(until: deadline) { return lines.first(where: predicate) }
        }
    }
}
