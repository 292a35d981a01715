import EchoChatPOSIX
import Foundation
import Glibc
import Testing

// The one way tests start programs. Plain POSIX underneath (fork + exec in the
// C shim, pipes, poll, pidfds); no Foundation `Process`, whose FileHandle
// reads and writes trap on errors. Every wait has a deadline and every
// failure is a thrown `TestFailure` carrying what the program printed.
//
// Nothing a test starts outlives the test process: each child has
// PR_SET_PDEATHSIG(SIGKILL) and a process group of its own, which the
// runner kills when the child exits or its `TestProcess` goes away. The
// death signal is tied to the *thread* that forked, not the process, and the
// tests run on pool threads that may exit; so every fork happens on one
// thread that lives as long as the process (`Spawner`).

/// Runs fork + exec on a thread that never exits, so PR_SET_PDEATHSIG fires
/// only when the test process itself dies.
final class Spawner: @unchecked Sendable {
    static let shared = Spawner()

    // `queue` is protected by `condition`.
    private let condition = NSCondition()
    private var queue: [@Sendable () -> Void] = []

    private init() {
        Self.dieWithParent()
        do {
            try Threads.spawn(name: "test-spawner", stackSize: 512 * 1024, detached: true) { [self] in
                while true {
                    condition.lock()
                    while queue.isEmpty { condition.wait() }
                    let job = queue.removeFirst()
                    condition.unlock()
                    job()
                }
            }
        } catch {
            fatalError("cannot start the spawner thread: \(error)")
        }
    }

    /// `swift test` runs this test process as its child. If `swift test` is
    /// killed (CI cancelling a job with SIGKILL), this process would run on
    /// as an orphan, starting servers nobody waits for. So a thread watches
    /// the parent through a pidfd and, when it has gone, SIGKILLs this
    /// process: its children then die by their death signal, and guardians
    /// kill the daemons they hold. Started with the first program a test starts.
    private static func dieWithParent() {
        let parent = getppid()
        guard parent > 1, let watched = try? ProcessDescriptor(pid: parent), watched.descriptor >= 0,
            getppid() == parent  // still ours: the pidfd is of the right process
        else { return }
        _ = try? Threads.spawn(name: "parent-watch", stackSize: 128 * 1024, detached: true) {
            while !watched.waitForExit(timeout: 3600) {}
            let message = "test runner: parent process \(parent) has gone; killing this process and its children\n"
            _ = message.withCString { Glibc.write(2, $0, strlen($0)) }
            _ = Glibc.kill(getpid(), SIGKILL)
        }
    }

    /// Runs `body` on the spawner thread and returns its result.
    func run<T: Sendable>(_ body: @escaping @Sendable () -> T) throws -> T {
        let result = Lock<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        condition.lock()
        queue.append {
            let value = body()
            result.withLock { $0 = value }
            done.signal()
        }
        condition.signal()
        condition.unlock()
        // fork + exec takes milliseconds; a minute means something is badly wrong.
        guard done.wait(timeout: .now() + 60) == .success, let value = result.withLock({ $0 }) else {
            throw TestFailure("the spawner thread did not answer within 60 s")
        }
        return value
    }
}

/// Everything a descriptor yields, read on a joinable thread of its own until
/// end of file, so a test can wait (with a deadline, never a sleep) for the
/// output to satisfy a condition, and know when it is complete.
public final class OutputCollector: Sendable {
    private struct State {
        var bytes: [UInt8] = []
        var lines: [String] = []
        /// Bytes after the last LF, not yet a line.
        var partial: [UInt8] = []
        var ended = false
        var readError: String?
    }

    private let state = Lock(State())
    private let stopping = Lock(false)
    // Broadcast whenever `state` changes; waiters hold it around their checks.
    private let condition = NSCondition()
    private let reader = Lock<ThreadHandle?>(nil)
    private let name: String

    /// Starts reading `descriptor` (which the caller keeps open until `stop()`).
    public init(descriptor: Int32, name: String = "output") throws {
        self.name = name
        let handle = try Threads.spawn(name: "collect-\(name)", stackSize: 256 * 1024) { [self] in
            self.readUntilEnd(descriptor)
        }
        reader.withLock { $0 = handle }
    }

