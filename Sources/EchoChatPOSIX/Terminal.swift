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
