/// One chat across servers (§6): what one server knows of the clients of
/// the others, and the events the servers tell each other.
///
/// Every server publishes its clients' events on one Redis channel through
/// one connection, so Redis puts them in one order, and every server
/// applies them in that order: each keeps this replica of the other servers'
/// clients (nick, room), from which `/msg` and the nick checks answer at
/// once. (`/who`, `/rooms` and `(K here)` read Redis's keys,
/// `MembershipKeys`.) A server that joins (or whose link comes back) asks
/// for everyone's clients (`sync`); each answers with its `here` list,
/// ended by `announced`.

/// A client of another server: its server's node id and its id there.
public struct RemoteClientID: Hashable, Sendable, CustomStringConvertible {
    public var node: String
    public var id: Int
    public init(node: String, id: Int) {
        self.node = node
        self.id = id
    }
    public var description: String { "\(node)/\(id)" }
}

/// What servers tell each other, one event per Redis message, as text:
/// space-separated fields, the last one running to the end (it may hold
/// spaces, or be empty). Nicks, room names and node ids hold no spaces;
/// line text was cleaned of control characters before it got here.
public enum ClusterEvent: Equatable, Sendable {
    /// A client connected (`hello`), or exists (`here`, the answer to
    /// `sync`): its nick, taken at `since` (milliseconds of wall-clock time),
    /// and its room as its creator spells it.
    case hello(RemoteClientID, since: Int64, nick: String, room: String)
    case here(RemoteClientID, since: Int64, nick: String, room: String)
    /// Moved to another room.
    case join(RemoteClientID, room: String)
    /// Claims another nick at `since`: every server refuses it alike if an
    /// earlier event in the stream took the name (guest names included).
    case nick(RemoteClientID, since: Int64, nick: String)
    /// Was given another nick at `since` by its own server, settling a clash
    /// after an outage: never refused (its server has given it already); a
    /// clash it makes is settled like any other.
    case rename(RemoteClientID, since: Int64, nick: String)
    /// Said `text` to its room.
    case say(RemoteClientID, text: [UInt8])
    /// Sent `text` privately to `to`.
    case privateMessage(RemoteClientID, to: RemoteClientID, text: [UInt8])
    /// Left; `suffix` is what follows `* nick left #room` (` (reason)` or nothing).
    case bye(RemoteClientID, suffix: String)
    /// Stored an upload as `name` (`size` bytes) on its server (§5): its room
    /// hears `* nick shared`, and a server whose upload directory is the
    /// same one lists it too.
    case shared(RemoteClientID, name: String, size: Int)
    /// A server asks the others for their clients.
    case sync(node: String)
    /// Ends a server's `here` list (in the same message): its clients not
    /// listed have gone (their `bye` was never published: the link was
    /// down), but for `keeping`, whose `hello` is still on its way.
    case announced(node: String, keeping: [Int])

    /// Whether `node` published it (a server hears its own events too).
    public func isFrom(_ node: String) -> Bool {
        switch self {
        case .hello(let who, _, _, _), .here(let who, _, _, _), .join(let who, _), .nick(let who, _, _),
            .rename(let who, _, _), .say(let who, _), .privateMessage(let who, _, _), .bye(let who, _),
            .shared(let who, _, _):
            who.node == node
        case .sync(let asker), .announced(let asker, _): asker == node
        }
    }

    public var encoded: [UInt8] {
        func fields(_ words: [String], rest: [UInt8] = []) -> [UInt8] {
            Array(words.joined(separator: " ").utf8) + [0x20] + rest
        }
        switch self {
        case .hello(let who, let since, let nick, let room):
            return Array("hello \(who.node) \(who.id) \(since) \(nick) \(room)".utf8)
        case .here(let who, let since, let nick, let room):
            return Array("here \(who.node) \(who.id) \(since) \(nick) \(room)".utf8)
        case .join(let who, let room): return Array("join \(who.node) \(who.id) \(room)".utf8)
        case .nick(let who, let since, let nick): return Array("nick \(who.node) \(who.id) \(since) \(nick)".utf8)
        case .rename(let who, let since, let nick): return Array("rename \(who.node) \(who.id) \(since) \(nick)".utf8)
        case .say(let who, let text): return fields(["say", who.node, String(who.id)], rest: text)
        case .privateMessage(let who, let to, let text):
            return fields(["pm", who.node, String(who.id), to.node, String(to.id)], rest: text)
        case .bye(let who, let suffix): return fields(["bye", who.node, String(who.id)], rest: Array(suffix.utf8))
        case .shared(let who, let name, let size): return Array("shared \(who.node) \(who.id) \(size) \(name)".utf8)
        case .sync(let node): return Array("sync \(node)".utf8)
        case .announced(let node, let keeping): return Array(([ "announced", node] + keeping.map(String.init)).joined(separator: " ").utf8)
        }
    }