    private func readUntilEnd(_ descriptor: Int32) {
        var chunk = [UInt8](repeating: 0, count: 65536)
        var failure: String?
        // Polls in 50 ms steps so `stop()` always ends it.
        while !stopping.withLock({ $0 }) {
            var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            let ready = poll(&entry, 1, 50)
            if ready == 0 || (ready < 0 && errno == EINTR) { continue }
            if ready < 0 {
                failure = "poll: \(Errno.current)"
                break
            }
            let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            // 0: end of file. EIO: a pty whose other side is all closed.
            if count == 0 || (count < 0 && errno == EIO) { break }
            if count < 0 {
                failure = "read: \(Errno.current)"
                break
            }
            update { state in
                state.bytes.append(contentsOf: chunk[0..<count])
                state.partial.append(contentsOf: chunk[0..<count])
                while let newline = state.partial.firstIndex(of: 0x0A) {
                    state.lines.append(String(decoding: state.partial[..<newline], as: UTF8.self))
                    state.partial.removeSubrange(...newline)
                }
            }
        }
        update { state in
            state.ended = true
            state.readError = failure
        }
    }

    private func update(_ change: (inout State) -> Void) {
        condition.lock()
        state.withLock(change)
        condition.broadcast()
        condition.unlock()
    }

    public var data: [UInt8] { state.withLock { $0.bytes } }
    /// Everything so far as text (a partial last line included).
    public var text: String { String(decoding: data, as: UTF8.self) }
    /// The complete lines so far, without their LF.
    public var lines: [String] { state.withLock { $0.lines } }
    /// True once the writer side closed (or reading failed or was stopped).
    public var hasEnded: Bool { state.withLock { $0.ended } }

    /// Waits until `predicate` holds for everything collected so far; throws
    /// after `timeout` seconds or at end of output, showing what did arrive.
    @discardableResult
    public func waitFor(_ what: String, timeout: Double = 10, _ predicate: ([UInt8]) -> Bool) throws -> [UInt8] {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while true {
            let (now, ended) = state.withLock { ($0.bytes, $0.ended) }
            if predicate(now) { return now }
            if ended || !condition.wait(until: deadline) {
                let last = data
                if predicate(last) { return last }
                let why = ended ? "the \(name) ended first" : "not within \(timeout) s"
                throw TestFailure("no \(what) (\(why)); have \(String(decoding: last, as: UTF8.self).debugDescription)")
            }
        }
    }

    /// Waits until the text collected contains `needle`.
    @discardableResult
    public func waitFor(text needle: String, timeout: Double = 10) throws -> String {
        let bytes = try waitFor("'\(needle)'", timeout: timeout) { String(decoding: $0, as: UTF8.self).contains(needle) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The first complete line satisfying `predicate`, waiting up to `timeout`
    /// seconds; nil if none came in time or the output ended without one.
    /// `after`: how many lines to pass over (`lines.count` taken earlier, to
    /// wait for a line written since, not an older one that matches too).
    public func waitFor(_ predicate: (String) -> Bool, timeout: Double, after: Int = 0) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        var checked = after
        while true {
            let (lines, ended) = state.withLock { ($0.lines, $0.ended) }
            if let line = lines[min(checked, lines.count)...].first(where: predicate) { return line }
            checked = max(checked, lines.count)
            if ended || !condition.wait(until: deadline) {
                let lines = state.withLock { $0.lines }
                return lines[min(checked, lines.count)...].first(where: predicate)
            }
        }
    }

    /// Waits (bounded) for the end of output: every byte the writer wrote has
    /// then been collected. Throws if it does not end in time or reading failed.
    public func waitForEnd(timeout: Double) throws {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while !state.withLock({ $0.ended }) {
            if !condition.wait(until: deadline) && !state.withLock({ $0.ended }) {
                throw TestFailure("the \(name) did not end within \(timeout) s (a process still holds it open?)")
            }
        }
        if let error = state.withLock({ $0.readError }) { throw TestFailure("reading the \(name) failed: \(error)") }
    }

    /// Ends the reader thread (within about 50 ms) and joins it; safe to call again.
    public func stop() {
        stopping.withLock { $0 = true }
        if let handle = reader.withLock({ handle in defer { handle = nil }; return handle }) { handle.join() }
    }

    deinit { stop() }
}

/// What a finished program printed and how it exited.
public struct ProgramResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    public init(status: Int32, stdout: String, stderr: String) {
        (self.status, self.stdout, self.stderr) = (status, stdout, stderr)
    }
}

