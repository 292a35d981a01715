import Glibc

/// A terminal's settings as they were found, to be put back exactly.
/// termios(3) is plain data (flags and a fixed array), so copies are safe to
/// hand across threads.
public struct TerminalSettings: @unchecked Sendable {
    fileprivate let value: termios
}

/// The few terminal operations the interactive client needs: is this a
/// terminal, how wide is it, raw mode on and off, Ctrl-Z.
public enum Terminal {
    /// isatty(3).
    public static func isTerminal(_ descriptor: Int32) -> Bool {
        isatty(descriptor) == 1
    }

    /// The terminal's width in columns (ioctl(2) TIOCGWINSZ), or nil when it
    /// is not a terminal or does not know (a pty nobody sized reports 0).
    public static func columns(of descriptor: Int32) -> Int? {
        var size = winsize()
        guard ioctl(descriptor, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return nil }
        return Int(size.ws_col)
    }

    /// Switches the terminal to raw mode (cfmakeraw(3)): every byte is
    /// readable as soon as it is typed, nothing is echoed, Ctrl-C, Ctrl-Z and
    /// Ctrl-\ arrive as bytes instead of signals, Enter arrives as CR, and
    /// output is not post-processed (LF is not turned into CR LF, so the
    /// caller writes CR LF itself). Returns the previous settings for
    /// `restore`. TCSADRAIN: output already written is drawn in the old mode,
    /// and keys typed ahead are kept. tcgetattr(3), tcsetattr(3).
    public static func enterRawMode(_ descriptor: Int32) throws(SystemError) -> TerminalSettings {
        var original = termios()
        _ = try syscallNoWait("tcgetattr") { tcgetattr(descriptor, &original) }
        var raw = original
        cfmakeraw(&raw)
        _ = try syscallNoWait("tcsetattr") { tcsetattr(descriptor, TCSADRAIN, &raw) }
        return TerminalSettings(value: original)
    }

    /// Puts `settings` back (TCSADRAIN, so what was written is drawn first).
    /// Best effort: a terminal that hung up cannot be restored, and there is
    /// nobody left to tell. tcsetattr(3).
    public static func restore(_ settings: TerminalSettings, on descriptor: Int32) {
        var value = settings.value
        while tcsetattr(descriptor, TCSADRAIN, &value) != 0 && Errno.current == .interrupted {}
    }

    /// Whether the terminal is in canonical mode with echo: how a shell leaves
    /// it, and how the client must leave it (for tests). tcgetattr(3).
    public static func isCanonicalWithEcho(_ descriptor: Int32) throws(SystemError) -> Bool {
        var settings = termios()
        _ = try syscallNoWait("tcgetattr") { tcgetattr(descriptor, &settings) }
        let wanted = tcflag_t(ICANON) | tcflag_t(ECHO)
        return settings.c_lflag & wanted == wanted
    }

    /// Stops this process as Ctrl-Z would in a cooked terminal (SIGTSTP, whose
    /// default action stops it); returns once it is continued (`fg`, SIGCONT).
    /// The caller restores the terminal before and sets raw mode again after.
    public static func suspendProcess() {
        _ = kill(getpid(), SIGTSTP)
    }
}

/// A file descriptor the process did not open itself and must not close or
/// reconfigure: standard input, output and error. Never switched to
/// O_NONBLOCK, because that flag lives in the open file description shared
/// with the parent shell and other processes; readiness comes from `Poll`.
public struct FileDescriptor: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int32

    public init(rawValue: Int32) { self.rawValue = rawValue }

    public static let standardInput = FileDescriptor(rawValue: STDIN_FILENO)
    public static let standardOutput = FileDescriptor(rawValue: STDOUT_FILENO)
    public static let standardError = FileDescriptor(rawValue: STDERR_FILENO)

    public var description: String { "fd \(rawValue)" }

    /// read(2) into `buffer`. A terminal that hung up reports EIO, which is
    /// an error here; callers treat it like end of file.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> ReadResult {
        let fd = rawValue
        switch try syscall("read \(self)", { Glibc.read(fd, buffer.baseAddress, buffer.count) }) {
        case .done(0): return .endOfFile
        case .done(let count): return .bytes(count)
        case .wouldBlock: return .wouldBlock
        }
    }

    /// Writes all of `bytes` with write(2). If someone else made the
    /// descriptor non-blocking, waits for it with poll(2) rather than spin
    /// or drop output.
    public func writeAll(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        let fd = rawValue
        var offset = 0
        while offset < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            switch try syscall("write \(self)", { Glibc.write(fd, rest.baseAddress, rest.count) }) {
            case .done(let count):
                offset += count
            case .wouldBlock:
                var entry = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                _ = try syscallNoWait("poll") { poll(&entry, 1, -1) }
            }
        }
    }

    public func writeAll(_ bytes: [UInt8]) throws(SystemError) {
        let failure: SystemError? = bytes.withUnsafeBytes { raw in
            do throws(SystemError) { try writeAll(raw) } catch { return error }
            return nil
        }
        if let failure { throw failure }
    }
}

extension Poll {
    /// What to wait for on one descriptor.
    public struct Interest: Sendable, Equatable {
        public var descriptor: Int32
        public var readable: Bool
        public var writable: Bool

        public init(_ descriptor: Int32, readable: Bool = true, writable: Bool = false) {
            self.descriptor = descriptor
            self.readable = readable
            self.writable = writable
        }
    }

    /// What poll(2) reported for one descriptor.
    public struct Readiness: Sendable, Equatable {
        public var readable = false
        public var writable = false
        /// POLLERR, POLLHUP or POLLNVAL: the next read or write reports how
        /// (end of file, an error), so callers read or write to find out.
        public var failed = false

        public init(readable: Bool = false, writable: Bool = false, failed: Bool = false) {
            self.readable = readable
            self.writable = writable
            self.failed = failed
        }
    }

    /// poll(2) for reading and/or writing on several descriptors; one
    /// `Readiness` per interest, in order. An empty result means the timeout
    /// passed or a signal interrupted the wait (`timeoutMilliseconds` -1
    /// waits without limit).
    public static func wait(_ interests: [Interest], timeoutMilliseconds: Int32) throws(SystemError) -> [Readiness] {
        var entries = interests.map { interest in
            pollfd(
                fd: interest.descriptor,
                events: Int16((interest.readable ? POLLIN : 0) | (interest.writable ? POLLOUT : 0)), revents: 0)
        }
        let status = Glibc.poll(&entries, nfds_t(entries.count), timeoutMilliseconds)
        if status < 0 {
            let errno = Errno.current
            if errno == .interrupted { return [] }
            throw SystemError("poll", errno)
        }
        if status == 0 { return [] }
        return entries.map { entry in
            let events = Int32(entry.revents)
            return Readiness(
                readable: events & Int32(POLLIN) != 0, writable: events & Int32(POLLOUT) != 0,
                failed: events & Int32(POLLERR | POLLHUP | POLLNVAL) != 0)
        }
    }
}

extension Signal {
    /// SIGWINCH: the terminal was resized.
    public static let windowChange = Signal(rawValue: SIGWINCH)
}

extension System {
    /// The environment variable `name`, or nil when it is not set (getenv(3)).
    public static func environmentVariable(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}
