import CEchoChatShim
import Glibc

// Small facts and waits the load client needs: terminals, CPU time, the
// machine's description, sleeping until a deadline, and a doorbell with a timeout.

extension System {
    /// isatty(3): whether `fd` is a terminal (progress lines go to stderr only then).
    public static func isTerminal(_ fd: Int32) -> Bool { isatty(fd) == 1 }

    public static let standardErrorDescriptor: Int32 = STDERR_FILENO

    /// CPU time this process has used, user and system, in seconds (getrusage(2)).
    public static func processCPUSeconds() -> (user: Double, system: Double) {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return (seconds(usage.ru_utime), seconds(usage.ru_stime))
    }

    /// CPUs online (sysconf(3)), whatever this process's affinity mask says.
    public static var onlineCores: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// Clock ticks per second, the unit of the CPU times in /proc/PID/stat.
    public static var clockTicksPerSecond: Int { Int(sysconf(Int32(_SC_CLK_TCK))) }

    /// uname(2): kernel name, release and machine, e.g. "Linux 6.1.0 x86_64".
    public static var kernelDescription: String {
        var names = utsname()
        uname(&names)
        func text<T>(_ field: T) -> String {
            withUnsafeBytes(of: field) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
        }
        return "\(text(names.sysname)) \(text(names.release)) \(text(names.machine))"
    }

    /// The path of the running executable (readlink(2) of /proc/self/exe).
    public static var executablePath: String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Whether a file exists and is executable by us (access(2)).
    public static func isExecutable(_ path: String) -> Bool { access(path, X_OK) == 0 }

    /// Writes `text` to a new (or truncated) file.
    public static func writeFile(_ path: String, _ text: String) throws(SystemError) {
        let fd = try syscallNoWait("open \(path)") { open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644) }
        defer { _ = Glibc.close(fd) }
        var text = text
        let failure: SystemError? = text.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if Errno.current == .interrupted { continue }
                    return SystemError("write \(path)", .current)
                }
                offset += written
            }
            return nil
        }
        if let failure { throw failure }
    }

    /// mkdir(2) for one directory; an existing directory is fine.
    public static func makeDirectory(_ path: String) throws(SystemError) {
        if mkdir(path, 0o755) != 0 && Errno.current != Errno(rawValue: EEXIST) {
            throw SystemError("mkdir \(path)", .current)
        }
    }
}

extension Clock {
    /// Sleeps until the monotonic clock reads `deadline` (clock_nanosleep(2),
    /// TIMER_ABSTIME: no drift from being interrupted and restarted).
    public static func sleep(untilMonotonicNanoseconds deadline: Int64) {
        var target = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &target, nil) == EINTR {}
    }

    public static func sleep(nanoseconds: Int64) {
        sleep(untilMonotonicNanoseconds: monotonicNanoseconds() + nanoseconds)
    }
}

/// A counter that threads ring and one thread waits on with a deadline: a
/// pthread mutex and a condition variable on CLOCK_MONOTONIC (both visible
/// to ThreadSanitizer).
public final class Doorbell: @unchecked Sendable {
    // @unchecked Sendable: `count` is touched only while `mutex` is held.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private var count = 0

    public init() {
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    public func ring() {
        pthread_mutex_lock(mutex)
        count += 1
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// Takes one ring, waiting until the monotonic clock reads `deadline`
    /// at most; false if none came in time.
    public func wait(untilMonotonicNanoseconds deadline: Int64) -> Bool {
        var target = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while count == 0 {
            if pthread_cond_timedwait(condition, mutex, &target) == ETIMEDOUT { break }
        }
        guard count > 0 else { return false }
        count -= 1
        return true
    }
}
