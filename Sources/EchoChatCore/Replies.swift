/// Every line the server sends, spelled exactly as docs/PROTOCOL.md has it.
/// Each ends with LF; markers: `<nick> `, `[pm from nick] `, `* `, `! `.
public enum Replies {
    public static let serverFull = bytes("! server full, try again later")
    public static let tooManyFromAddress = bytes("! too many connections from your address")
    public static let shuttingDown = bytes("* server shutting down")
    public static let idleTimeout = bytes("* idle timeout")
    public static let lineTimeout = bytes("* line timeout")
    public static let bye = bytes("* bye")
    // The cluster (§6).
    public static let clusterLinkLost = bytes("* cluster link lost: only people on this server can hear you")
    public static let clusterLinkRestored = bytes("* cluster link restored")
    public static func slowDown(linesPerSecond: Int) -> [UInt8] {
        bytes("* slow down: at most \(linesPerSecond) lines per second")
    }

    public static func welcome(nick: String, room: String, count: Int) -> [UInt8] {
        bytes("* welcome \(nick), you are in \(room) (\(count) here); /help lists commands")
    }
    public static func joined(nick: String, room: String) -> [UInt8] { bytes("* \(nick) joined \(room)") }
    public static func left(nick: String, room: String, reason: DisconnectReason) -> [UInt8] {
        bytes("* \(nick) left \(room)\(reason.suffix)")
    }
    public static func lineTooLong(max: Int) -> [UInt8] { bytes("! line too long (max \(max) bytes)") }
    public static func youAreNow(_ nick: String) -> [UInt8] { bytes("* you are now \(nick)") }
    public static func youAreNowTakenElsewhere(_ nick: String) -> [UInt8] { bytes("* you are now \(nick) (nick taken elsewhere)") }
    public static func renamed(from old: String, to new: String) -> [UInt8] { bytes("* \(old) is now \(new)") }
    public static func nickTaken(_ nick: String) -> [UInt8] { bytes("! nick taken: \(nick)") }
    public static func invalidNick(_ nick: String) -> [UInt8] { bytes("! invalid nick: \(nick)") }
    public static func invalidRoom(_ room: String) -> [UInt8] { bytes("! invalid room: \(room)") }
    public static func youJoined(_ room: String, count: Int) -> [UInt8] { bytes("* you joined \(room) (\(count) here)") }
    public static func alreadyIn(_ room: String) -> [UInt8] { bytes("* you are already in \(room)") }
    public static func who(room: String, nicks: [String]) -> [UInt8] {
        bytes("* \(room): \(nicks.joined(separator: ", ")) (\(nicks.count))")
    }
    public static func rooms(_ list: [(name: String, count: Int)]) -> [UInt8] {
        bytes("* rooms: " + list.map { "\($0.name) (\($0.count))" }.joined(separator: ", "))
    }
    public static func sentTo(_ nick: String) -> [UInt8] { bytes("* sent to \(nick)") }
    public static func noSuchNick(_ nick: String) -> [UInt8] { bytes("! no such nick: \(nick)") }
    public static func unknownCommand(_ word: String) -> [UInt8] { bytes("! unknown command: \(word) (try /help)") }
    public static func stats(_ keyValues: String) -> [UInt8] { bytes("* stats: \(keyValues)") }

    // Files (§5).
    public static let sharingOff = bytes("! file sharing is off on this server")
    public static let usageUpload = bytes("! usage: /upload NAME SIZE")
    public static let usageDownload = bytes("! usage: /download NAME")
    public static let storageFull = bytes("! server storage full")
    public static func invalidFileName(_ name: String) -> [UInt8] { bytes("! invalid file name: \(name)") }
    public static func fileTooLarge(max: Int) -> [UInt8] { bytes("! file too large (max \(max) bytes)") }
    public static func uploadFailed(_ reason: String) -> [UInt8] { bytes("! upload failed: \(reason)") }
    public static func noSuchFile(_ name: String) -> [UInt8] { bytes("! no such file: \(name)") }
    public static func stored(_ name: String, size: Int, sha256: String) -> [UInt8] {
        bytes("* stored \(name) (\(size) bytes, sha256 \(sha256))")
    }
    public static func shared(nick: String, name: String, size: Int) -> [UInt8] {
        bytes("* \(nick) shared \(name) (\(size) bytes)")
    }
    public static func files(_ list: [FileCatalog.Entry]) -> [UInt8] {
        bytes("* files: " + (list.isEmpty ? "none" : list.map { "\($0.name) (\($0.size))" }.joined(separator: ", ")))
    }
    /// The line before a download's raw bytes.
    public static func sending(_ name: String, size: Int, sha256: String) -> [UInt8] {
        bytes("* sending \(name) \(size) sha256 \(sha256)")
    }

    public static let usageNick = bytes("! usage: /nick NAME")
    public static let usageJoin = bytes("! usage: /join ROOM")
    public static let usageMsg = bytes("! usage: /msg NICK text")

    /// `/help`: one notice per command, ending with `* end of help`.
    public static let help: [[UInt8]] = [
        "* commands:",
        "*   /nick NAME        change your nick (1-32 of A-Z a-z 0-9 _ -)",
        "*   /join ROOM        join a room, creating it if needed",
        "*   /who              list who is in your room",
        "*   /rooms            list rooms and how many are in each",
        "*   /msg NICK text    send a private message",
        "*   /upload NAME SIZE share a file: SIZE raw bytes follow this line",
        "*   /files            list shared files",
        "*   /download NAME    receive a shared file: a line, then its raw bytes",
        "*   /stats            show server statistics",
        "*   /help             show this list",
        "*   /quit [reason]    leave",
        "*   //text            send a message that starts with /",
        "* end of help",
    ].map(bytes)

    /// A room message: `<nick> text`.
    public static func message(from nick: String, text: [UInt8]) -> [UInt8] {
        var line: [UInt8] = []
        line.reserveCapacity(nick.utf8.count + text.count + 4)
        line.append(0x3C)  // <
        line.append(contentsOf: nick.utf8)
        line.append(contentsOf: [0x3E, 0x20])  // "> "
        line.append(contentsOf: text)
        line.append(0x0A)
        return line
    }

    /// A private message: `[pm from nick] text`.
    public static func privateMessage(from nick: String, text: ArraySlice<UInt8>) -> [UInt8] {
        var line = Array("[pm from \(nick)] ".utf8)
        line.append(contentsOf: text)
        line.append(0x0A)
        return line
    }

    static func bytes(_ text: String) -> [UInt8] {
        var line = Array(text.utf8)
        line.append(0x0A)
        return line
    }
}
