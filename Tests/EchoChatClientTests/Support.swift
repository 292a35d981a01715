import EchoChatPOSIX
import EchoChatTestSupport
import Foundation
import Glibc
import Testing

/// The `echochat` binary `swift test` built beside the test bundle;
/// `ECHOCHAT_CLIENT` overrides.
let clientBinary = builtProduct("echochat", override: "ECHOCHAT_CLIENT")

/// Everything a descriptor yields, collected on a thread of its own, so a
/// test can wait (with a deadline, never a sleep) for output to satisfy a
/// condition. The reader polls in 50 ms steps so `stop()` always ends it.
final class OutputCollector: Sendable {
    private let bytes = Lock<[UInt8]>([])
    private let ended = Lock<Bool>(false)
    private let stopping = Lock<Bool>(false)
    private let condition = NSCondition()
    private let finished = DispatchSemaphore(value: 0)

    init(descriptor: Int32) {
        Thread { [self] in
            var chunk = [UInt8](repeating: 0, count: 65536)
            while !stopping.withLock({ $0 }) {
                var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
                let ready = poll(&entry, 1, 50)
                if ready == 0 || (ready < 0 && errno == EINTR) { continue }
                let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count < 0 && errno == EINTR { continue }
                // 0: end of file; EIO: a pty whose other side is all closed.
                if count <= 0 { break }
                condition.lock()
                bytes.withLock { $0.append(contentsOf: chunk[0..<count]) }
                condition.broadcast()
                condition.unlock()
            }
            condition.lock()
            ended.withLock { $0 = true }
            condition.broadcast()
            condition.unlock()
            finished.signal()
        }.start()
    }

    var data: [UInt8] { bytes.withLock { $0 } }
    var text: String { String(decoding: data, as: UTF8.self) }

    /// Waits until `predicate` holds for everything collected so far; throws
    /// after `timeout` seconds, showing what did arrive.
    @discardableResult
    func waitFor(
        _ what: String, timeout: Double = 10, _ predicate: ([UInt8]) -> Bool
    ) throws -> [UInt8] {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            let now = data
            if predicate(now) { return now }
            if ended.withLock({ $0 }) || !condition.wait(until: deadline) {
                let last = data
                if predicate(last) { return last }
                throw TestFailure("no \(what) within \(timeout) s; have \(String(decoding: last, as: UTF8.self).debugDescription)")
            }
        }
    }

    /// Waits until the text collected contains `needle`.
    @discardableResult
    func waitFor(text needle: String, timeout: Double = 10) throws -> String {
        String(decoding: try waitFor("'\(needle)'", timeout: timeout) { String(decoding: $0, as: UTF8.self).contains(needle) }, as: UTF8.self)
    }

    /// Waits for the writer to close (the process exited).
    func waitForEnd(timeout: Double) throws {
        // Not `waitFor`: that copies everything collected at each wake-up.
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while !ended.withLock({ $0 }) {
            if !condition.wait(until: deadline) && !ended.withLock({ $0 }) {
                throw TestFailure("output did not end within \(timeout) s")
            }
        }
    }

    /// Ends the reader thread (within 50 ms) and waits for it; safe to call again.
    func stop() {
        stopping.withLock { $0 = true }
        if finished.wait(timeout: .now() + 5) == .success { finished.signal() }
    }
}

/// write(2) of all of `bytes`; false if the reader went away.
@discardableResult
func writeAll(_ descriptor: Int32, _ bytes: [UInt8]) -> Bool {
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        if written < 0 {
            if errno == EINTR { continue }
            return false
        }
        offset += written
    }
    return true
}

/// A program started with its standard input, output and error on pipes (or
/// all three on a pseudo-terminal), driven step by step: write to it, wait
/// for output, close its input, wait for it to exit. Every wait has a
/// deadline; `deinit` kills a program a failed test left running.
final class ChildProcess {
    let process = Process()
    let stdout: OutputCollector
    let stderr: OutputCollector?
    private let inputDescriptor: Int32
    private var inputOpen = true
    /// A pty's master never reports end of file while the test holds the slave.
    private let outputEnds: Bool
    private let pipes: [Pipe]

    /// Started with pipes.
    init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws {
        Signals.ignoreBrokenPipe()
        let input = Pipe()
        let output = Pipe()
        let errors = Pipe()
        pipes = [input, output, errors]
        outputEnds = true
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        inputDescriptor = input.fileHandleForWriting.fileDescriptor
        stdout = OutputCollector(descriptor: output.fileHandleForReading.fileDescriptor)
        stderr = OutputCollector(descriptor: errors.fileHandleForReading.fileDescriptor)
        // Process closed the child's ends in this process; the FileHandles
        // own the other ends (closing them by number too would close twice).
    }

