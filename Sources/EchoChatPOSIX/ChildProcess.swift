import CEchoChatShim
import Glibc

/// A program started with fork + exec (`Spawn.start`), for tools that run a
/// server (or a reference load generator) as a separate process; it dies
/// with this process. Owns the read ends of the
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
    /// Exit notification without polling (nil if pidfd_open failed).
    private let handle: ProcessDescriptor?

    /// Starts `path` (searched in PATH when it has no slash) with `arguments`
    /// (not including argv[0]); stdin is /dev/null. The child is SIGKILLed if
    /// this process dies (PR_SET_PDEATHSIG, see `Spawn.start`), so call this
    /// from a thread that lives as long as the child should (the main thread).
    public init(_ path: String, _ arguments: [String], stdout: Output = .inherit, stderr: Output = .inherit)
        throws(SystemError)
    {
        var parentEnds: [Int32] = []
        var childEnds: [Int32] = []
        func plan(_ output: Output, _ target: Int32) throws(SystemError) -> (child: Int32, parent: Int32) {
            switch output {
            case .inherit: return (target, -1)
            case .discard: return (-1, -1)
            case .file(let file):
                let fd = try syscallNoWait("open \(file)") { open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644) }
                childEnds.append(fd)
                return (fd, -1)
            case .pipe:
                let (readEnd, writeEnd) = try Spawn.pipe()
                parentEnds.append(readEnd)
                childEnds.append(writeEnd)
                return (writeEnd, readEnd)
            }
        }
        let started: Int32
        let out: (child: Int32, parent: Int32)
        let err: (child: Int32, parent: Int32)
        do {
            out = try plan(stdout, 1)
            err = try plan(stderr, 2)
            started = try Spawn.start(path, arguments, stdin: -1, stdout: out.child, stderr: err.child)
        } catch {
            for end in childEnds + parentEnds { _ = Glibc.close(end) }
            throw error
        }
        for end in childEnds { _ = Glibc.close(end) }
        pid = started
        handle = try? ProcessDescriptor(pid: started)
        standardOutput = out.parent
        standardError = err.parent
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
            let left = Double(deadline - Clock.monotonicNanoseconds()) / 1e9
            if left <= 0 { return nil }
            if let handle, handle.descriptor >= 0 {
                // Readable once the child has exited; then isRunning reaps it.
                _ = handle.waitForExit(timeout: left)
            } else {
                Clock.sleep(nanoseconds: 5_000_000)
            }
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

    private static func decode(_ status: Int32) -> Int32 { Spawn.exitCode(fromWaitStatus: status) }

    /// Replaces the current process with `path` (execv(3)); returns only on failure.
    public static func replaceCurrentProcess(with path: String, _ arguments: [String]) -> SystemError {
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        if path.contains("/") { execv(path, argv) } else { execvp(path, argv) }
        let error = SystemError("exec \(path)", .current)
        for pointer in argv { free(pointer) }
        return error
    }
}

/// Starting programs with fork + exec through the C shim (posix_spawn cannot
/// set PR_SET_PDEATHSIG or a resource limit for the child alone).
public enum Spawn {
    /// Starts `path` (PATH is searched when it has no slash) with `arguments`
    /// and `environment` (KEY=VALUE; nil: this process's), with `stdin`,
    /// `stdout` and `stderr` as its descriptors 0, 1, 2 (-1: /dev/null). The
    /// child gets a process group of its own (its pid), default signal
    /// handling, no other descriptor of ours, RLIMIT_NOFILE = `openFileLimit`
    /// when given, and, with `diesWithParent`, PR_SET_PDEATHSIG(SIGKILL): it
    /// is killed when the *thread* that called this exits (Linux ties the
    /// death signal to the forking thread), or when this process dies.
    /// A program that cannot be executed is a thrown error, not a child.
    public static func start(
        _ path: String, _ arguments: [String], environment: [String]? = nil, stdin: Int32, stdout: Int32, stderr: Int32,
        openFileLimit: Int? = nil, diesWithParent: Bool = true
    ) throws(SystemError) -> Int32 {
        let pid = withCStrings([path] + arguments) { argv in
            withEnvironment(environment) { envp in
                cechochat_spawn(path, argv, envp, stdin, stdout, stderr, openFileLimit ?? 0, diesWithParent ? 1 : 0)
            }
        }
        if pid < 0 { throw SystemError("start \(path)", .current) }
        return pid
    }

    /// Starts `path` under a guardian process (see `cechochat_spawn_guarded`):
    /// everything the program leaves behind, such as a daemon, becomes the
    /// guardian's, which kills all of it once `control` is closed or this
    /// process dies. Returns the guardian's pid and the control socket.
    public static func startGuarded(
        _ path: String, _ arguments: [String], environment: [String]? = nil, stdin: Int32, stdout: Int32, stderr: Int32
    ) throws(SystemError) -> (guardian: Int32, control: Int32) {
        var control: Int32 = -1
        let pid = withCStrings([path] + arguments) { argv in
            withEnvironment(environment) { envp in
                cechochat_spawn_guarded(path, argv, envp, stdin, stdout, stderr, &control)
            }
        }
        if pid < 0 { throw SystemError("start \(path) under a guardian", .current) }
        return (pid, control)
    }