/// A program a test started, with its standard streams on pipes (or on
/// descriptors the test provides, such as a pseudo-terminal). Write to it,
/// wait for its output, close its input, wait for it to exit: every step has
/// a deadline and fails with a `TestFailure` that shows the program's output.
/// `deinit` kills a program (and its process group) a failed test left running.
public final class TestProcess: @unchecked Sendable {
    /// Where one standard stream of the child goes.
    public enum Stream: Sendable {
        /// /dev/null.
        case null
        /// A pipe to this process (collected for stdout/stderr).
        case pipe
        /// A descriptor of the test's (not closed by TestProcess).
        case descriptor(Int32)
    }

    public let pid: Int32
    public let executable: String
    /// The collected stdout and stderr (nil where not a pipe).
    public let stdout: OutputCollector?
    public let stderr: OutputCollector?
    private let handle: ProcessDescriptor
    // The descriptor we write to (-1 once closed) and whether we own it:
    // writes hold this lock, so closing the input never races a write on
    // another thread (and its descriptor number cannot be reused under it).
    private let input = Lock<(descriptor: Int32, owned: Bool)>((-1, false))
    // The exit status and killing signal, set once the child is reaped.
    private let lock = Lock<(status: Int32?, signal: Int32?)>((nil, nil))
    private let ownedReadEnds: [Int32]

