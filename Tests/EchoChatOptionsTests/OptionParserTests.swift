@testable import EchoChatOptions
import Testing

/// The shared parser on a small program of its own: the syntax every
/// EchoChat program inherits, help generated from the table, and layered
/// settings (defaults < file < environment < flags) with their sources.
@Suite("Option parser")
struct OptionParserTests {
    struct Settings: Equatable, Sendable {
        var port = 7007
        var name = "anon"
        var verbose = false
        var rate = 1.0
    }

    static let options: [Option<Settings>] = [
        Option("port", short: "-p", placeholder: "port", help: "TCP port", default: "7007", isSetting: true,
               current: { String($0.port) }) { s, v, n throws(UsageError) in s.port = try Value.integer(v, n, in: 1...65535) },
        Option("name", placeholder: "name", help: "A name", default: "anon", isSetting: true, current: { $0.name }) {
            s, v, n throws(UsageError) in s.name = try Value.host(v, n)
        },
        Option("verbose", placeholder: nil, help: "Say more", inUsage: false, isSetting: true,
               current: { $0.verbose ? "yes" : "no" }) { s, v, n throws(UsageError) in s.verbose = try Value.boolean(v, n) },
        Option("rate", placeholder: "n/s", help: "Messages per second", inUsage: false) { s, v, n throws(UsageError) in
            s.rate = try Value.positive(v, n, maximum: 1e6)
        },
    ]
    static let parser = OptionParser(
        command: "demo", overview: "A demonstration.", options: options, sections: [("NOTES", "  A note.")])

    func parse(_ arguments: [String]) throws(UsageError) -> Settings {
        var settings = Settings()
        _ = try Self.parser.parse(arguments, into: &settings)
        return settings
    }

    func error(_ arguments: [String]) -> String? {
        do {
            _ = try parse(arguments)
            return nil
        } catch {
            return error.message
        }
    }

