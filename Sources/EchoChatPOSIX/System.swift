import Glibc

/// Process-wide facts and small file operations.
public enum System {
    public static var processID: Int32 { getpid() }

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

    /// The whole file at `path`.
    public static func readFile(_ path: String) throws(SystemError) -> [UInt8] {
        let fd = try syscallNoWait("open \(path)") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { _ = Glibc.close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = try syscallNoWait("read \(path)") {
                chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            }
            if count == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<count])
        }
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
            var offset = 0
            while offset < bytes.count {
                let written = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if Errno.current == .interrupted { continue }
                    return
                }
                offset += written
            }
        }
    }

    /// exit(3) with flushing.
    public static func exit(_ status: Int32) -> Never {
        Glibc.exit(status)
    }
}

/// One descriptor held in reserve (on /dev/null) for the moment accept(2)
/// fails with EMFILE: releasing it lets the server accept the waiting client,
/// tell it the server is full and close it, instead of leaving it in the
/// backlog while a level-triggered poller spins on the listener (the trick
/// libev and nginx describe).
public struct ReserveDescriptor: ~Copyable {
    private var descriptor: Int32

    public init() {
        descriptor = open("/dev/null", O_RDONLY | O_CLOEXEC)
    }

    public var isHeld: Bool { descriptor >= 0 }

    /// Closes the reserve so one descriptor is free.
    public mutating func release() {
        if descriptor >= 0 { _ = Glibc.close(descriptor) }
        descriptor = -1
    }

    /// Takes a descriptor back into reserve; false if none is free yet.
    @discardableResult
    public mutating func reacquire() -> Bool {
        if descriptor < 0 { descriptor = open("/dev/null", O_RDONLY | O_CLOEXEC) }
        return descriptor >= 0
    }

    deinit { if descriptor >= 0 { _ = Glibc.close(descriptor) } }
}