    /// A pipe, both ends close-on-exec: (read end, write end).
    public static func pipe() throws(SystemError) -> (Int32, Int32) {
        var ends: [Int32] = [-1, -1]
        _ = try syscallNoWait("pipe2") { cechochat_pipe_cloexec(&ends) }
        return (ends[0], ends[1])
    }

    /// prlimit(2) on another process: its RLIMIT_NOFILE, soft and hard.
    public static func setOpenFileLimit(of pid: Int32, to limit: Int) throws(SystemError) {
        _ = try syscallNoWait("prlimit \(pid)") { cechochat_set_open_file_limit(pid, limit, limit) }
    }

    /// prlimit(2) on another process: sets its RLIMIT_NOFILE to `soft` and
    /// `hard`. Lowering the hard limit cannot be undone without privilege;
    /// the soft limit can go back up to the hard one.
    public static func setOpenFileLimit(of pid: Int32, soft: Int, hard: Int) throws(SystemError) {
        _ = try syscallNoWait("prlimit \(pid)") { cechochat_set_open_file_limit(pid, soft, hard) }
    }

    /// prlimit(2) on another process: the largest file it may write (RLIMIT_FSIZE).
    public static func setFileSizeLimit(of pid: Int32, to bytes: Int) throws(SystemError) {
        _ = try syscallNoWait("prlimit \(pid)") { cechochat_set_file_size_limit(pid, bytes) }
    }

    /// prlimit(2) on another process: the soft limit of its address space
    /// (RLIMIT_AS) to `bytes`, or back to the hard limit when nil. Past it,
    /// mmap(2) fails: a thread's stack, for one.
    public static func setAddressSpaceLimit(of pid: Int32, to bytes: Int?) throws(SystemError) {
        _ = try syscallNoWait("prlimit \(pid)") { cechochat_set_address_space_limit(pid, bytes ?? -1) }
    }

    /// prlimit(2) on another process: its RLIMIT_NOFILE, (soft, hard).
    public static func openFileLimit(of pid: Int32) throws(SystemError) -> (soft: Int, hard: Int) {
        var soft = 0
        var hard = 0
        _ = try syscallNoWait("prlimit \(pid)") { cechochat_get_open_file_limit(pid, &soft, &hard) }
        return (soft, hard)
    }

    /// `wait(2)` status as a shell reports it: the exit code, or 128 + N when signal N killed it.
    public static func exitCode(fromWaitStatus status: Int32) -> Int32 {
        let signal = status & 0x7F
        return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
    }

    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        let pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) } + [nil]
        defer { for pointer in pointers { free(pointer) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    private static func withEnvironment<R>(_ environment: [String]?, _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        guard let environment else { return body(UnsafePointer(environ)) }
        return withCStrings(environment, body)
    }
}

/// A pidfd (pidfd_open(2)): a reference to one process that a reused pid can
/// never redirect. Readable once the process has exited (reaped or not).
public final class ProcessDescriptor: @unchecked Sendable {
    // Immutable after init; `descriptor` is closed only by deinit.
    public let pid: Int32
    /// -1 where the kernel has no pidfd (before 5.3): then `pid` is used, which
    /// is only safe for a child not yet reaped.
    public let descriptor: Int32

    public init(pid: Int32) throws(SystemError) {
        self.pid = pid
        let fd = cechochat_pidfd_open(pid)
        if fd < 0 && Errno.current != Errno(rawValue: ENOSYS) { throw SystemError("pidfd_open \(pid)", .current) }
        descriptor = fd
    }

    deinit { if descriptor >= 0 { _ = Glibc.close(descriptor) } }

    /// Sends `signal`; false if the process has gone.
    @discardableResult
    public func send(_ signal: Signal) -> Bool {
        if descriptor >= 0 { return cechochat_pidfd_send_signal(descriptor, signal.rawValue) == 0 }
        return Glibc.kill(pid, signal.rawValue) == 0
    }

    /// Waits up to `timeout` seconds for the process to exit; true if it has.
    /// Without a pidfd this polls kill(pid, 0), which a zombie passes.
    public func waitForExit(timeout: Double) -> Bool {
        let deadline = Clock.monotonicNanoseconds() + Int64(max(0, timeout) * 1e9)
        while true {
            let left = deadline - Clock.monotonicNanoseconds()
            if descriptor >= 0 {
                var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
                let ready = Glibc.poll(&entry, 1, Int32(max(0, min(left / 1_000_000 + 1, 1000))))
                if ready > 0 { return true }
                if ready < 0 && Errno.current != .interrupted { return false }
            } else {
                if Glibc.kill(pid, 0) != 0 { return true }
                Clock.sleep(nanoseconds: 5_000_000)
            }
            if left <= 0 { return false }
        }
    }

    /// Whether the process has exited, without waiting.
    public var hasExited: Bool { waitForExit(timeout: 0) }
}