    /// Started on `terminal`: stdin, stdout and stderr are its slave side;
    /// what the program draws is collected from the master side.
    init(_ executable: String, _ arguments: [String], environment: [String: String], terminal: PseudoTerminal) throws {
        pipes = []
        outputEnds = false
        let slave = FileHandle(fileDescriptor: terminal.slave, closeOnDealloc: false)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        process.standardInput = slave
        process.standardOutput = slave
        process.standardError = slave
        try process.run()
        inputDescriptor = terminal.master
        stdout = terminal.output
        stderr = nil
    }

    deinit {
        if process.isRunning { Signals.send(.kill, to: process.processIdentifier) }
        closeInput()
        stdout.stop()
        stderr?.stop()
    }

    func write(_ text: String) { write(Array(text.utf8)) }
    func write(_ bytes: [UInt8]) { writeAll(inputDescriptor, bytes) }

    /// End of file on the program's standard input (pipes only).
    func closeInput() {
        if inputOpen, let input = pipes.first {
            inputOpen = false
            try? input.fileHandleForWriting.close()
        }
    }

    /// Waits for the program to exit; its status (128 + n if signal n killed it,
    /// as a shell reports it). Kills it after `timeout`.
    @discardableResult
    func waitForExit(timeout: Double = 10) throws -> Int32 {
        let exited = Background { [process] in process.waitUntilExit() }
        do {
            try exited.value(timeout: timeout)
        } catch {
            Signals.send(.kill, to: process.processIdentifier)
            throw TestFailure(
                "\(process.executableURL?.lastPathComponent ?? "program") did not exit within \(timeout) s; "
                    + "output \(stdout.text.debugDescription), errors \((stderr?.text ?? "").debugDescription)")
        }
        if outputEnds {
            try stdout.waitForEnd(timeout: 5)
            try stderr?.waitForEnd(timeout: 5)
        }
        let status = process.terminationStatus
        return process.terminationReason == .uncaughtSignal ? 128 + status : status
    }

    /// Fails the test if the program printed a sanitizer or runtime report
    /// (under `--sanitize=thread` the client is instrumented too).
    func expectNoReports(sourceLocation: SourceLocation = #_sourceLocation) {
        let text = (stderr ?? stdout).text
        for marker in ["ThreadSanitizer", "AddressSanitizer", "Fatal error", "Fatal access conflict"] {
            #expect(!text.contains(marker), "report in output:\n\(text)", sourceLocation: sourceLocation)
        }
    }
}

/// A program run to completion: `input` on stdin then EOF; raw bytes out.
struct RawResult {
    var status: Int32
    var stdout: [UInt8]
    var stderr: String
}

func runRaw(
    _ executable: String, _ arguments: [String], input: [UInt8], environment: [String: String]? = nil,
    timeout: Double = 15
) throws -> RawResult {
    let child = try ChildProcess(executable, arguments, environment: environment)
    // A writer thread, so a program that answers while we still send cannot
    // deadlock with us (its output is collected all along).
    let writer = Background { [input] in
        child.write(input)
        child.closeInput()
    }
    let status = try child.waitForExit(timeout: timeout)
    try writer.value(timeout: 5)
    child.expectNoReports()
    return RawResult(status: status, stdout: child.stdout.data, stderr: child.stderr?.text ?? "")
}

/// The environment for a child: ours, minus NO_COLOR, plus `extra`.
func environment(_ extra: [String: String] = [:]) -> [String: String] {
    var environment = ProcessInfo.processInfo.environment
    environment["NO_COLOR"] = nil
    environment.merge(extra) { $1 }
    return environment
}

/// A TCP port on 127.0.0.1 that refuses connections for as long as the
/// returned descriptor stays open: bound, never listening (so no other
/// test can take the port meanwhile).
func refusingPort() throws -> (port: Int, descriptor: Int32) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: \(Errno.current)") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { sockaddrPointer in
            bind(fd, sockaddrPointer, length) == 0 && getsockname(fd, sockaddrPointer, &length) == 0
        }
    }
    guard bound else { throw TestFailure("bind: \(Errno.current)") }
    return (Int(UInt16(bigEndian: address.sin_port)), fd)
}

/// The tools a user talks to the server with; CI installs both.
func netcatPath(_ name: String) throws -> String {
    for directory in ["/usr/bin", "/bin", "/usr/local/bin"] where access("\(directory)/\(name)", X_OK) == 0 {
        return "\(directory)/\(name)"
    }
    throw TestFailure("\(name) is not installed (apt-get install netcat-openbsd ncat)")
}

/// Whether `text` holds an ANSI colour (SGR) sequence, ESC [ … m.
func containsColor(_ text: String) -> Bool {
    text.contains(#/\x1B\[[0-9;]*m/#)
}
