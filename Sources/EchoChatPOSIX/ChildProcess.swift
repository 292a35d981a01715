import CEchoChatShim
import Glibc

/// A program started with posix_spawn(3), for tools that run a server (or a
/// reference load generator) as a separate process. Owns the read ends of the
/// pipes it was asked to create.
public final class ChildProcess {
    /// Where one of the child's standard streams goes.
    public enum Output: Sendable {
        case inherit
        case discard
        /// A pipe; read it with `readLine`/`readAll` (stdout) or let `drain` empty it.
        case pipe
        /// Appended to a file (created if needed).
        case file(String)
    }

    public let pid: Int32
    /// Read ends of the pipes, or -1.
    public let standardOutput: Int32
    public let standardError: Int32
    private var exitStatus: Int32?
    private var pending: [UInt8] = []

    /// Starts `path` (searched in PATH when it has no slash) with `arguments`
    /// (not including argv[0]); stdin is /dev/null.
    public init(_ path: String, _ arguments: [String], stdout: Output = .inherit, stderr: Output = .inherit)
        throws(SystemError)
    {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        var parentEnds: [Int32] = []
        var childEnds: [Int32] = []
        func plan(_ output: Output, _ target: Int32) throws(SystemError) -> Int32 {
            switch output {
            case .inherit: return -1
            case .discard:
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", O_WRONLY, 0)
                return -1
            case .file(let file):
                posix_spawn_file_actions_addopen(&actions, target, file, O_WRONLY | O_CREAT | O_APPEND, 0o644)
                return -1
            case .pipe:
                var ends: [Int32] = [0, 0]
                _ = try syscallNoWait("pipe") { pipe(&ends) }
                // Close-on-exec on both ends: the child gets its end through dup2 only.
                for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
                posix_spawn_file_actions_adddup2(&actions, ends[1], target)
                parentEnds.append(ends[0])
                childEnds.append(ends[1])
                return ends[0]
            }
        }
        let outFD = try plan(stdout, 1)
        let errFD = try plan(stderr, 2)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var child: pid_t = 0
        let status = path.contains("/")
            ? posix_spawn(&child, path, &actions, nil, argv, environ)
            : posix_spawnp(&child, path, &actions, nil, argv, environ)
        for end in childEnds { _ = Glibc.close(end) }
        if status != 0 {
            for end in parentEnds { _ = Glibc.close(end) }
            throw SystemError("spawn \(path)", Errno(rawValue: status))
        }
        pid = child
        standardOutput = outFD
        standardError = errFD
    }

    deinit {
        if standardOutput >= 0 { _ = Glibc.close(standardOutput) }
        if standardError >= 0 { _ = Glibc.close(standardError) }
    }

    /// The next line of the child's piped stderr (or stdout with `fromStandardOutput`),
    /// without its LF; nil at EOF or when `timeout` seconds pass first.
    public func readLine(timeout: Double, fromStandardOutput: Bool = false) -> String? {
        let fd = fromStandardOutput ? standardOutput : standardError
        guard fd >= 0 else { return nil }
        let deadline = Clock.monotonicNanoseconds() + Int64(timeout * 1e9)
        while true {
            if let newline = pending.firstIndex(of: 0x0A) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                return line
            }
            guard Self.readSome(fd, into: &pending, deadline: deadline) else { return nil }
        }
    }

    /// Everything the child writes to its piped stdout until EOF, or until
    /// `timeout` seconds pass (then what arrived so far).
    public func readAllStandardOutput(timeout: Double) -> String {
        var bytes: [UInt8] = []
        let deadline = Clock.monotonicNanoseconds() + Int64(timeout * 1e9)
        while standardOutput >= 0, Self.readSome(standardOutput, into: &bytes, deadline: deadline) {}
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Reads the child's piped stderr on a thread of its own until EOF, so a
    /// chatty child never blocks on a full pipe. `line` sees every line.
    public func drainStandardError(_ line: @escaping @Sendable (String) -> Void) throws(SystemError) {
        guard standardError >= 0 else { return }
        let fd = standardError
        let leftover = pending
        pending = []
        _ = try Threads.spawn(name: "child-stderr", stackSize: 256 * 1024, detached: true) {
            var buffer = leftover
            var chunk = [UInt8](repeating: 0, count: 16384)
            while true {
                while let newline = buffer.firstIndex(of: 0x0A) {
                    line(String(decoding: buffer[..<newline], as: UTF8.self))
                    buffer.removeSubrange(...newline)
                }
                let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if count < 0 && Errno.current == .interrupted { continue }
                if count <= 0 { return }
                buffer.append(contentsOf: chunk[..<count])
            }
        }
    }

    private static func readSome(_ fd: Int32, into bytes: inout [UInt8], deadline: Int64) -> Bool {
        while true {
            let left = deadline - Clock.monotonicNanoseconds()
            if left <= 0 { return false }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = Glibc.poll(&entry, 1, Int32(min(left / 1_000_000 + 1, 1000)))
            if ready < 0 && Errno.current != .interrupted { return false }
            if ready <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 16384)
            let count = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if count < 0 && Errno.current == .interrupted { continue }
            if count <= 0 { return false }
            bytes.append(contentsOf: chunk[..<count])
            return true
        }
    }

    /// Whether the child is still running (reaps it if it has exited).
    public var isRunning: Bool {
        if exitStatus != nil { return false }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid {
            exitStatus = Self.decode(status)
            return false
        }
        return true
    }

    /// Waits up to `timeout` seconds for the child to exit; its exit status
    /// (128 + N when killed by signal N), or nil if it is still running.
    @discardableResult
    public func wait(timeout: Double) -> Int32? {
        let deadline = Clock.monotonicNanoseconds() + Int64(timeout * 1e9)
        while isRunning {
            if Clock.monotonicNanoseconds() >= deadline { return nil }
            // No portable "waitpid with a timeout": poll every 5 ms.
            Clock.sleep(nanoseconds: 5_000_000)
        }
        return exitStatus
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace` seconds.
    /// Returns the exit status.
    @discardableResult
    public func terminate(grace: Double = 10) -> Int32? {
        guard isRunning else { return exitStatus }
        Signals.send(.terminate, to: pid)
        if let status = wait(timeout: grace) { return status }
        Signals.send(.kill, to: pid)
        return wait(timeout: 5)
    }

    private static func decode(_ status: Int32) -> Int32 {
        let signal = status & 0x7F
        return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
    }

    /// Replaces the current process with `path` (execv(3)); returns only on failure.
    public static func replaceCurrentProcess(with path: String, _ arguments: [String]) -> SystemError {
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        if path.contains("/") { execv(path, argv) } else { execvp(path, argv) }
        let error = SystemError("exec \(path)", .current)
        for pointer in argv { free(pointer) }
        return error
    }
}
