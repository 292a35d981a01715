import EchoChatCore

// The pure half of file sharing on the client (docs/PROTOCOL.md §5): the
// server's replies, file names and their `-2` numbering, and the reader that
// turns the byte stream from the server into lines and download content.
// No I/O here, so all of it is tested in memory.

/// A server line that starts, ends or refuses a transfer.
public enum FileReply: Equatable, Sendable {
    /// `* stored NAME (SIZE bytes, sha256 HEX)`: an upload is complete.
    case stored(name: String, size: Int, sha256: String)
    /// `* sending NAME SIZE sha256 HEX`: SIZE raw bytes follow this line.
    case sending(name: String, size: Int, sha256: String)
    /// A `! ...` line that ends a transfer; the text is the whole line.
    case refused(String)

    /// The refusals of §5, by how they start.
    static let refusals = [
        "! no such file: ", "! file sharing is off on this server", "! invalid file name: ", "! file too large (",
        "! server storage full", "! upload failed: ", "! usage: /upload", "! usage: /download",
        // A chat server without file sharing at all.
        "! unknown command: /upload", "! unknown command: /download",
    ]

    /// Nil for any other line (welcome, joins, chat).
    public init?(_ line: String) {
        if line.hasPrefix("* stored ") {
            let words = line.dropFirst("* stored ".count).split(separator: " ", omittingEmptySubsequences: false)
            guard words.count == 5, words[1].hasPrefix("("), words[2] == "bytes,", words[3] == "sha256",
                words[4].hasSuffix(")"), let size = Self.size(words[1].dropFirst()),
                let hex = Self.hex(words[4].dropLast()), FileNames.isValid(String(words[0]))
            else { return nil }
            self = .stored(name: String(words[0]), size: size, sha256: hex)
        } else if line.hasPrefix("* sending ") {
            let words = line.dropFirst("* sending ".count).split(separator: " ", omittingEmptySubsequences: false)
            guard words.count == 4, words[2] == "sha256", let size = Self.size(words[1]), let hex = Self.hex(words[3]),
                FileNames.isValid(String(words[0]))
            else { return nil }
            self = .sending(name: String(words[0]), size: size, sha256: hex)
        } else if Self.refusals.contains(where: { line.hasPrefix($0) }) {
            self = .refused(line)
        } else {
            return nil
        }
    }

    /// 1-18 decimal digits (§5's SIZE).
    private static func size(_ text: Substring) -> Int? {
        guard (1...18).contains(text.utf8.count), text.utf8.allSatisfy({ (0x30...0x39).contains($0) }) else { return nil }
        return Int(text)
    }

    /// 64 lower-case hex digits.
    private static func hex(_ text: Substring) -> String? {
        guard text.utf8.count == 64,
            text.utf8.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) })
        else { return nil }
        return String(text)
    }
}

/// Names of shared files (§5): 1-100 bytes of `A-Z a-z 0-9 . _ -`, not
/// starting with `.`.
public enum FileNames {
    public static func isValid(_ name: String) -> Bool {
        (1...100).contains(name.utf8.count) && name.utf8.first != UInt8(ascii: ".")
            && name.utf8.allSatisfy { byte in
                (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || (0x30...0x39).contains(byte)
                    || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
            }
    }

    /// The `number`th choice for `name`, as the server numbers a taken name:
    /// 1 is `name` itself, then `name-2`, `name-3`, ..., the number before
    /// the last `.` (`notes.txt` -> `notes-2.txt`).
    public static func numbered(_ name: String, _ number: Int) -> String {
        guard number > 1 else { return name }
        guard let dot = name.lastIndex(of: "."), dot != name.startIndex else { return "\(name)-\(number)" }
        return "\(name[..<dot])-\(number)\(name[dot...])"
    }

    /// The first of `name`, `name-2`, ... that `isTaken` says is free.
    public static func firstFree(_ name: String, isTaken: (String) throws -> Bool) rethrows -> String {
        var number = 1
        while try isTaken(numbered(name, number)) { number += 1 }
        return numbered(name, number)
    }

    /// The last component of `path`: the name an upload gets without `--as`.
    public static func lastComponent(_ path: String) -> String {
        String(path.split(separator: "/").last ?? "")
    }

    public static let rule = "1 to 100 of A-Z a-z 0-9 . _ -, not starting with ."
}

/// The bytes from the server, split into lines and download content. After
/// a `* sending NAME SIZE sha256 HEX` line, when a download is expected, the
/// next SIZE bytes are content, however they are cut, and lines resume after
/// them. A line that never ends is handed over at `maxLine` bytes, so a
/// server cannot make the client hold unbounded data.
public struct ServerReader: Sendable {
    public enum Event {
        /// One line, without its LF.
        case line([UInt8])
        /// The `* sending` line just seen: content starts.
        case contentStart(name: String, size: Int, sha256: String)
        /// A piece of content, valid only during the call.
        case content(UnsafeRawBufferPointer)
        case contentEnd
    }

