/// The seed corpus, written as scripts so each says what it covers. The
/// files in Tests/Fuzz/corpus are these, encoded (`echochat-fuzz
/// --write-seeds`); a test keeps the two the same.
public enum FuzzSeeds {
    public typealias Config = FuzzScript.Config
    public typealias Operation = FuzzScript.Operation

    public static var all: [(name: String, bytes: [UInt8])] {
        seeds.map { ($0.name, $0.script.encoded) }
    }

    static func send(_ connection: Int, _ text: String) -> Operation { .send(connection: connection, bytes: Array(text.utf8)) }
    static func send(_ connection: Int, _ bytes: [UInt8]) -> Operation { .send(connection: connection, bytes: bytes) }

    static let seeds: [(name: String, script: FuzzScript)] = [
        ("commands", FuzzScript(config: Config(maxLine: 4096), operations: [
            .connect, .connect, .connect,
            send(0, "/nick alice\n/join #dev\n/who\n/rooms\n/help\n/stats\n"),
            send(1, "/nick Alice\n/nick bob\n/join DEV\n/msg alice   hi  there\n/msg nobody x\n/msg\n"),
            send(2, "//shrug\n/\n/bogus arg\n/nick\n/join a b\n/nick bad!name\n/join #\n/JOIN #Dev\n"),
            .audit(connection: 0), .audit(connection: 2),
            send(0, "hello everyone\n/quit see you\n"),
            send(1, "/quit\n"),
            .endOfInput(connection: 0),
        ])),
        // File sharing is off in the simulation: an `/upload`'s content is
        // consumed raw all the same (PROTOCOL.md §5), across reads.
        ("uploads", FuzzScript(config: Config(maxLine: 32, maxPiece: 3), operations: [
            .connect, .connect,
            send(0, "/upload a.txt 12\nhello\n/quit\n/who\n/upload b 0\n/files\n"),
            send(1, "/upload x\n/upload x 3\nab"),
            send(1, "c/download x\n/who\n/upload y 99"),
            send(1, "\n\u{0}\r\n/quit\n"),
            .audit(connection: 0), .endOfInput(connection: 1),
        ])),
        ("long-lines", FuzzScript(config: Config(maxLine: 32, maxPiece: 7), operations: [
            .connect, .connect,
            send(0, String(repeating: "a", count: 32) + "\n" + String(repeating: "b", count: 33) + "\nafter\n"),
            send(0, String(repeating: "c", count: 32) + "\r\n" + String(repeating: "d", count: 32) + "\r"),
            send(0, "\n" + String(repeating: "e", count: 100)),
            send(0, "tail\n/who\n"),
            send(1, String(repeating: "x", count: 5000)),
            .endOfInput(connection: 1),
        ])),
        ("invalid-utf8", FuzzScript(config: Config(maxLine: 4096), operations: [
            .connect, .connect,
            send(0, [0xFF, 0xFE, 0x41, 0xC0, 0xAF, 0xED, 0xA0, 0x80, 0xE2, 0x80, 0x0A]),
            send(0, [0xF4, 0x90, 0x80, 0x80, 0x20, 0xF0, 0x9F, 0x98, 0x80, 0x0A]),
            send(0, [0x2F, 0x6E, 0x69, 0x63, 0x6B, 0x20, 0xC3, 0xA9, 0x0A]),  // /nick é
            send(0, [0x2F, 0x6D, 0x73, 0x67, 0x20, 0x67, 0x75, 0x65, 0x73, 0x74, 0x32, 0x20, 0x80, 0x81, 0x0A]),
            .audit(connection: 1),
        ])),
        ("controls-and-bidi", FuzzScript(config: Config(maxLine: 4096, maxPiece: 1), operations: [
            .connect, .connect,
            send(0, "\u{1B}[31mred\u{1B}[0m\u{7}\u{0}\t\u{7F}\n"),
            send(0, [0xC2, 0x85, 0xC2, 0x9B, 0x41, 0x0A]),
            send(0, "abc\u{202E}fed\u{2066}x\u{2069}\u{061C}\u{200E}\u{200F}\n"),
            send(0, "line\u{2028}break\u{2029}para\n"),
            send(0, "/nick \u{202E}evil\n/msg guest2 \u{1B}]0;title\u{7}\n"),
        ])),
        ("cr-lf-splits", FuzzScript(config: Config(maxLine: 4, maxPiece: 1), operations: [
            .connect, .connect,
            send(0, "abcd\r"), send(0, "\n"), send(0, "abcd\r\r\n"), send(0, "ab\rc\n"), send(0, "\r\n\r\n\n"),
            send(0, "abcde"), send(0, "\r\nok\n"), send(0, "last"),
            .endOfInput(connection: 0),
        ])),
        ("rooms-and-nicks", FuzzScript(config: Config(maxLine: 4096, maxClients: 4), operations: [
            .connect, .connect, .connect, .connect, .connect,
            send(0, "/nick guest3\n/nick GUEST2\n/nick guest9\n"),
            send(1, "/join a\n/join A\n/join #b\n"),
            send(2, "/join b\n/rooms\n/who\n"),
            .audit(connection: 3),
            send(3, "/join a\n/join lobby\n"),
            .reset(connection: 1),
            .audit(connection: 0), .audit(connection: 2),
            .connect, send(4, "/rooms\n"),
        ])),
        ("slow-consumer", FuzzScript(config: Config(maxLine: 4096, maxOutput: 1024, socketBuffer: 100, maxPiece: 16), operations: [
            .connect, .connect,
            send(0, String(repeating: "/help\n", count: 4)),
            send(1, String(repeating: "spam spam spam\n", count: 30)),
            .read(connection: 0, bytes: 64),
            send(1, "/who\n"),
        ])),
        ("timeouts", FuzzScript(config: Config(maxLine: 4096, idleTimeoutSeconds: 9, lineTimeoutSeconds: 3, closeTimeoutSeconds: 2, linger: true, socketBuffer: 0), operations: [
            .connect, .connect, .connect,
            send(0, "unfinished"), .tick(milliseconds: 2000), send(0, " still\nnew"), .tick(milliseconds: 2000),
            send(1, "x\n"), .tick(milliseconds: 2000), .tick(milliseconds: 3000),
            .tick(milliseconds: 9000), .read(connection: 0, bytes: nil), .tick(milliseconds: 25_600),
        ])),
        ("quit-and-linger", FuzzScript(config: Config(maxLine: 4096, linger: true, socketBuffer: 16), operations: [
            .connect, .connect,
            send(0, "/quit bye now\nafter the quit\n"),
            send(0, "more while lingering\n"),
            .read(connection: 0, bytes: nil), .tick(milliseconds: 1000),
            .endOfInput(connection: 0),
            send(1, "/quit\n"), .tick(milliseconds: 3000),
        ])),
        ("write-failures", FuzzScript(config: Config(maxLine: 4096, maxPiece: 2), operations: [
            .connect, .connect, .connect,
            .breakWrites(connection: 1),
            send(0, "hello\n"), send(2, "/who\n"),
            .reset(connection: 0), .connect, send(1, "x\n"),
        ])),
        ("server-full", FuzzScript(config: Config(maxLine: 4096, maxClients: 2, linger: true), operations: [
            .connect, .connect, .connect, .connect,
            send(2, "/who\n"), .endOfInput(connection: 3),
            .reset(connection: 0), .connect, .audit(connection: 3),
        ])),
        ("shutdown", FuzzScript(config: Config(maxLine: 4096, socketBuffer: 0), operations: [
            .connect, .connect, send(0, "/join x\nhi\n"), send(1, "partial"), .shutdown,
        ])),
        ("tiny-max-output", FuzzScript(config: Config(maxLine: 1, maxOutput: 64), operations: [
            .connect, .connect, send(0, "a\nbb\n"), .audit(connection: 0),
        ])),
    ]
}
