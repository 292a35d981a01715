import CEchoChatShim
import Glibc

/// Detaching from the terminal the way Redis, memcached and nginx do, with a
/// readiness pipe so the launching process reports the daemon's start-up
/// result: `nginx` exits 0 only once it listens, and so does this.
///
/// Call `Daemon.detach(relaunching:)` before any thread exists (forking a
/// multi-threaded process copies only the calling thread).
public enum Daemon {
    /// The end of the readiness pipe the daemon writes to once it is serving
    /// (`ready()`) or has failed (`failed(_:)`).
    public struct Readiness: Sendable {
        let descriptor: Int32

        /// Tells the launcher start-up succeeded; it exits 0.
        public func ready() { send("OK\n") }

        /// Tells the launcher start-up failed; it prints `message` and exits 1.
        public func failed(_ message: String) { send("ERR " + message + "\n") }

        private func send(_ text: String) {
            var text = text
            text.withUTF8 { bytes in _ = Glibc.write(descriptor, bytes.baseAddress, bytes.count) }
            _ = Glibc.close(descriptor)
        }
    }

    /// The environment variable that hands the re-executed daemon its end of
    /// the readiness pipe (internal: not a setting, so not `ECHOCHAT_`).
    public static let readinessVariable = "_ECHOCHAT_DAEMON_READINESS"

    /// fork, setsid, fork again, stdin/stdout/stderr to /dev/null, then
    /// execute this same program again with the same arguments: `adopt()`
    /// in the new image finds the readiness pipe and carries on as the
    /// daemon. Never returns: the launching process waits for the daemon's
    /// word on the readiness pipe and exits 0 on `ready()`, or prints the
    /// error and exits 1 on `failed` or if the daemon dies before saying
    /// anything. Throws only if the pipe cannot be made.
    ///
    /// Why execute again rather than carry on in the forked child, as C
    /// daemons do: the Swift runtime's locks record their owner's thread id,
    /// cached per thread. A forked child's main thread keeps its parent's
    /// id, so once a second thread contends for a lock the main thread holds
    /// (first use of a generic type on two threads at once), the kernel's
    /// priority-inheritance futex finds no such owner and both threads spin
    /// forever. It happened here at shutdown of a reactors daemon, about one
    /// start in seven under ThreadSanitizer. A fresh image has no cached ids.
    public static func detach(relaunching arguments: [String]) throws(SystemError) -> Never {
        var ends: [Int32] = [0, 0]
        _ = try syscallNoWait("pipe") { pipe(&ends) }
        let (readEnd, writeEnd) = (ends[0], ends[1])
        // Single-threaded here, so setting FD_CLOEXEC after pipe(2) is not racy.
        _ = fcntl(readEnd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(writeEnd, F_SETFD, FD_CLOEXEC)
        // What execve needs, made before forking: the daemon's side only
        // redirects, closes and executes.
        // (Never freed: this process executes or exits.)
        let marker = "\(readinessVariable)="
        var envp: [UnsafeMutablePointer<CChar>?] = []
        var cursor = environ
        while let entry = cursor.pointee {
            if strncmp(entry, marker, marker.utf8.count) != 0 { envp.append(strdup(entry)) }
            cursor += 1
        }
        envp += [strdup(marker + String(writeEnd)), nil]
        let argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        let first = try syscallNoWait("fork") { cechochat_fork() }
        if first > 0 {
            _ = Glibc.close(writeEnd)
            Glibc.exit(waitForReadiness(readEnd))
        }
        // First child: a new session without a controlling terminal, then fork
        // again so the daemon is not a session leader and can never get one.
        _ = Glibc.close(readEnd)
        _ = setsid()
        let second = cechochat_fork()
        if second < 0 {
            Readiness(descriptor: writeEnd).failed("fork: \(Errno.current)")
            _exit(1)
        }
        if second > 0 { _exit(0) }
        redirectStandardStreams(to: "/dev/null")
        // Whatever the launcher inherited (a shell's or a test runner's pipes)
        // must not be held open by the daemon, or whoever waits for EOF on
        // them waits for the daemon to exit.
        cechochat_close_all_from_3_except(writeEnd)
        _ = fcntl(writeEnd, F_SETFD, 0)
        execve("/proc/self/exe", argv, envp)
        Readiness(descriptor: writeEnd).failed("cannot execute /proc/self/exe: \(Errno.current)")
        _exit(1)
    }

    /// In the program `detach` executed: takes the readiness pipe from the
    /// environment (removing the variable), changes directory to /, and
    /// returns it. Nil in any other process (no variable, or not a pipe).
    public static func adopt() -> Readiness? {
        guard let value = getenv(readinessVariable) else { return nil }
        let descriptor = Int32(String(cString: value))
        unsetenv(readinessVariable)
        var status = stat()
        guard let descriptor, descriptor > 2, fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFIFO else {
            return nil
        }
        _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        _ = chdir("/")
        return Readiness(descriptor: descriptor)
    }

    private static func waitForReadiness(_ descriptor: Int32) -> Int32 {
        var message: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 512)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 && Errno.current == .interrupted { continue }
            if count <= 0 { break }
            message.append(contentsOf: chunk[0..<count])
        }
        let text = String(decoding: message, as: UTF8.self)
        if text.hasPrefix("OK") { return 0 }
        if text.hasPrefix("ERR ") {
            System.writeToStandardError("Error: " + text.dropFirst(4).trimmingNewline + "\n")
        } else {
            System.writeToStandardError("Error: the daemon exited during start-up (see its log file)\n")
        }
        return 1
    }

    /// stdin from /dev/null; stdout and stderr to `path` (appended), so that
    /// anything written to them, logs included, lands there.
    public static func redirectStandardStreams(to path: String) {
        let input = open("/dev/null", O_RDONLY | O_CLOEXEC)
        if input >= 0 {
            dup2(input, STDIN_FILENO)
            _ = Glibc.close(input)
        }
        let output = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        if output >= 0 {
            dup2(output, STDOUT_FILENO)
            dup2(output, STDERR_FILENO)
            _ = Glibc.close(output)
        }
    }
}