    public static let maxLine = 64 * 1024

    /// How many `/download` commands were sent and not answered yet: a
    /// `* sending` line switches to content only while this is positive.
    public var downloadsExpected = 0
    /// Content bytes still to come (0 in line mode).
    public private(set) var contentRemaining = 0
    public private(set) var inContent = false
    private var partial: [UInt8] = []

    public init() {}

    public mutating func feed(_ bytes: UnsafeRawBufferPointer, _ handle: (Event) throws -> Void) rethrows {
        var rest = bytes
        while !rest.isEmpty {
            if inContent {
                let take = min(contentRemaining, rest.count)
                try handle(.content(UnsafeRawBufferPointer(rebasing: rest[..<take])))
                rest = UnsafeRawBufferPointer(rebasing: rest[take...])
                contentRemaining -= take
                if contentRemaining == 0 {
                    inContent = false
                    try handle(.contentEnd)
                }
                continue
            }
            guard let newline = rest.firstIndex(of: 0x0A) else {
                partial.append(contentsOf: rest)
                if partial.count >= Self.maxLine {
                    let line = partial
                    partial = []
                    try handle(.line(line))
                }
                return
            }
            partial.append(contentsOf: rest[..<newline])
            rest = UnsafeRawBufferPointer(rebasing: rest[(newline + 1)...])
            let line = partial
            partial = []
            try lineEnded(line, handle)
        }
    }

    private mutating func lineEnded(_ line: [UInt8], _ handle: (Event) throws -> Void) rethrows {
        try handle(.line(line))
        guard downloadsExpected > 0 else { return }
        var text = String(decoding: line, as: UTF8.self)
        if text.hasSuffix("\r") { text.removeLast() }
        switch FileReply(text) {
        case .sending(let name, let size, let sha256):
            downloadsExpected -= 1
            try handle(.contentStart(name: name, size: size, sha256: sha256))
            if size == 0 {
                try handle(.contentEnd)
            } else {
                inContent = true
                contentRemaining = size
            }
        case .refused(let refusal)
        where refusal.hasPrefix("! no such file: ") || refusal.hasPrefix("! usage: /download")
            || refusal.hasPrefix("! file sharing is off") || refusal.hasPrefix("! unknown command: /download"):
            downloadsExpected -= 1
        default:
            break
        }
    }
}

/// Progress text: `upload a.txt: 42% (6.7 of 16.0 MiB)`.
public enum TransferProgress {
    public static func text(_ verb: String, _ name: String, done: Int, total: Int) -> String {
        let percent = total == 0 ? 100 : Int(Double(done) * 100 / Double(total))
        return "\(verb) \(name): \(percent)% (\(mebibytes(done)) of \(mebibytes(total)) MiB)"
    }

    /// Whole percent steps, so progress is drawn at most 100 times.
    public static func step(done: Int, total: Int) -> Int {
        total == 0 ? 100 : Int(Double(done) * 100 / Double(total))
    }

    static func mebibytes(_ bytes: Int) -> String {
        let tenths = (bytes * 10 + (1 << 19)) >> 20
        return "\(tenths / 10).\(tenths % 10)"
    }
}
