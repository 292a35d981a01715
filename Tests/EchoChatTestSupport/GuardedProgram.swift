import EchoChatPOSIX
import Foundation
import Glibc

/// A program that may leave processes behind, such as `echochat-server
/// --daemon` (it double-forks and the daemon escapes PR_SET_PDEATHSIG and
/// every process group of ours), run under a guardian process that is a
/// child subreaper (see `cechochat_spawn_guarded` in the C shim):
///
/// - the daemon is re-parented to the guardian, which never reaps it while
///   the test runs, so the pid in its pid file cannot be reused and a pidfd
///   opened from it (`adopt(pidFile:)`) is certain to be the daemon's;
/// - when this object goes away (`release()`), or the test process dies
///   even by SIGKILL (the guardian's control socket then reads end of file),
///   the guardian SIGKILLs and reaps everything it holds, then exits.
public final class GuardedProgram: @unchecked Sendable {
    public let executable: String
    public let guardianPid: Int32
    public let stdout: OutputCollector
    public let stderr: OutputCollector
    private let guardian: ProcessDescriptor
    // (control socket, -1 once closed; the program's exit status once read) under `lock`.
    private let lock = Lock<(control: Int32, status: Int32?)>((-1, nil))
    private let readEnds: [Int32]
    private var received: [UInt8] = []  // only touched under `lock`'s caller (one test thread)

    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws {
        Signals.ignoreBrokenPipe()
        self.executable = executable
        let (outRead, outWrite) = try Spawn.pipe()
        let (errRead, errWrite) = try Spawn.pipe()
        let environmentList = environment.map { $0.map { "\($0.key)=\($0.value)" } }
        let started = try? Spawner.shared.run { () -> Result<[Int32], SystemError> in
            Result { () throws(SystemError) -> [Int32] in
                let (pid, control) = try Spawn.startGuarded(
                    executable, arguments, environment: environmentList, stdin: -1, stdout: outWrite, stderr: errWrite)
                return [pid, control]
            }
        }
        close(outWrite)
        close(errWrite)
        guard case .success(let ids)? = started else {
            close(outRead)
            close(errRead)
            throw TestFailure("cannot start \(executable) under a guardian: \(String(describing: started))")
        }
        guardianPid = ids[0]
        readEnds = [outRead, errRead]
        lock.withLock { $0.control = ids[1] }
        let name = URL(fileURLWithPath: executable).lastPathComponent
        do {
            guardian = try ProcessDescriptor(pid: ids[0])
            stdout = try OutputCollector(descriptor: outRead, name: "stdout of \(name)")
            stderr = try OutputCollector(descriptor: errRead, name: "stderr of \(name)")
        } catch {
            close(ids[1])  // the guardian kills its program and exits
            var status: Int32 = 0
            _ = waitpid(ids[0], &status, 0)
            close(outRead)
            close(errRead)
            throw TestFailure("cannot watch \(executable): \(error)")
        }
        let startErrno = try readMessage(timeout: 30, what: "its start")
        if startErrno != 0 {
            release()
            throw TestFailure("cannot start \(executable): \(Errno(rawValue: startErrno))")
        }
    }

    deinit {
        release()
        for fd in readEnds { close(fd) }
    }

    /// Reads one 4-byte message from the guardian, waiting at most `timeout`.
    private func readMessage(timeout: Double, what: String) throws -> Int32 {
        let deadline = Clock.monotonicNanoseconds() + Int64(timeout * 1e9)
        let control = lock.withLock { $0.control }
        guard control >= 0 else { throw TestFailure("the guardian of \(executable) was released") }
        while received.count < 4 {
            let left = deadline - Clock.monotonicNanoseconds()
            if left <= 0 { throw TestFailure("\(transcript)\nno word of \(what) within \(timeout) s") }
            var entry = pollfd(fd: control, events: Int16(POLLIN), revents: 0)
            let ready = poll(&entry, 1, Int32(min(left / 1_000_000 + 1, 1000)))
            if ready <= 0 { continue }
            var chunk = [UInt8](repeating: 0, count: 4 - received.count)
            let count = chunk.withUnsafeMutableBytes { read(control, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { throw TestFailure("\(transcript)\nthe guardian ended before reporting \(what)") }
            received += chunk[0..<count]
        }
        defer { received.removeFirst(4) }
        return received.prefix(4).withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
    }

    public var transcript: String {
        "\(URL(fileURLWithPath: executable).lastPathComponent) under guardian \(guardianPid)\n"
            + "stdout: \(stdout.text.suffix(4000).debugDescription)\nstderr: \(stderr.text.suffix(4000).debugDescription)"
    }

    /// Waits for the program itself (the launcher) to exit and for its output
    /// to end; what it left behind keeps running under the guardian.
    public func waitForExit(timeout: Double = 30) throws -> ProgramResult {
        if lock.withLock({ $0.status }) == nil {
            do {
                let status = Spawn.exitCode(fromWaitStatus: try readMessage(timeout: timeout, what: "its exit"))
                lock.withLock { $0.status = status }
            } catch {
                release()
                throw error
            }
        }
        // A daemon closes every inherited descriptor; if it did not, this says so.
        try stdout.waitForEnd(timeout: 10)
        try stderr.waitForEnd(timeout: 10)
        return ProgramResult(status: lock.withLock { $0.status } ?? -1, stdout: stdout.text, stderr: stderr.text)
    }

    /// The process whose pid `pidFile` holds, as a pidfd. The guardian holds
    /// the daemon unreaped, so the pid is the daemon's even if it has exited.
    public func adopt(pidFile: String) throws -> AdoptedProcess {
        let text = try String(contentsOfFile: pidFile, encoding: .utf8)
        guard let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 1 else {
            throw TestFailure("no pid in \(pidFile): \(text.debugDescription)")
        }
        return try AdoptedProcess(pid: pid)
    }

    /// Closes the control socket: the guardian kills everything it holds
    /// and exits; waits (bounded) for it and reaps it. Safe to call again.
    public func release() {
        let control = lock.withLock { state -> Int32 in
            defer { state.control = -1 }
            return state.control
        }
        guard control >= 0 else { return }
        close(control)
        if !guardian.waitForExit(timeout: 20) {
            guardian.send(.kill)  // its descendants then escape: say so
            _ = guardian.waitForExit(timeout: 5)
            print("warning: the guardian \(guardianPid) of \(executable) did not finish; killed it")
        }
        var status: Int32 = 0
        while waitpid(guardianPid, &status, 0) < 0 && errno == EINTR {}
        stdout.stop()
        stderr.stop()
    }
}

/// A process the test did not start directly (a daemon), held by a pidfd:
/// signals never reach a process that merely reused its pid.
public final class AdoptedProcess: Sendable {
    public let handle: ProcessDescriptor
    public var pid: Int32 { handle.pid }

    init(pid: Int32) throws {
        handle = try ProcessDescriptor(pid: pid)
    }

    @discardableResult
    public func signal(_ signal: Signal) -> Bool { handle.send(signal) }

    /// Still running (a zombie the guardian holds counts as gone).
    public var isAlive: Bool { !handle.hasExited }

    /// Waits (bounded, on the pidfd: no polling) until the process has exited.
    public func waitUntilGone(timeout: Double) -> Bool { handle.waitForExit(timeout: timeout) }
}
