import EchoChatCore

/// The rules every run must keep, as pure functions that return what they
/// found wrong (empty: all kept). The simulation calls them; the tests also
/// call them on deliberately broken data, to show that each can fail.
public enum Invariants {
    // MARK: - Lines the server sends (PROTOCOL.md §3.1 step 3, §3.2)

    /// Characters §3.1 step 3 removes from every line, so no line the server
    /// sends may carry one (except its final LF): C0 but TAB, DEL, C1, the
    /// line and paragraph separators, the bidirectional formatting characters.
    public static func isForbidden(_ scalar: UInt32) -> Bool {
        switch scalar {
        case 0x09: false
        case 0x00...0x1F, 0x7F...0x9F: true
        case 0x2028, 0x2029, 0x061C, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: true
        default: false
        }
    }

    /// One line the server sent, without its LF: valid UTF-8, no forbidden
    /// character, one of the four markers.
    public static func lineProblems(_ line: ArraySlice<UInt8>) -> [String] {
        var problems: [String] = []
        let text = String(decoding: line, as: UTF8.self)
        if !text.utf8.elementsEqual(line) { problems.append("invalid UTF-8") }
        if let bad = text.unicodeScalars.first(where: { isForbidden($0.value) }) {
            problems.append("forbidden character U+\(hex(bad.value))")
        }
        if !hasMarker(line) { problems.append("no marker") }
        return problems.map { "\($0) in line \(String(reflecting: text))" }
    }

    /// `<nick> `, `[pm from nick] `, `* ` or `! `, with a valid nick.
    public static func hasMarker(_ line: ArraySlice<UInt8>) -> Bool {
        if line.starts(with: [0x2A, 0x20]) || line.starts(with: [0x21, 0x20]) { return true }  // "* ", "! "
        for (open, close) in [(Array("<".utf8), Array("> ".utf8)), (Array("[pm from ".utf8), Array("] ".utf8))] {
            guard line.starts(with: open) else { continue }
            let rest = line.dropFirst(open.count)
            guard let end = rest.firstIndex(of: close[0]) else { return false }
            return isValidName(rest[..<end]) && rest[end...].starts(with: close)
        }
        return false
    }

    /// 1-32 of `A-Z a-z 0-9 _ -` (nicks and rooms).
    public static func isValidName(_ name: some Collection<UInt8>) -> Bool {
        (1...32).contains(name.count)
            && name.allSatisfy { byte in
                (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || (0x30...0x39).contains(byte)
                    || byte == 0x5F || byte == 0x2D
            }
    }

    /// Everything one connection received, in order. Every line ends with
    /// LF, except that a connection the server cut off (`cutOff`: a failure,
    /// a close or shutdown deadline) may end inside a line. A refused
    /// connection gets `! server full` and nothing else; an admitted one
    /// starts with its welcome; `* bye`, `* idle timeout`, `* line timeout`
    /// and `* server shutting down` are last.
    public static func transcriptProblems(
        _ bytes: [UInt8], admitted: Bool, cutOff: Bool
    ) -> [String] {
        var problems: [String] = []
        var lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false)
        let fragment = lines.removeLast()  // after the last LF: empty unless cut off mid-line
        if !fragment.isEmpty && !cutOff {
            problems.append("ends inside a line although it was not cut off: \(String(reflecting: String(decoding: fragment, as: UTF8.self)))")
        }
        if !admitted {
            let refusal = Array(Replies.serverFull)
            if !refusal.starts(with: bytes) || (!cutOff && bytes != refusal) {
                problems.append("a refused connection got \(String(reflecting: String(decoding: bytes, as: UTF8.self)))")
            }
            return problems
        }
        for line in lines { problems += lineProblems(line) }
        if let first = lines.first, !first.starts(with: Array("* welcome guest".utf8)) {
            problems.append("the first line is not a welcome: \(String(decoding: first, as: UTF8.self))")
        }
        let finalLines = ["* bye", "* idle timeout", "* line timeout", "* server shutting down"].map { Array($0.utf8) }
        for (index, line) in lines.enumerated() where index != lines.count - 1 && finalLines.contains(where: { $0.elementsEqual(line) }) {
            problems.append("line \(index + 1) \(String(decoding: line, as: UTF8.self)) is not the last")
        }
        return problems
    }

    // MARK: - The registry