extension Substring {
    fileprivate var trimmingNewline: Substring { last == "\n" ? dropLast() : self }
}

/// The log file: standard error is pointed at it with dup2(2), so log lines,
/// and anything else written to stderr, go there. `reopen()` (on SIGHUP)
/// points stderr at a fresh open of the same path, which is how logrotate's
/// rename-then-signal works; dup2 swaps the file atomically, so a thread
/// writing at that moment writes whole lines to the old file or the new one.
public struct LogFile: Sendable {
    public let path: String

    /// Opens (creating, appending) `path` and sends stderr to it.
    public init(path: String) throws(SystemError) {
        self.path = path
        try reopen()
    }

    public func reopen() throws(SystemError) {
        let fd = try syscallNoWait("open \(path)") { open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644) }
        defer { _ = Glibc.close(fd) }
        _ = try syscallNoWait("dup2 \(path)") { dup2(fd, STDERR_FILENO) }
    }
}

/// A pid file held under an exclusive flock(2) for the life of the process:
/// a second instance given the same file cannot take the lock and refuses to
/// start, and a stale file left by a crash (whose lock died with it) is
/// simply taken over.
public final class PidFile: @unchecked Sendable {
    // Immutable after init; `remove()` is called once, at exit, by main.
    public let path: String
    private let descriptor: Int32

    /// Opens and locks `path`. Fails naming the holder when it is locked.
    public init(path: String) throws(SystemError) {
        self.path = path
        let fd = try syscallNoWait("open \(path)") { open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644) }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let errno = Errno.current
            var holder = [UInt8](repeating: 0, count: 32)
            let count = holder.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
            _ = Glibc.close(fd)
            let pid = String(decoding: holder.prefix(max(0, count)), as: UTF8.self).filter(\.isNumber)
            if errno == .wouldBlock {
                throw SystemError("pid file \(path) is locked by a running instance\(pid.isEmpty ? "" : " (pid \(pid))")", Errno(rawValue: 0))
            }
            throw SystemError("flock \(path)", errno)
        }
        descriptor = fd
    }

    /// Writes this process's pid (after the listener is bound).
    public func write() throws(SystemError) {
        let text = Array("\(getpid())\n".utf8)
        let fd = descriptor
        _ = try syscallNoWait("ftruncate \(path)") { ftruncate(fd, 0) }
        _ = try syscallNoWait("write \(path)") { text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } }
    }

    /// Removes the file, then releases the lock (clean exit).
    public func remove() {
        _ = unlink(path)
        _ = Glibc.close(descriptor)
    }
}

extension System {
    /// `path` made absolute against the current directory, so it still means
    /// the same file after a daemon's chdir("/").
    public static func absolutePath(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return path }
        let directory = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        return directory == "/" ? "/" + path : directory + "/" + path
    }
}
