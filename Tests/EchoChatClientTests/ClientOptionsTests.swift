import EchoChatClient
import EchoChatOptions
import Testing

@Suite("echochat options")
struct ClientOptionsTests {
    @Test func defaults() throws {
        let expected = ClientConfiguration()
        #expect(try ClientOptions.parse([]) == .run(expected))
        #expect(expected.host == "127.0.0.1")
        #expect(expected.port == 7007)
        #expect(expected.nick == nil && expected.room == nil && expected.colorAllowed)
    }

    @Test func everyFlagInBothSpellings() throws {
        var expected = ClientConfiguration()
        expected.host = "::1"
        expected.port = 7100
        expected.nick = "alice"
        expected.room = "#dev"
        expected.colorAllowed = false
        #expect(
            try ClientOptions.parse(["--host", "::1", "--port", "7100", "--nick", "alice", "--room", "#dev", "--no-color"])
                == .run(expected))
        #expect(
            try ClientOptions.parse(["--no-color", "--host=::1", "--port=7_100", "--nick=alice", "--room=#dev"])
                == .run(expected))
    }

    @Test func helpAndVersionWinWherever() throws {
        #expect(try ClientOptions.parse(["-h"]) == .help)
        #expect(try ClientOptions.parse(["--port", "1", "--help"]) == .help)
        #expect(try ClientOptions.parse(["--version", "--bogus"]) == .version)
        #expect(ClientOptions.helpText.hasPrefix("OVERVIEW: "))
        #expect(ClientOptions.helpText.contains("USAGE: \(ClientOptions.usageLine)"))
        #expect(ClientOptions.helpText.contains("--port <port>         Server TCP port (default: 7007)"))
        #expect(ClientOptions.helpText.contains("KEYS (on a terminal):\n  Enter "))
        #expect(ClientOptions.helpText.contains("Numbers may group digits with '_'"))
    }

    @Test(arguments: [
        (["--bogus"], "unknown option '--bogus'"),
        (["-x"], "unknown option '-x'"),
        (["hostname"], "unexpected argument 'hostname'"),
        (["-"], "unexpected argument '-'"),
        (["--", "--port"], "unexpected argument '--port'"),
        (["--port", "7__000"], "invalid value '7__000' for --port: expected an integer from 1 to 65535"),
        (["--port"], "missing value for '--port'"),
        (["--port", "0"], "invalid value '0' for --port: expected an integer from 1 to 65535"),
        (["--port=65536"], "invalid value '65536' for --port: expected an integer from 1 to 65535"),
        (["--port", "http"], "invalid value 'http' for --port: expected an integer from 1 to 65535"),
        (["--host", ""], "invalid value '' for --host: expected an address or host name"),
        (["--nick", "a b"], "invalid value 'a b' for --nick: expected 1 to 32 of A-Z a-z 0-9 _ -"),
        (["--nick", "alice\n/quit"], "invalid value 'alice\n/quit' for --nick: expected 1 to 32 of A-Z a-z 0-9 _ -"),
        (["--nick", String(repeating: "a", count: 33)],
         "invalid value '\(String(repeating: "a", count: 33))' for --nick: expected 1 to 32 of A-Z a-z 0-9 _ -"),
        (["--room", "#"], "invalid value '#' for --room: expected 1 to 32 of A-Z a-z 0-9 _ -, with or without a leading #"),
        (["--no-color=yes"], "'--no-color' takes no value"),
    ])
    func badUsage(arguments: [String], message: String) {
        #expect(throws: UsageError(message)) { try ClientOptions.parse(arguments) }
    }

    @Test func errorTextHasTheUsageHint() {
        #expect(
            ClientOptions.errorText(UsageError("unknown option '--bogus'")) == """
                Error: unknown option '--bogus'
                Usage: echochat [--host <host>] [--port <port>] [--nick <name>] [--room <room>] [--no-color] [<options>]
                  See 'echochat --help' for more information.

                """)
    }

    @Test func namesAtTheLimits() throws {
        let longest = String(repeating: "x", count: 32)
        guard case .run(let config) = try ClientOptions.parse(["--nick", "a_-Z9", "--room", longest]) else {
            Issue.record("not a run command")
            return
        }
        #expect(config.nick == "a_-Z9")
        #expect(config.room == longest)
    }
}