    /// nil: not an event (a newer server's, or garbage): ignored.
    public init?(decoding bytes: [UInt8]) {
        var index = 0
        /// The next space-separated field (nil at the end).
        func word() -> String? {
            guard index < bytes.count else { return nil }
            let start = index
            while index < bytes.count && bytes[index] != 0x20 { index += 1 }
            let field = String(decoding: bytes[start..<index], as: UTF8.self)
            if index < bytes.count { index += 1 }
            return field.isEmpty ? nil : field
        }
        func client() -> RemoteClientID? {
            guard let node = word(), let id = word().flatMap({ Int($0) }) else { return nil }
            return RemoteClientID(node: node, id: id)
        }
        func rest() -> [UInt8] { Array(bytes[min(index, bytes.count)...]) }
        func name() -> String? { word().flatMap { ChatCore.isValidName($0) ? $0 : nil } }
        guard let kind = word() else { return nil }
        switch kind {
        case "hello", "here":
            guard let who = client(), let since = word().flatMap({ Int64($0) }), let nick = name(), let room = name(),
                index >= bytes.count
            else { return nil }
            self = kind == "hello" ? .hello(who, since: since, nick: nick, room: room) : .here(who, since: since, nick: nick, room: room)
        case "join":
            guard let who = client(), let room = name(), index >= bytes.count else { return nil }
            self = .join(who, room: room)
        case "nick", "rename":
            guard let who = client(), let since = word().flatMap({ Int64($0) }), let nick = name(), index >= bytes.count else { return nil }
            self = kind == "nick" ? .nick(who, since: since, nick: nick) : .rename(who, since: since, nick: nick)
        case "say":
            guard let who = client() else { return nil }
            self = .say(who, text: rest())
        case "pm":
            guard let who = client(), let to = client() else { return nil }
            self = .privateMessage(who, to: to, text: rest())
        case "bye":
            guard let who = client() else { return nil }
            self = .bye(who, suffix: String(decoding: rest(), as: UTF8.self))
        case "shared":
            guard let who = client(), let size = word().flatMap({ Int($0) }), size >= 0, let name = word(), FileName.isValid(name),
                index >= bytes.count
            else { return nil }
            self = .shared(who, name: name, size: size)
        case "sync":
            guard let node = word(), index >= bytes.count else { return nil }
            self = .sync(node: node)
        case "announced":
            guard let node = word() else { return nil }
            var keeping: [Int] = []
            while let field = word() {
                guard let id = Int(field) else { return nil }
                keeping.append(id)
            }
            guard index >= bytes.count else { return nil }
            self = .announced(node: node, keeping: keeping)
        default:
            return nil
        }
    }
}

/// The other servers' clients, as the events in Redis's order made them.
struct ClusterReplica {
    struct Member {
        var nick: String
        /// When the nick was taken (wall-clock milliseconds): the earlier of
        /// two claims keeps a nick.
        var since: Int64
        var roomKey: String
    }

    /// This server's node id.
    let node: String
    private(set) var members: [RemoteClientID: Member] = [:]
    /// Lower-cased nick -> its holder (the earliest claim).
    private var holders: [String: RemoteClientID] = [:]
    /// Lower-cased nick -> every member claiming it, when more than one
    /// does (a clash its servers have not settled yet); then the holder is
    /// the earliest of them. Kept so that when a holder leaves or changes
    /// nick, the next holder is found without a scan of every member (a lost
    /// server with thousands of clients would otherwise cost time
    /// quadratic in the members, under the hub lock).
    private var rivals: [String: [RemoteClientID]] = [:]
    /// Room key -> its remote members, and the spelling the first brought.
    private(set) var rooms: [String: (name: String, members: Set<RemoteClientID>)] = [:]

    init(node: String) { self.node = node }

