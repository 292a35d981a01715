/// The release all three programs report with `--version`.
public enum Release {
    public static let version = "0.1.0"
}

/// A bad flag, value, config-file line or environment variable. The message
/// is the text after `Error: `; it names the setting as the user spelled it
/// (`--port`, `'port'` in a file, `ECHOCHAT_PORT`).
public struct UsageError: Error, Equatable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One option of a program: how `--help` shows it and how a value is applied
/// to `Settings`. The same value drives parsing and help, so they cannot drift.
public struct Option<Settings>: Sendable {
    /// The long name without `--` (`max-line`); also the config-file key.
    public let name: String
    /// A short spelling (`-c`), if any.
    public let short: String?
    /// Shown as `<placeholder>`; nil for a switch, which takes no value on the
    /// command line (in a config file or the environment it takes yes/no).
    public let placeholder: String?
    public let help: String
    /// Shown as `(default: …)`; nil shows none.
    public let defaultText: String?
    /// Named in the generated usage line; the rest are summed up as `[<options>]`.
    public let inUsage: Bool
    /// Shown without brackets in the usage line. The program checks that it
    /// was given, so that its error can say where to get what it names.
    public let isRequired: Bool
    /// A setting that a config file and the environment may also give.
    public let isSetting: Bool
    /// The setting's value in `Settings`, as a config file would spell it
    /// (for `--check-config`); nil for options that are not settings.
    public let current: (@Sendable (Settings) -> String)?
    /// Applies a value; the last argument names the source in errors.
    public let apply: @Sendable (inout Settings, _ value: String, _ name: String) throws(UsageError) -> Void

    public init(
        _ name: String, short: String? = nil, placeholder: String?, help: String, default defaultText: String? = nil,
        inUsage: Bool = true, isRequired: Bool = false, isSetting: Bool = false, current: (@Sendable (Settings) -> String)? = nil,
        apply: @escaping @Sendable (inout Settings, _ value: String, _ name: String) throws(UsageError) -> Void
    ) {
        self.name = name
        self.short = short
        self.placeholder = placeholder
        self.help = help
        self.defaultText = defaultText
        self.inUsage = inUsage
        self.isRequired = isRequired
        self.isSetting = isSetting
        self.current = current
        self.apply = apply
    }

    public var isSwitch: Bool { placeholder == nil }

    /// `-c, --connections <n>`, as the help's left column shows it.
    var helpLabel: String {
        var label = "--\(name)"
        if let short { label = "\(short), \(label)" }
        if let placeholder { label += " <\(placeholder)>" }
        return label
    }

    /// `[--port <port>]`, as the usage line shows it.
    var usageLabel: String {
        let label = "--\(name)" + (placeholder.map { " <\($0)>" } ?? "")
        return isRequired ? label : "[\(label)]"
    }
}

/// An option found on the command line, with its value (`yes` for a switch)
/// and the spelling the user typed (`--port`, `-c`), for error messages.
public struct Occurrence<Settings>: Sendable {
    public let option: Option<Settings>
    public let value: String
    public let spelling: String
}