    /// Nicks unique ignoring case and indexed exactly, every client in exactly
    /// one room, room counts equal membership, no empty room, valid names,
    /// each framer within `maxLine` + 1 bytes. (Written to allocate nothing
    /// when all is well: it runs after every step of every fuzz input.)
    public static func registryProblems(_ registry: RegistrySnapshot, maxLine: Int) -> [String] {
        var problems: [String] = []
        var members = 0
        for room in registry.rooms {
            members += room.members.count
            if room.members.isEmpty { problems.append("room \(room.name) is empty but listed") }
            if !room.name.hasPrefix("#") || !isLowercased(room.key.utf8, of: room.name.utf8.dropFirst()) {
                problems.append("room \(room.name) has key \(room.key)")
            }
            if !isValidName(room.key.utf8) { problems.append("invalid room key \(room.key)") }
        }
        if members != registry.clients.count {
            problems.append("rooms hold \(members) members but there are \(registry.clients.count) clients")
        }
        for (index, client) in registry.clients.enumerated() {
            var listings = 0
            var listedInItsRoom = false
            for room in registry.rooms {
                for member in room.members where member == client.id {
                    listings += 1
                    if room.key == client.roomKey { listedInItsRoom = true }
                }
            }
            if listings != 1 || !listedInItsRoom {
                let rooms = registry.rooms.filter { $0.members.contains(client.id) }.map { $0.name }
                problems.append("\(client.nick) is in \(client.roomKey) but listed in \(rooms)")
            }
            if !isValidName(client.nick.utf8) { problems.append("invalid nick \(client.nick)") }
            for other in registry.clients[..<index] where equalIgnoringASCIICase(other.nick.utf8, client.nick.utf8) {
                problems.append("nicks \(other.nick) and \(client.nick) are equal ignoring case")
            }
            if !registry.nickIndex.contains(where: { $0.value == client.id && isLowercased($0.key.utf8, of: client.nick.utf8) }) {
                problems.append("the nick index has no entry for \(client.nick)")
            }
            if client.bufferedBytes > maxLine + 1 {
                problems.append("\(client.nick)'s framer holds \(client.bufferedBytes) bytes (max-line \(maxLine))")
            }
        }
        if registry.nickIndex.count != registry.clients.count {
            problems.append("the nick index has \(registry.nickIndex.count) entries for \(registry.clients.count) clients")
        }
        return problems
    }

    /// Whether `key` is `name` with A-Z lower-cased.
    static func isLowercased(_ key: String.UTF8View, of name: some Collection<UInt8>) -> Bool {
        compare(key, name) { $0 == asciiLower($1) }
    }

    static func equalIgnoringASCIICase(_ a: String.UTF8View, _ b: String.UTF8View) -> Bool {
        compare(a, b) { asciiLower($0) == asciiLower($1) }
    }

    /// Same length and `same` for each pair of bytes (plain loops: the lazy
    /// map of the standard library costs more than the whole check here).
    @inline(__always)
    static func compare(
        _ a: some Collection<UInt8>, _ b: some Collection<UInt8>, _ same: (UInt8, UInt8) -> Bool
    ) -> Bool {
        guard a.count == b.count else { return false }
        var left = a.makeIterator()
        var right = b.makeIterator()
        while let x = left.next(), let y = right.next() {
            if !same(x, y) { return false }
        }
        return true
    }

    /// What `/who` from `client` must answer: its room's members by the byte
    /// order of their lower-cased nicks, and the count.
    public static func expectedWho(for client: ConnectionID, in registry: RegistrySnapshot) -> String? {
        guard let me = registry.clients.first(where: { $0.id == client }),
            let room = registry.rooms.first(where: { $0.key == me.roomKey })
        else { return nil }
        let nicks = room.members.compactMap { id in registry.clients.first { $0.id == id }?.nick }
            .sorted { $0.utf8.map(asciiLower).lexicographicallyPrecedes($1.utf8.map(asciiLower)) }
        return "* \(room.name): \(nicks.joined(separator: ", ")) (\(nicks.count))"
    }

    /// What `/rooms` must answer: every room (none empty) by key, with its count.
    public static func expectedRooms(in registry: RegistrySnapshot) -> String {
        "* rooms: " + registry.rooms.map { "\($0.name) (\($0.members.count))" }.joined(separator: ", ")
    }

    static func asciiLower(_ byte: UInt8) -> UInt8 { (0x41...0x5A).contains(byte) ? byte | 0x20 : byte }

    static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}