    @Test func helpIsGeneratedFromTheTable() {
        #expect(Self.parser.helpText == """
            OVERVIEW: A demonstration.

            USAGE: demo [--port <port>] [--name <name>] [<options>]

            OPTIONS:
              -p, --port <port>  TCP port (default: 7007)
              --name <name>      A name (default: anon)
              --verbose          Say more
              --rate <n/s>       Messages per second
              --version          Show the version.
              -h, --help         Show help information.

              Numbers may group digits with '_': 10_000 is 10000.

            NOTES:
              A note.

            """)
        #expect(Self.parser.versionText == "demo \(Release.version)\n")
    }

    @Test func errorTextIsErrorThenUsageThenHint() {
        #expect(Self.parser.errorText(UsageError("unknown option '--x'")) == """
            Error: unknown option '--x'
            Usage: demo [--port <port>] [--name <name>] [<options>]
              See 'demo --help' for more information.

            """)
        #expect(usageExitStatus == 64)
    }

    @Test func bothValueFormsAndShortForm() throws {
        #expect(try parse(["--port", "8000"]).port == 8000)
        #expect(try parse(["--port=8000"]).port == 8000)
        #expect(try parse(["-p", "8000"]).port == 8000)
        #expect(error(["--name="]) == "invalid value '' for --name: expected an address or host name")
    }

    @Test func laterOccurrenceWinsAndSwitchesTakeNoValue() throws {
        #expect(try parse(["--port", "1", "--port", "2"]).port == 2)
        #expect(try parse(["--verbose"]).verbose)
        #expect(error(["--verbose=yes"]) == "'--verbose' takes no value")
    }

    @Test func theWordAfterAnOptionIsItsValueWhateverItLooksLike() throws {
        #expect(try parse(["--name", "-"]).name == "-")
        #expect(error(["--port", "--help"]) == "invalid value '--help' for --port: expected an integer from 1 to 65535")
    }

    @Test func helpAndVersionWinWhereTheyStand() throws {
        var settings = Settings()
        #expect(try Self.parser.parse(["--port", "1", "--help"], into: &settings) == .help)
        #expect(try Self.parser.parse(["-h"], into: &settings) == .help)
        #expect(try Self.parser.parse(["--version", "--bogus"], into: &settings) == .version)
        #expect(try Self.parser.parse(["--port", "9", "--verbose"], into: &settings) == .parsed(given: ["port", "verbose"]))
    }

    @Test(arguments: [
        (["--bogus"], "unknown option '--bogus'"),
        (["--bogus=1"], "unknown option '--bogus'"),
        (["-x"], "unknown option '-x'"),
        (["-"], "unexpected argument '-'"),
        (["word"], "unexpected argument 'word'"),
        (["--", "--port"], "unexpected argument '--port'"),
        (["--", "-"], "unexpected argument '-'"),
        (["--port"], "missing value for '--port'"),
        (["-p"], "missing value for '--port'"),
    ])
    func badUsage(arguments: [String], message: String) {
        #expect(error(arguments) == message)
    }

    @Test func aTrailingDoubleDashIsAllowed() throws {
        #expect(try parse(["--port", "5", "--"]).port == 5)
    }

    @Test func integersMayGroupDigitsWithUnderscores() throws {
        #expect(try Value.integer("10_000", "--n", in: 0...100_000) == 10_000)
        #expect(try Value.integer("1_2_3", "--n", in: 0...1000) == 123)
        #expect(try Value.size("1_024K", "--n", minimum: 1) == 1024 * 1024)
        #expect(try Value.positive("2_500.5", "--n", maximum: 1e6) == 2500.5)
        #expect(try Value.seconds("1_0", "--n") == 10)
        for bad in ["_1", "1_", "1__0", "1_k", "0x10", "", " 1", "1.5"] {
            #expect(throws: UsageError.self, "\(bad)") { try Value.integer(bad, "--n", in: 0...100_000) }
        }
        #expect(throws: UsageError("invalid value '70_000' for --port: expected an integer from 1 to 65535")) {
            try Value.integer("70_000", "--port", in: 1...65535)
        }
    }

    @Test func otherValueKinds() throws {
        #expect(try Value.boolean("Yes", "x") && !(try Value.boolean("off", "x")))
        #expect(throws: UsageError("invalid value 'maybe' for x: expected yes or no")) { try Value.boolean("maybe", "x") }
        #expect(try Value.size("2M", "x", minimum: 1) == 2 << 20)
        #expect(throws: UsageError.self) { try Value.size("1K", "x", minimum: 4096) }
        #expect(throws: UsageError.self) { try Value.seconds("0", "x", positive: true) }
        #expect(throws: UsageError.self) { try Value.seconds("inf", "x") }
        #expect(throws: UsageError("invalid value 'a b' for --host: expected an address or host name")) {
            try Value.host("a b", "--host")
        }
        #expect(throws: UsageError.self) { try Value.path("", "x") }
    }

    // MARK: - Layers

    @Test func environmentNames() {
        #expect(OptionParser<Settings>.environmentName(prefix: "ECHOCHAT_", key: "max-clients") == "ECHOCHAT_MAX_CLIENTS")
        #expect(OptionParser<Settings>.environmentName(prefix: "ECHOCHAT_", key: "port") == "ECHOCHAT_PORT")
    }

    /// All four layers set: each later one wins for what it sets, and the
    /// sources say which layer that was.
    @Test func defaultsThenFileThenEnvironmentThenFlags() throws {
        var layers = LayeredSettings(Settings())
        try Self.parser.applyConfigFile(
            "# comment\nport = 8000\n\nname = file  # trailing\nverbose = yes\n", path: "demo.conf", to: &layers)
        let environment = ["DEMO_PORT": "9000", "DEMO_NAME": "env", "DEMO_UNRELATED": "x"]
        try Self.parser.applyEnvironment(prefix: "DEMO_", lookup: { environment[$0] }, to: &layers)
        guard case .options(let found) = try Self.parser.scan(["--port=9500", "--rate", "3"]) else {
            Issue.record("no options")
            return
        }
        try Self.parser.applyFlags(found, to: &layers)
        #expect(layers.settings.port == 9500)  // flag over env over file
        #expect(layers.settings.name == "env")  // env over file
        #expect(layers.settings.verbose)  // file over default
        #expect(layers.settings.rate == 1)  // not a setting: only applied by parse(into:)
        #expect(layers.source(of: "port") == .flag("--port"))
        #expect(layers.source(of: "name") == .environment(variable: "DEMO_NAME"))
        #expect(layers.source(of: "verbose") == .file(path: "demo.conf", line: 5))
        #expect(layers.source(of: "rate") == .defaultValue)
        #expect(Self.parser.render(layers) == """
            port = 9500    # flag --port
            name = env     # env DEMO_NAME
            verbose = yes  # file demo.conf:5

            """)
    }

    @Test func aBadEnvironmentValueNamesTheVariable() {
        var layers = LayeredSettings(Settings())
        #expect(throws: UsageError("invalid value '80a' for DEMO_PORT: expected an integer from 1 to 65535")) {
            try Self.parser.applyEnvironment(prefix: "DEMO_", lookup: { $0 == "DEMO_PORT" ? "80a" : nil }, to: &layers)
        }
        #expect(throws: UsageError("invalid value '' for DEMO_PORT: expected an integer from 1 to 65535")) {
            try Self.parser.applyEnvironment(prefix: "DEMO_", lookup: { $0 == "DEMO_PORT" ? "" : nil }, to: &layers)
        }
    }

    @Test(arguments: [
        ("bogus = 1\n", "f.conf:1: unknown key 'bogus'"),
        ("\nport\n", "f.conf:2: expected 'key = value', got 'port'"),
        ("port =\n", "f.conf:1: missing value for 'port'"),
        ("port = 0\n", "f.conf:1: invalid value '0' for 'port': expected an integer from 1 to 65535"),
        ("rate = 3\n", "f.conf:1: unknown key 'rate'"),  // not a setting
    ])
    func configFileErrorsNameFileAndLine(text: String, message: String) {
        var layers = LayeredSettings(Settings())
        #expect(throws: UsageError(message)) { try Self.parser.applyConfigFile(text, path: "f.conf", to: &layers) }
    }
}