    /// Starts `executable` (a path; or a name searched in PATH) with `arguments`.
    /// `environment` replaces ours when given. `openFileLimit` sets the child's
    /// RLIMIT_NOFILE (soft and hard) from its start. `inputDescriptor`: where
    /// `write` goes when stdin is not a pipe (a pty's master side).
    public init(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        stdin: Stream = .pipe, stdout: Stream = .pipe, stderr: Stream = .pipe,
        openFileLimit: Int? = nil, inputDescriptor: Int32? = nil
    ) throws {
        Signals.ignoreBrokenPipe()
        self.executable = executable
        var closeAfterStart: [Int32] = []
        var readEnds: [Int32] = []
        var input: (fd: Int32, owned: Bool) = (inputDescriptor ?? -1, false)
        func plan(_ stream: Stream, reading: Bool) throws -> (child: Int32, ours: Int32) {
            switch stream {
            case .null: return (-1, -1)
            case .descriptor(let fd): return (fd, -1)
            case .pipe:
                let (readEnd, writeEnd) = try Spawn.pipe()
                if reading {  // the child reads: it gets the read end
                    closeAfterStart.append(readEnd)
                    return (readEnd, writeEnd)
                }
                closeAfterStart.append(writeEnd)
                readEnds.append(readEnd)
                return (writeEnd, readEnd)
            }
        }
        let streams: [(child: Int32, ours: Int32)]
        do {
            streams = [try plan(stdin, reading: true), try plan(stdout, reading: false), try plan(stderr, reading: false)]
        } catch {
            for fd in closeAfterStart + readEnds { close(fd) }
            throw error
        }
        if streams[0].ours >= 0 {
            // Ours only: a write that would block waits in poll with a deadline.
            _ = fcntl(streams[0].ours, F_SETFL, fcntl(streams[0].ours, F_GETFL) | O_NONBLOCK)
            input = (streams[0].ours, true)
        }
        let environmentList = environment.map { $0.map { "\($0.key)=\($0.value)" } }
        let childStreams = streams.map(\.child)
        let started = try? Spawner.shared.run { () -> Result<Int32, SystemError> in
            Result { () throws(SystemError) -> Int32 in
                try Spawn.start(
                    executable, arguments, environment: environmentList, stdin: childStreams[0],
                    stdout: childStreams[1], stderr: childStreams[2], openFileLimit: openFileLimit)
            }
        }
        for fd in closeAfterStart { close(fd) }
        let pid: Int32
        switch started {
        case .success(let value)?: pid = value
        case .failure(let error)?:
            for fd in readEnds { close(fd) }
            if input.owned { close(input.fd) }
            throw TestFailure("cannot start \(executable) \(arguments): \(error)")
        case nil:
            for fd in readEnds { close(fd) }
            if input.owned { close(input.fd) }
            throw TestFailure("cannot start \(executable): the spawner thread did not answer")
        }
        self.pid = pid
        ownedReadEnds = readEnds
        self.input.withLock { $0 = (input.fd, input.owned) }
        let name = URL(fileURLWithPath: executable).lastPathComponent
        let watched: (ProcessDescriptor, OutputCollector?, OutputCollector?)
        do {
            watched = (
                try ProcessDescriptor(pid: pid),
                streams[1].ours >= 0 ? try OutputCollector(descriptor: streams[1].ours, name: "stdout of \(name)") : nil,
                streams[2].ours >= 0 ? try OutputCollector(descriptor: streams[2].ours, name: "stderr of \(name)") : nil
            )
        } catch {
            // Not fully set up: kill it; deinit does not run for a failed init.
            _ = Glibc.kill(-pid, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
            for fd in readEnds { close(fd) }
            if input.owned { close(input.fd) }
            throw TestFailure("cannot watch \(executable): \(error)")
        }
        (handle, self.stdout, self.stderr) = watched
    }

    deinit {
        if lock.withLock({ $0.status }) == nil {
            // A failed test left it running: kill the whole group, then reap.
            _ = Glibc.kill(-pid, SIGKILL)
            handle.send(.kill)
            _ = handle.waitForExit(timeout: 10)
            reap()
        }
        closeInput()
        stdout?.stop()
        stderr?.stop()
        for fd in ownedReadEnds { close(fd) }
    }

    /// The program's name and what it printed, for failure messages.
    public var transcript: String {
        let name = URL(fileURLWithPath: executable).lastPathComponent
        var text = "\(name) (pid \(pid))"
        if let stdout { text += "\nstdout: \(stdout.text.suffix(4000).debugDescription)" }
        if let stderr { text += "\nstderr: \(stderr.text.suffix(4000).debugDescription)" }
        return text
    }

    /// The exit status once reaped (by `waitForExit`); nil before.
    public var exitStatus: Int32? { lock.withLock { $0.status } }

    /// The signal that killed it, once reaped; nil if it exited (even with
    /// status 128 + n, which `exitStatus` cannot tell apart).
    public var killedBySignal: Int32? { lock.withLock { $0.signal } }

    /// Whether the process is still running (not exited).
    public var isRunning: Bool { exitStatus == nil && !handle.hasExited }

    /// Sends `signal` (through the pidfd: never to a reused pid). False if
    /// the process has already been reaped or is gone.
    @discardableResult
    public func signal(_ signal: Signal) -> Bool {
        guard exitStatus == nil else { return false }
        return handle.send(signal)
    }

    /// Writes all of `bytes` to the program's input. Throws (with the
    /// program's output) if it has exited, closed its input, or did not take
    /// the bytes within `timeout` seconds.
    public func write(_ bytes: [UInt8], timeout: Double = 30) throws {
        let deadline = Clock.monotonicNanoseconds() + Int64(timeout * 1e9)
        let failure: String? = input.withLock { state in
            guard state.descriptor >= 0 else { return "its input is closed" }
            var offset = 0
            while offset < bytes.count {
                let written = bytes[offset...].withUnsafeBytes { Glibc.write(state.descriptor, $0.baseAddress, $0.count) }
                if written >= 0 {
                    offset += written
                    continue
                }
                let error = Errno.current
                if error == .interrupted { continue }
                guard error == .wouldBlock else { return "write: \(error)" }
                let left = deadline - Clock.monotonicNanoseconds()
                if left <= 0 { return "it took \(offset) of \(bytes.count) bytes in \(timeout) s" }
                var entry = pollfd(fd: state.descriptor, events: Int16(POLLOUT), revents: 0)
                _ = poll(&entry, 1, Int32(min(left / 1_000_000 + 1, 1000)))
            }
            return nil
        }
        if let failure {
            let exited = handle.waitForExit(timeout: 0.2) ? " (it has exited)" : ""
            throw TestFailure("cannot write to \(transcript)\n\(failure)\(exited)")
        }
    }

    public func write(_ text: String, timeout: Double = 30) throws { try write(Array(text.utf8), timeout: timeout) }

    /// End of file on the program's standard input (a pipe's only; safe to call again).
    public func closeInput() {
        input.withLock { state in
            if state.owned && state.descriptor >= 0 { close(state.descriptor) }
            state.descriptor = -1
        }
    }

    /// Waits for the program to exit and for all of its output to be
    /// collected (end of file on its pipes); returns its status (128 + n if
    /// signal n killed it). After `timeout` it is killed and this throws.
    /// Whatever is still running in its process group is killed.
    @discardableResult
    public func waitForExit(timeout: Double = 10) throws -> Int32 {
        if let status = exitStatus { return status }
        let start = Clock.monotonicNanoseconds()
        let exited = handle.waitForExit(timeout: timeout)
        // Still a zombie (not reaped): the group id cannot have been reused.
        _ = Glibc.kill(-pid, SIGKILL)
        if !exited {
            handle.send(.kill)
            _ = handle.waitForExit(timeout: 10)
        }
        reap()
        // The output ends once every writer is gone: the program and anything
        // it started (killed above, when in its group).
        let spent = Double(Clock.monotonicNanoseconds() - start) / 1e9
        var outputError: (any Error)?
        for collector in [stdout, stderr].compactMap({ $0 }) {
            do { try collector.waitForEnd(timeout: max(5, timeout - spent)) } catch {
                outputError = outputError ?? error
                collector.stop()
            }
        }
        guard exited else {
            throw TestFailure("\(transcript)\ndid not exit within \(timeout) s (killed)")
        }
        if let outputError { throw TestFailure("\(outputError)\n\(transcript)") }
        return exitStatus ?? -1
    }

    private func reap() {
        var status: Int32 = 0
        var result: Int32
        repeat { result = waitpid(pid, &status, 0) } while result < 0 && errno == EINTR
        let code = result == pid ? Spawn.exitCode(fromWaitStatus: status) : -1
        let signal = result == pid && status & 0x7F != 0 ? status & 0x7F : nil
        lock.withLock { state in
            if state.status == nil { (state.status, state.signal) = (code, signal) }
        }
    }

    /// Fails the test if the program printed a sanitizer or runtime report
    /// (under `--sanitize=thread` or `address` the programs are instrumented too).
    public func expectNoReports(sourceLocation: SourceLocation = #_sourceLocation) {
        let text = (stderr ?? stdout)?.text ?? ""
        for marker in reportMarkers {
            #expect(!text.contains(marker), "report in output:\n\(text)", sourceLocation: sourceLocation)
        }
    }
}

/// What a sanitizer or the Swift runtime prints when it reports a problem:
/// a program's output holding one of these fails the test. Under
/// `swift test --sanitize=thread` or `--sanitize=address` every program the
/// tests start is instrumented too; ASan's reports name AddressSanitizer (its
/// leak summaries too), LeakSanitizer's name it.
public let reportMarkers = [
    "ThreadSanitizer", "AddressSanitizer", "LeakSanitizer", "Fatal error", "Fatal access conflict", "runtime error",
]

/// Runs `executable` with `arguments`, feeding `input` on stdin (then EOF),
/// and waits for it, at most `timeout` seconds (then kills it and throws).
public func runProgram(
    _ executable: String, _ arguments: [String], input: String = "", environment: [String: String]? = nil,
    timeout: Double = 30
) throws -> ProgramResult {
    let result = try runProgram(executable, arguments, bytes: Array(input.utf8), environment: environment, timeout: timeout)
    return ProgramResult(status: result.status, stdout: String(decoding: result.stdout, as: UTF8.self), stderr: result.stderr)
}

/// What a finished program printed, its stdout as raw bytes.
public struct RawProgramResult: Sendable {
    public var status: Int32
    public var stdout: [UInt8]
    public var stderr: String
    public init(status: Int32, stdout: [UInt8], stderr: String) {
        (self.status, self.stdout, self.stderr) = (status, stdout, stderr)
    }
}

/// Runs `executable` with `bytes` on stdin (then EOF); raw bytes out. Its
/// output is collected all along, so a program that answers while we still
/// write cannot deadlock with us.
public func runProgram(
    _ executable: String, _ arguments: [String], bytes: [UInt8], environment: [String: String]? = nil,
    timeout: Double = 30
) throws -> RawProgramResult {
    let child = try TestProcess(executable, arguments, environment: environment)
    if !bytes.isEmpty { try child.write(bytes, timeout: timeout) }
    child.closeInput()
    let status = try child.waitForExit(timeout: timeout)
    return RawProgramResult(status: status, stdout: child.stdout?.data ?? [], stderr: child.stderr?.text ?? "")
}

/// Runs netcat-openbsd (`nc -N` by default) with `input` on stdin and returns
/// its stdout. `-w` bounds how long it waits, so a server bug cannot hang.
/// Tests calling this carry `.requires(.nc)`.
public func runNetcat(
    host: String = "127.0.0.1", port: Int, input: String, arguments: [String] = ["-N"]
) throws -> String {
    let nc = try RequiredTool.nc.path()
    let result = try runProgram(nc, arguments + ["-w", "10", host, String(port)], input: input)
    guard result.status == 0 else { throw TestFailure("nc exited with \(result.status): \(result.stderr)") }
    return result.stdout
}