    var isEmpty: Bool { members.isEmpty }

    func holder(of nickKey: String) -> RemoteClientID? { holders[nickKey] }

    func count(in roomKey: String) -> Int { rooms[roomKey]?.members.count ?? 0 }

    func nicks(in roomKey: String) -> [String] { rooms[roomKey]?.members.compactMap { members[$0]?.nick } ?? [] }

    /// Adds or replaces a member. Its nick goes into the index unless an
    /// earlier claim holds it.
    mutating func add(_ who: RemoteClientID, _ member: Member, spelling: String) {
        if members[who] != nil { remove(who) }
        members[who] = member
        rooms[member.roomKey, default: (name: "#" + spelling, members: [])].members.insert(who)
        claim(who)
    }

    @discardableResult
    mutating func remove(_ who: RemoteClientID) -> Member? {
        guard let member = members[who] else { return nil }
        leaveRoom(who, member.roomKey)
        unclaim(who)
        members[who] = nil
        return member
    }

    mutating func move(_ who: RemoteClientID, to roomKey: String, spelling: String) {
        guard let member = members[who] else { return }
        leaveRoom(who, member.roomKey)
        members[who]!.roomKey = roomKey
        rooms[roomKey, default: (name: "#" + spelling, members: [])].members.insert(who)
    }

    mutating func rename(_ who: RemoteClientID, to nick: String, since: Int64) {
        guard members[who] != nil else { return }
        unclaim(who)
        members[who]!.nick = nick
        members[who]!.since = since
        claim(who)
    }

    /// Every member of `node`, oldest first.
    func clients(of node: String) -> [RemoteClientID] {
        members.keys.filter { $0.node == node }.sorted { $0.id < $1.id }
    }

    mutating func removeAll() {
        members = [:]
        holders = [:]
        rivals = [:]
        rooms = [:]
    }

    /// Whether `a`'s claim of its nick came before `b`'s of theirs.
    private func isEarlier(_ a: RemoteClientID, than b: RemoteClientID) -> Bool {
        guard let first = members[a], let second = members[b] else { return false }
        return (first.since, a.node, a.id) < (second.since, b.node, b.id)
    }

    /// `who` (a member) claims its nick: it holds it unless an earlier claim does.
    private mutating func claim(_ who: RemoteClientID) {
        guard let key = members[who]?.nick.asciiLowercased else { return }
        guard let holder = holders[key], holder != who else {
            holders[key] = who
            return
        }
        rivals[key, default: [holder]].append(who)
        if isEarlier(who, than: holder) { holders[key] = who }
    }

    /// `who` (still a member) gives up its nick; the earliest other claimant, if any, holds it.
    private mutating func unclaim(_ who: RemoteClientID) {
        guard let key = members[who]?.nick.asciiLowercased else { return }
        guard var claimants = rivals[key] else {
            if holders[key] == who { holders[key] = nil }
            return
        }
        claimants.removeAll { $0 == who }
        if holders[key] == who {
            var next = claimants[0]
            for other in claimants.dropFirst() where isEarlier(other, than: next) { next = other }
            holders[key] = next
        }
        rivals[key] = claimants.count > 1 ? claimants : nil
    }

    private mutating func leaveRoom(_ who: RemoteClientID, _ roomKey: String) {
        // In place: a copy of the room would copy its whole member set.
        guard rooms[roomKey]?.members.remove(who) != nil else { return }
        if rooms[roomKey]!.members.isEmpty { rooms[roomKey] = nil }
    }
}

/// Nick ownership in Redis (§6): `echochat:nick:NICK` (lower-cased) holds
/// its holder, `NODE ID SINCE`; a claim (`nick`, `hello`) is published only
/// if it takes the key (`SET … NX`, in one script with the `PUBLISH`).
public enum NickKey {
    /// What the key of a nick held by `who` since `since` says.
    public static func value(_ who: RemoteClientID, since: Int64) -> String { "\(who.node) \(who.id) \(since)" }

    /// The nick a claim event takes, lower-cased (nil: not a claim).
    public static func claimed(by event: ClusterEvent) -> (key: String, holder: String)? {
        switch event {
        case .nick(let who, let since, let nick), .hello(let who, let since, let nick, _):
            return (nick.asciiLowercased, value(who, since: since))
        default:
            return nil
        }
    }
}
