import Glibc

/// Facts about this process, its limits, its standard streams and its exit.
/// Files are in Files.swift, the machine in Machine.swift.
public enum System {
    public static var processID: Int32 { getpid() }

    /// CPU time this process has used, user and system, in seconds (getrusage(2)).
    public static func processCPUSeconds() -> (user: Double, system: Double) {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return (seconds(usage.ru_utime), seconds(usage.ru_stime))
    }

    /// The path of the running executable (readlink(2) of /proc/self/exe).
    public static var executablePath: String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard count > 0 else { return nil }
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Whether a process `pid` runs on this machine (kill(2) with signal 0:
    /// EPERM means it runs as another user).
    public static func processExists(_ pid: Int32) -> Bool {
        pid > 0 && (Glibc.kill(pid, 0) == 0 || Errno.current == Errno(rawValue: EPERM))
    }

    /// This machine's host name (gethostname(2)); "localhost" if it has none.
    public static var hostName: String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return name.isEmpty ? "localhost" : name
    }

    /// The environment variable `name`, or nil when it is not set (getenv(3)).
    public static func environmentVariable(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// RLIMIT_NOFILE: (soft, hard).
    public static func openFileLimit() -> (soft: Int, hard: Int) {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        return (clamp(limit.rlim_cur), clamp(limit.rlim_max))
    }

    /// Sets the soft RLIMIT_NOFILE (it cannot pass the hard limit).
    public static func setOpenFileLimit(soft: Int) throws(SystemError) {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = rlim_t(soft)
        _ = try syscallNoWait("setrlimit RLIMIT_NOFILE") { setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) }
    }

    private static func clamp(_ value: rlim_t) -> Int {
        value > rlim_t(Int.max) ? Int.max : Int(value)
    }

    /// Writes `text` to standard error in one write(2) where it fits, so lines
    /// from different threads do not interleave.
    public static func writeToStandardError(_ text: String) {
        write(text, to: STDERR_FILENO)
    }

    /// Writes `text` to standard output.
    public static func writeToStandardOutput(_ text: String) {
        write(text, to: STDOUT_FILENO)
    }

    private static func write(_ text: String, to fd: Int32) {
        var text = text
        text.withUTF8 { bytes in
            // Best effort: on any failure, a would-block included, the rest
            // is dropped, since the text has nowhere else to go.
            try? writeUntilDone(
                UnsafeRawBufferPointer(bytes),
                writeSome: { rest throws(SystemError) in
                    try syscall("write", { Glibc.write(fd, rest.baseAddress, rest.count) })
                },
                whenBlocked: { () throws(SystemError) in throw SystemError("write", .wouldBlock) })
        }
    }

    /// exit(3) with flushing.
    public static func exit(_ status: Int32) -> Never {
        Glibc.exit(status)
    }
}
