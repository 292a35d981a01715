/// Room membership in Redis (§6), as the cluster link's scripts keep it.
///
/// Every server's events that move a client (`hello`, `here`, `join`,
/// `nick`, `rename`, `bye`) change the membership keys in the same Redis
/// script that publishes them, so the keys always say what the stream has
/// said so far:
///
/// - `echochat:who:ROOM` (room lower-cased): a hash, `NODE ID` -> nick;
/// - `echochat:rooms`: a hash, room lower-cased -> its spelling (the first
///   member's, as a server's replica keeps it);
/// - `echochat:in:NODE`: a hash, a server's client id -> its room, so its
///   clients can be found and taken out when it leaves or is lost.
///
/// `/who`, `/rooms` and `(K here)` are read from them by a script that
/// publishes its answer on the asking server's own channel: the answer comes
/// back through the same ordered stream as the events, after every event
/// published before the read, so it never counts what the asker has not
/// been told yet, nor misses what it has.
public enum MembershipKeys {
    /// The arguments one event gives the scripts: groups of five, `kind id
    /// room spelling nick` (unused fields empty). Kinds: `hello` (a new
    /// client: put in its room, its count told back), `here` (put in its
    /// room), `join` (moved, nick kept; its count told back), `nick`
    /// (renamed where it is), `out` (left), `keep` (when a server's list
    /// replaces its entries: this client, whose welcome is on its way,
    /// stays). Other events change nothing.
    public static func operations(for event: ClusterEvent) -> [String] {
        switch event {
        case .hello(let who, _, let nick, let room): ["hello", String(who.id), room.asciiLowercased, room, nick]
        case .here(let who, _, let nick, let room): ["here", String(who.id), room.asciiLowercased, room, nick]
        case .join(let who, let room): ["join", String(who.id), room.asciiLowercased, room, ""]
        case .nick(let who, _, let nick), .rename(let who, _, let nick): ["nick", String(who.id), "", "", nick]
        case .bye(let who, _): ["out", String(who.id), "", "", ""]
        case .announced(_, let keeping): keeping.flatMap { ["keep", String($0), "", "", ""] }
        case .say, .privateMessage, .shared, .sync: []
        }
    }
}

/// A question about the cluster's membership, read from its keys (§6).
public enum ClusterQuery: Equatable, Sendable {
    /// The nicks in room `key` (lower-cased).
    case who(room: String)
    /// Every room, with its spelling and head count.
    case rooms
}

/// What the keys answered, heard on the asking server's channel
/// (`echochat:to:NODE`) in the stream's order.
public enum ClusterAnswer: Equatable, Sendable {
    /// `who ID NICK…`: the nicks in the room `ID` asked about.
    case who([String])
    /// `rooms ID KEY SPELLING COUNT…`.
    case rooms([RoomCount])
    /// `count ID K`: K in the room `ID` arrived in (its `hello` or `join`),
    /// counting it, by the event's place in the stream.
    case count(Int)

    public struct RoomCount: Equatable, Sendable {
        public var key: String
        public var spelling: String
        public var count: Int
        public init(key: String, spelling: String, count: Int) {
            self.key = key
            self.spelling = spelling
            self.count = count
        }
    }

    /// The connection asked for, and the answer; nil if `text` is not one.
    public static func decode(_ text: String) -> (id: ConnectionID, answer: ClusterAnswer)? {
        let words = text.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard words.count >= 2, let id = Int(words[1]) else { return nil }
        let rest = words.dropFirst(2)
        switch words[0] {
        case "who":
            guard rest.allSatisfy(ChatCore.isValidName) else { return nil }
            return (ConnectionID(id), .who(Array(rest)))
        case "rooms":
            guard rest.count % 3 == 0 else { return nil }
            var list: [RoomCount] = []
            var index = rest.startIndex
            while index < rest.endIndex {
                let key = rest[index], spelling = rest[index + 1]
                guard ChatCore.isValidName(spelling), spelling.asciiLowercased == key, let count = Int(rest[index + 2]), count >= 0
                else { return nil }
                list.append(RoomCount(key: key, spelling: spelling, count: count))
                index += 3
            }
            return (ConnectionID(id), .rooms(list))
        case "count":
            guard rest.count == 1, let count = Int(rest.first!), count >= 1 else { return nil }
            return (ConnectionID(id), .count(count))
        default:
            return nil
        }
    }
}
