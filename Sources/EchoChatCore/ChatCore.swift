/// Identifies one connection to the core. Strategies use the socket's
/// descriptor: unique among open connections, and the core forgets an id
/// (calling `ChatOutput.close`) before the strategy closes the descriptor.
public struct ConnectionID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let rawValue: Int
    public init(_ rawValue: Int) { self.rawValue = rawValue }
    public static func < (a: ConnectionID, b: ConnectionID) -> Bool { a.rawValue < b.rawValue }
    public var description: String { "#\(rawValue)" }
}

/// Where the core's actions go. A strategy implements it; tests record it.
/// The core calls these while it runs (under the strategy's lock, if any), so
/// an implementation only queues: it must not call back into the core.
public protocol ChatOutput: AnyObject {
    /// Queue `line` (one complete line, LF included) for `id`, after
    /// everything queued for it before.
    func send(_ line: [UInt8], to id: ConnectionID)
    /// The core has forgotten `id`: deliver what is queued for it, then close
    /// it. (When the strategy itself asked the core to drop a connection for a
    /// socket error or a slow consumer, it closes at once instead.)
    func close(_ id: ConnectionID)
    /// The wire-level counters for `/stats`.
    func transportStats() -> TransportStats
    /// Cluster (§6): tell the other servers `event`, after every event
    /// published before it: on the channel of the room `room` (lower-cased)
    /// when given (lines said there), else on the one all servers hear.
    func publish(_ event: ClusterEvent, room: String?)
    /// Cluster (§6): `id`'s nick claim or join was decided (it heard how);
    /// the lines it sent after it may be handled again (`Intake.held`).
    func resume(_ id: ConnectionID)
    /// Cluster (§6): this server has members in room `key` (lower-cased)
    /// now, or no longer: hear its channel, or stop. `#lobby`'s is always
    /// heard. A subscription confirmed while the link is up comes back as
    /// `ChatCore.subscribed(room:)`.
    func subscribe(room key: String)
    func unsubscribe(room key: String)
    /// Cluster (§6) and files (§5): another server stored `name` (`size`
    /// bytes) and this one does not list it. If the upload directory is
    /// shared, the file is there too: the store looks, and calls
    /// `ChatCore.fileFound` if so.
    func lookForFile(_ name: String, size: Int)
    /// Cluster (§6) and files (§5): files may have been stored that this
    /// server was not told of (the link, this server's or another's, was
    /// down meanwhile). The store lists every file in the directory, and
    /// calls `ChatCore.fileFound` for each.
    func lookForFiles()
    /// Cluster (§6): whether events have reached this server that it has
    /// not applied yet (its link has them unread). If so, the core holds the
    /// asking client's command, and the link calls `ChatCore.eventsApplied`
    /// once it has applied what it had.
    func eventsPending() -> Bool
    /// Cluster (§6): this server's client no longer holds the nick `key`
    /// (lower-cased) that it held as `holder` (`NickKey.value`): its key in
    /// Redis goes, if it still says so, after everything published before.
    func releaseNick(_ key: String, holder: String)
    /// Cluster (§6): ask Redis's membership keys `query` for `id`, after
    /// everything published before; the answer comes back in the stream's
    /// order as `ChatCore.answered`.
    func ask(_ query: ClusterQuery, for id: ConnectionID)
    /// Cluster (§6): this server's clients, as `here` events, after every
    /// event published before: they replace whatever Redis's membership
    /// keys held for this server, in one step.
    func announce(_ events: [ClusterEvent])
}

extension ChatOutput {
    public func publish(_ event: ClusterEvent, room: String?) {}
    public func lookForFile(_ name: String, size: Int) {}
    public func lookForFiles() {}
    public func eventsPending() -> Bool { false }
    public func resume(_ id: ConnectionID) {}
    public func subscribe(room key: String) {}
    public func unsubscribe(room key: String) {}
    public func releaseNick(_ key: String, holder: String) {}
    public func ask(_ query: ClusterQuery, for id: ConnectionID) {}
    public func announce(_ events: [ClusterEvent]) { for event in events { publish(event, room: nil) } }
}

/// Chat mode (docs/PROTOCOL.md §3) as a state machine: bytes in, actions out.
///
/// It owns the nick and room registry and each client's line framer; it
/// imports no libc, reads no clock and does no I/O. A strategy feeds it
/// `connect`, `receive`, `endOfInput`, `disconnect` and `shutdown`, and carries
/// out what it asks through `ChatOutput`. Not thread-safe: one thread owns it,
/// or it sits behind a `Mutex`.
public final class ChatCore {
    public let maxLine: Int
    public private(set) var messagesIn = 0
    public private(set) var messagesOut = 0

    private var clients: [ConnectionID: Client] = [:]
    /// Lower-cased nick -> holder.
    private var nicks: [String: ConnectionID] = [:]
    /// Lower-cased room name without `#` -> room.
    private var rooms: [String: Room] = [:]
    /// No guest number below this is free (see `allocateGuestNick`).
    private var guestFloor = 1
    /// File sharing's limits (§5); nil: sharing is off.
    public private(set) var fileSharing: FileSharing?
    public private(set) var catalog = FileCatalog()
    /// Set by the command that ends a `receive` early: raw bytes follow
    /// (`/upload`), or a download starts (`/download`).
    private var rawFollows: UploadStart?
    private var downloadFollows: String?
    /// Set by a `/nick` whose claim went to the cluster, or a `/join` that
    /// waits for its room's channel or for its event: the client's next
    /// lines wait.
    private var holdFollows = false
    /// Cluster (§6): the other servers' clients; nil when standalone.
    private var replica: ClusterReplica?
    /// Wall-clock milliseconds, for when a nick was taken (cluster only).
    private let clock: () -> Int64
    /// Cluster: the link is up, so events go out and come back in order.
    private var linked = false
    /// Cluster: what was sent to clients whose join waits for its event
    /// (`Client.joinUnconfirmed`), in order, given to them after the reply.
    private var heldOutput: [ConnectionID: HeldOutput] = [:]
    private struct HeldOutput {
        var lines: [[UInt8]] = []
        var bytes = 0
    }
    /// Past this much held for one client (a busy room while Redis is slow
    /// to carry its join back), it is told at once instead: what it is sent
    /// then counts against `max-output` like everything else.
    static let maxHeldOutput = 256 * 1024
    /// Cluster: clients that left (`/quit`, end of input) and whose
    /// connection closes once their `bye` comes back through the stream, so
    /// that after the close no server lists them and their nick is free
    /// everywhere. A connection that ends first is closed then.
    private var closingAfterBye: Set<ConnectionID> = []
    /// Cluster: clients whose command reads the replica (`/msg`, `/nick`,
    /// `/join`) waits until the events that had
    /// reached this server are applied (`ChatOutput.eventsPending`), so it
    /// answers with everything another server had told its clients by then.
    private var eventWaiters: [ConnectionID] = []
    /// Cluster: nicks (lower-cased) claimed by a client here and not yet
    /// decided: nobody else here may take them meanwhile.
    private var claims: [String: ConnectionID] = [:]
    /// Cluster: rooms (lower-cased) whose channel this server hears, as
    /// Redis confirmed while the link is up (`#lobby`'s is not listed: it
    /// is always heard).
    private var subscribedRooms: Set<String> = []
    /// Cluster: clients waiting to join a room until its channel is heard,
    /// in the order they asked.
    private var joining: [String: [ConnectionID]] = [:]
    /// Cluster: connections whose guest nick is on its way through the
    /// ordered stream (a claim, like `/nick`'s): welcomed when it comes back.
    private var welcoming: [ConnectionID: Welcome] = [:]
    /// Cluster: K of `(K here)` as Redis's keys counted it for a `hello` or
    /// a `join` of this server's, until its event comes back.
    private var heardCounts: [ConnectionID: Int] = [:]
    /// Cluster: the other servers' clients listed by `here` since their
    /// server's last `announced`.
    private var announcedSince: [String: Set<RemoteClientID>] = [:]
    public static let lobby = "lobby"

    /// A guest nick claimed for a connection not yet welcomed.
    private struct Welcome {
        var nick: String
        var since: Int64
        /// Input arrived meanwhile and was held (`Intake.held`): resume it once welcomed.
        var held = false
    }

    private final class Client {
        let id: ConnectionID
        var nick: String
        /// When the nick was taken (the cluster's clash rule).
        var since: Int64 = 0
        /// Cluster: the nick this client asked for, and when, while the
        /// claim travels through the ordered stream (its input waits).
        var claim: (nick: String, since: Int64)?
        /// Cluster: the lower-cased nick whose taking every server has seen
        /// in the stream (this server's own event came back), so every
        /// server refuses a later claim of it alike.
        var confirmedKey: String?
        /// Cluster: an earlier holder of its nick appeared while its claim
        /// was in flight; settled once the claim is decided.
        var clashWaits = false
        /// Cluster: the room (as spelled) it asked to join, while this
        /// server subscribes to the room's channel (its input waits).
        var pendingJoin: String?
        /// Cluster: it is in `room` now, but hears `* you joined` only once
        /// its `join` event comes back through the stream, so that every
        /// server counts it by then (its input waits; what is sent to it
        /// meanwhile waits in `heldOutput`, to follow the reply).
        var joinUnconfirmed = false
        /// Cluster: the command that waits for the events this server has
        /// not applied yet (`eventWaiters`; its input waits too).
        var commandWaiting: [UInt8]?
        /// Cluster: the `/who` or `/rooms` whose answer comes from Redis's
        /// keys (its input waits).
        var asking: [UInt8]?
        var isHeld: Bool { claim != nil || pendingJoin != nil || joinUnconfirmed || commandWaiting != nil || asking != nil }
        var room: Room
        var framer: LineFramer
        /// Quota promised to this client's uploads under way.
        var reserved = 0
        init(id: ConnectionID, nick: String, room: Room, maxLine: Int) {
            self.id = id
            self.nick = nick
            self.room = room
            self.framer = LineFramer(maxLine: maxLine)
        }
    }

    private final class Room {
        let key: String
        /// `#` plus the spelling of the client who created it.
        let name: String
        var members: [ConnectionID] = [] {
            didSet { who = nil }
        }
        /// The `/who` reply, built once per change of membership or nicks
        /// (a burst of `/who` in a big room costs a copy each, not a sort).
        var who: [UInt8]?
        init(key: String, name: String) {
            self.key = key
            self.name = name
        }
    }

    /// The `/rooms` reply, built once per change of rooms or their counts.
    private var roomList: [UInt8]?

    /// `node`: this server's id in a cluster (nil: standalone); `clock`
    /// gives wall-clock milliseconds (the cluster's nick clashes go to the
    /// earlier claim).
    public init(
        maxLine: Int, fileSharing: FileSharing? = nil, catalog: FileCatalog = FileCatalog(), node: String? = nil,
        clock: @escaping () -> Int64 = { 0 }
    ) {
        self.maxLine = maxLine
        self.fileSharing = fileSharing
        self.catalog = catalog
        self.replica = node.map(ClusterReplica.init(node:))
        self.clock = clock
    }

    /// New limits (a reload); the catalog stays.
    public func update(fileSharing sharing: FileSharing) {
        if fileSharing != nil { fileSharing = sharing }
    }

    /// Connected clients, welcomed or waiting for their welcome (refused ones never enter the core).
    public var clientCount: Int { clients.count + welcoming.count }
    public var roomCount: Int { rooms.count }

    /// Whether `id` has an unfinished line waiting (for the line timeout).
    public func hasPartialLine(_ id: ConnectionID) -> Bool {
        clients[id]?.framer.hasPartialLine ?? false
    }

    // MARK: - Events from the strategy

    /// An admitted connection: give it a guest nick, put it in #lobby, welcome it.
    ///
    /// In a cluster whose link is up, the guest nick is claimed first, like
    /// a `/nick` (§6: guest numbers are unique across the cluster): the
    /// welcome comes when the claim comes back through the ordered stream,
    /// one Redis round trip later, and any input meanwhile is held.
    public func connect(_ id: ConnectionID, output: some ChatOutput) {
        precondition(clients[id] == nil && welcoming[id] == nil, "connection \(id) is already connected")
        if replica != nil && linked { return claimGuestNick(for: id, held: false, output) }
        welcome(id, nick: allocateGuestNick(), since: replica != nil ? clock() : 0, output)
    }

    /// Claims a free guest nick for `id` through the stream.
    private func claimGuestNick(for id: ConnectionID, held: Bool, _ output: some ChatOutput) {
        let nick = allocateGuestNick()
        let since = clock()
        claims[nick] = id
        welcoming[id] = Welcome(nick: nick, since: since, held: held)
        publish(.hello(RemoteClientID(node: replica!.node, id: id.rawValue), since: since, nick: nick, room: Self.lobby), output)
    }

    /// Puts `id` in #lobby as `nick` and tells it and the room.
    /// (Standalone, or the link down: nobody else to tell. Linked: the
    /// others took the claim for its join where it fell in the stream.)
    private func welcome(_ id: ConnectionID, nick: String, since: Int64, count heard: Int? = nil, _ output: some ChatOutput) {
        let room = findOrCreateRoom(key: Self.lobby, spelling: Self.lobby)
        let client = Client(id: id, nick: nick, room: room, maxLine: maxLine)
        client.since = since
        clients[id] = client
        nicks[nick] = id
        roomList = nil
        room.members.append(id)
        send(Replies.welcome(nick: nick, room: room.name, count: heard ?? count(of: room)), to: id, output)
        broadcast(Replies.joined(nick: nick, room: room.name), in: room, except: id, output)
    }

    /// A connection not yet welcomed goes (its guest claim in flight): its
    /// claim is dropped, and the servers that saw the claim win hear it leave.
    /// (Or one whose client left already ends before its `bye` came back.)
    private func abandonWelcome(_ id: ConnectionID, reason: DisconnectReason, _ output: some ChatOutput) {
        closeAfterBye(id, output)
        heardCounts[id] = nil
        guard let pending = takeWelcome(id) else { return }
        releaseGuestNumber(pending.nick)
        publish(.bye(RemoteClientID(node: replica?.node ?? "", id: id.rawValue), suffix: reason.suffix), output)
        releaseKey(pending.nick, id: id, since: pending.since, output)
        output.close(id)
    }

    /// The connection of a client that left is closed now, if it waits.
    private func closeAfterBye(_ id: ConnectionID, _ output: some ChatOutput) {
        if !closingAfterBye.isEmpty && closingAfterBye.remove(id) != nil { output.close(id) }
    }

    /// `id`'s guest claim in flight, if any, taken off the lists (it is
    /// decided, or moot).
    private func takeWelcome(_ id: ConnectionID) -> Welcome? {
        guard let pending = welcoming.removeValue(forKey: id) else { return nil }
        claims[pending.nick] = nil  // nobody else here may claim a nick claimed
        return pending
    }

    /// What one `receive` did.
    public struct Intake: Sendable, Equatable {
        /// Bytes framed; the rest were not looked at (the turn ended) and are
        /// the caller's to hand in again, in order, on a later turn.
        public var consumed: Int
        /// Lines (and too-long reports) handled.
        public var lines: Int
        /// The last line handled was an `/upload`: the next `size` bytes
        /// after `consumed` are its raw content, not lines (§5).
        public var upload: UploadStart?
        /// The last line handled was a `/download` of this stored file.
        public var download: String?
        /// Cluster: the last line handled was a `/nick` whose claim is on its
        /// way through the cluster, or a `/join` waiting for its room's
        /// channel: hand in nothing more from this client until
        /// `ChatOutput.resume`.
        public var held: Bool
        public init(consumed: Int, lines: Int, upload: UploadStart? = nil, download: String? = nil, held: Bool = false) {
            self.consumed = consumed
            self.lines = lines
            self.upload = upload
            self.download = download
            self.held = held
        }
    }

    /// What follows an `/upload` line: `size` raw bytes, stored under (a
    /// name free at the end, starting with) `name` when the upload was
    /// accepted, else read and dropped.
    public struct UploadStart: Sendable, Equatable {
        public var size: Int
        /// nil: refused (the client was told why); the bytes are consumed all the same.
        public var name: String?
        public init(size: Int, name: String?) {
            self.size = size
            self.name = name
        }
    }

    /// Bytes that arrived from `id`: frame them, clean each line, act on it,
    /// handling at most `maxLines` lines, and none after `mayContinue`
    /// returns false (fairness and the rate limit, §3.6).
    @discardableResult
    public func receive(
        _ bytes: UnsafeRawBufferPointer, from id: ConnectionID, output: some ChatOutput, maxLines: Int = .max,
        mayContinue: () -> Bool = { true }
    ) -> Intake {
        if welcoming[id] != nil {
            welcoming[id]!.held = true
            return Intake(consumed: 0, lines: 0, held: true)
        }
        guard let client = clients[id], maxLines > 0 else { return Intake(consumed: clients[id] == nil ? bytes.count : 0, lines: 0) }
        if client.isHeld { return Intake(consumed: 0, lines: 0, held: true) }
        var lines = 0
        let consumed = client.framer.feed(bytes) { event in
            lines += 1
            return handle(event, from: client, output) && rawFollows == nil && downloadFollows == nil && !holdFollows
                && lines < maxLines && mayContinue()
        }
        defer {
            rawFollows = nil
            downloadFollows = nil
            holdFollows = false
        }
        // A client that left (`/quit`) drops the rest of what it sent.
        guard clients[id] != nil else { return Intake(consumed: bytes.count, lines: lines) }
        return Intake(consumed: consumed, lines: lines, upload: rawFollows, download: downloadFollows, held: holdFollows)
    }

    /// The rate limit paused `id` (§3.6); it hears why unless `notify` is false
    /// (it was told less than a minute ago).
    public func rateLimited(_ id: ConnectionID, linesPerSecond: Int, notify: Bool, output: some ChatOutput) {
        guard notify, clients[id] != nil else { return }
        send(Replies.slowDown(linesPerSecond: linesPerSecond), to: id, output)
    }

    /// The client shut down its sending side: its unterminated last line counts
    /// as a line; then it leaves with no reason shown, after its replies.
    public func endOfInput(from id: ConnectionID, output: some ChatOutput) {
        guard let client = clients[id] else { return abandonWelcome(id, reason: .endOfInput, output) }
        client.framer.finish { event in handle(event, from: client, output) }
        rawFollows = nil  // no content can follow an end of input
        downloadFollows = nil
        holdFollows = false
        if clients[id] != nil { remove(client, reason: .endOfInput, output) }
    }

    /// The strategy ends a session: a socket error, a slow consumer, a timeout.
    /// Timeouts tell the client first (`* idle timeout`, `* line timeout`).
    public func disconnect(_ id: ConnectionID, reason: DisconnectReason, output: some ChatOutput) {
        guard let client = clients[id] else { return abandonWelcome(id, reason: reason, output) }
        switch reason {
        case .idleTimeout: send(Replies.idleTimeout, to: id, output)
        case .lineTimeout: send(Replies.lineTimeout, to: id, output)
        default: break
        }
        remove(client, reason: reason, output)
    }

    /// One line to every client (the cluster link lost or restored, §6), in
    /// connection order.
    public func tellEveryone(_ line: [UInt8], output: some ChatOutput) {
        for id in clients.keys.sorted() { send(line, to: id, output) }
    }

    /// Server shutdown (§4): everyone gets `* server shutting down`, nobody gets
    /// left notices, every connection is closed after its output.
    public func shutdown(output: some ChatOutput) {
        for id in heldOutput.keys.sorted() {
            if let client = clients[id] { confirmJoin(client, resume: false, output) }
        }
        for id in (Array(clients.keys) + Array(welcoming.keys)).sorted() {
            send(Replies.shuttingDown, to: id, output)
            output.close(id)
        }
        for id in closingAfterBye.sorted() { output.close(id) }
        closingAfterBye = []
        for client in clients.values { catalog.release(client.reserved) }
        clients = [:]
        welcoming = [:]
        nicks = [:]
        claims = [:]
        joining = [:]
        rooms = [:]
        roomList = nil
        guestFloor = 1
    }

    /// The counters of `/stats`, given the strategy's wire counters.
    public func stats(transport: TransportStats) -> ServerStats {
        ServerStats(
            mode: .chat, clients: clientCount, rooms: rooms.count,
            messagesIn: messagesIn, messagesOut: messagesOut, transport: transport,
            files: FileTotals(count: catalog.count, bytes: catalog.storedBytes))
    }

    // MARK: - Lines

    /// Returns false once the client is gone, so the framer stops.
    private func handle(_ event: LineFramer.Event, from client: Client, _ output: some ChatOutput) -> Bool {
        messagesIn += 1
        switch event {
        case .tooLong:
            send(Replies.lineTooLong(max: maxLine), to: client.id, output)
        case .line(let raw):
            let line = LineHygiene.clean(raw)
            if LineHygiene.isBlank(line) { break }
            if line[0] == 0x2F && (line.count == 1 || line[1] != 0x2F) {
                command(line, from: client, output)
            } else {
                // `//text` is a message whose text starts with `/`.
                let text = line[0] == 0x2F ? Array(line.dropFirst()) : line
                broadcast(Replies.message(from: client.nick, text: text), in: client.room, except: client.id, output)
                publish(.say(remoteID(of: client), text: text), room: client.room.key, output)
            }
        }
        return clients[client.id] != nil
    }

    private func command(_ line: [UInt8], from client: Client, _ output: some ChatOutput, eventsApplied: Bool = false) {
        let space = line.firstIndex(of: 0x20) ?? line.count
        let word = String(decoding: line[0..<space], as: UTF8.self)
        let name = word.asciiLowercased
        if linked && (name == "/who" || name == "/rooms") {
            // Read from Redis's keys; the answer follows the events
            // published before the read, in the stream.
            client.asking = line
            holdFollows = true
            return output.ask(name == "/who" ? .who(room: client.room.key) : .rooms, for: client.id)
        }
        if linked && !eventsApplied && Self.readsTheCluster.contains(name) && output.eventsPending() {
            client.commandWaiting = line
            eventWaiters.append(client.id)
            holdFollows = true
            return
        }
        let rest = line[space...]
        let arguments = rest.split(separator: 0x20).map { String(decoding: $0, as: UTF8.self) }
        let id = client.id
        switch name {
        case "/nick":
            guard arguments.count == 1 else { return send(Replies.usageNick, to: id, output) }
            changeNick(of: client, to: arguments[0], output)
        case "/join":
            guard arguments.count == 1 else { return send(Replies.usageJoin, to: id, output) }
            join(client, arguments[0], output)
        case "/who":
            send(who(in: client.room), to: id, output)
        case "/rooms":
            send(roomsReply(), to: id, output)
        case "/msg":
            privateMessage(rest, from: client, output)
        case "/stats":
            send(Replies.stats(stats(transport: output.transportStats()).keyValues), to: id, output)
        case "/help":
            for line in Replies.help { send(line, to: id, output) }
        case "/upload":
            upload(arguments, from: client, output)
        case "/files":
            guard fileSharing != nil else { return send(Replies.sharingOff, to: id, output) }
            send(Replies.files(catalog.sorted), to: id, output)
        case "/download":
            guard fileSharing != nil else { return send(Replies.sharingOff, to: id, output) }
            guard arguments.count == 1 else { return send(Replies.usageDownload, to: id, output) }
            guard catalog.size(of: arguments[0]) != nil else { return send(Replies.noSuchFile(arguments[0]), to: id, output) }
            downloadFollows = arguments[0]
        case "/quit":
            let reason = Self.afterSpaces(rest)
            send(Replies.bye, to: id, output)
            remove(client, reason: .quit(reason.isEmpty ? nil : String(decoding: reason, as: UTF8.self)), output)
        default:
            send(Replies.unknownCommand(word), to: id, output)
        }
    }

    private func changeNick(of client: Client, to nick: String, _ output: some ChatOutput) {
        guard Self.isValidName(nick) else { return send(Replies.invalidNick(nick), to: client.id, output) }
        let key = nick.asciiLowercased
        let oldKey = client.nick.asciiLowercased
        if key != oldKey && (nicks[key] != nil || claims[key] != nil || replica?.holder(of: key) != nil) {
            return send(Replies.nickTaken(nick), to: client.id, output)
        }
        if key != oldKey && linked {
            // A claim (§6): every server decides it alike, where it falls in
            // the ordered stream; this server answers when it comes back.
            // Guest names too: a `/nick guest7` typed while another server
            // welcomes its guest7 loses or wins like any other claim.
            let since = clock()
            client.claim = (nick, since)
            claims[key] = client.id
            holdFollows = true
            return publish(.nick(remoteID(of: client), since: since, nick: nick), output)
        }
        rename(client, to: nick, reply: Replies.youAreNow(nick), output)
    }

    /// Gives `client` `nick` (free, or its own in another case): it hears
    /// `reply`, its room the change, the other servers the claim (unless
    /// they decided it already: `publishing` false).
    private func rename(
        _ client: Client, to nick: String, reply: [UInt8], since: Int64? = nil, publishing: Bool = true, _ output: some ChatOutput
    ) {
        let old = client.nick
        let oldKey = old.asciiLowercased
        let oldSince = client.since
        nicks[oldKey] = nil
        releaseGuestNumber(oldKey)
        nicks[nick.asciiLowercased] = client.id
        client.nick = nick
        if replica != nil && oldKey != nick.asciiLowercased {
            client.since = since ?? clock()
            client.confirmedKey = nil
        }
        client.room.who = nil
        send(reply, to: client.id, output)
        if nick != old { broadcast(Replies.renamed(from: old, to: nick), in: client.room, except: client.id, output) }
        if publishing { publish(.rename(remoteID(of: client), since: client.since, nick: nick), output) }
        if oldKey != nick.asciiLowercased { releaseKey(oldKey, id: client.id, since: oldSince, output) }
    }

    private func join(_ client: Client, _ argument: String, _ output: some ChatOutput) {
        let spelling = argument.hasPrefix("#") ? String(argument.dropFirst()) : argument
        guard Self.isValidName(spelling) else { return send(Replies.invalidRoom(argument), to: client.id, output) }
        let key = spelling.asciiLowercased
        if key == client.room.key { return send(Replies.alreadyIn(client.room.name), to: client.id, output) }
        if replica != nil && key != Self.lobby && rooms[key] == nil && joining[key] == nil { output.subscribe(room: key) }
        if linked && key != Self.lobby && !subscribedRooms.contains(key) {
            // Every line said in the room from the join on must reach this
            // client: the join waits until this server hears the room.
            joining[key, default: []].append(client.id)
            client.pendingJoin = spelling
            holdFollows = true
            return
        }
        if !enter(client, key: key, spelling: spelling, output) { holdFollows = true }
    }

    /// Moves `client` to room `key` (which this server hears), telling
    /// it, both rooms and the other servers. In a cluster, the client is
    /// told once its event has come back (`confirmJoin`): a `/who` or
    /// `/rooms` on another server after `* you joined` counts it. Returns
    /// whether it was told now.
    @discardableResult
    private func enter(_ client: Client, key: String, spelling: String, _ output: some ChatOutput) -> Bool {
        leaveRoom(client, reason: nil, output)
        let room = findOrCreateRoom(key: key, spelling: spelling)
        roomList = nil
        room.members.append(client.id)
        client.room = room
        broadcast(Replies.joined(nick: client.nick, room: room.name), in: room, except: client.id, output)
        guard replica != nil && linked else {
            send(Replies.youJoined(room.name, count: count(of: room)), to: client.id, output)
            return true
        }
        client.joinUnconfirmed = true
        heldOutput[client.id] = HeldOutput()
        publish(.join(remoteID(of: client), room: roomSpelling(of: room)), output)
        return false
    }

    /// `client`'s join came back through the stream (or the link went
    /// down, or it leaves): it hears `* you joined #room (K here)`, K
    /// counting everyone in the room by the join's place in the stream
    /// (not the clients here whose own joins came after it), then what was
    /// held for it, and its input is handled again unless it leaves.
    private func confirmJoin(_ client: Client, resume: Bool, _ output: some ChatOutput) {
        guard client.joinUnconfirmed else { return }
        client.joinUnconfirmed = false
        let held = heldOutput.removeValue(forKey: client.id)?.lines ?? []
        let room = client.room
        if let heard = heardCounts.removeValue(forKey: client.id) {
            send(Replies.youJoined(room.name, count: heard), to: client.id, output)
        } else {
            let here = room.members.count { $0 == client.id || clients[$0]?.joinUnconfirmed != true }
            send(Replies.youJoined(room.name, count: here + (replica?.count(in: room.key) ?? 0)), to: client.id, output)
        }
        for line in held { output.send(line, to: client.id) }
        if resume { output.resume(client.id) }
    }

    /// `/msg NICK text`: the text is every byte after the spaces that follow
    /// the nick, kept as it is.
    private func privateMessage(_ rest: ArraySlice<UInt8>, from client: Client, _ output: some ChatOutput) {
        let afterCommand = Self.afterSpaces(rest)
        let nickEnd = afterCommand.firstIndex(of: 0x20) ?? afterCommand.endIndex
        let nick = String(decoding: afterCommand[..<nickEnd], as: UTF8.self)
        let text = Self.afterSpaces(afterCommand[nickEnd...])
        guard !nick.isEmpty, !text.isEmpty else { return send(Replies.usageMsg, to: client.id, output) }
        let key = nick.asciiLowercased
        if let targetID = nicks[key], let target = clients[targetID] {
            send(Replies.privateMessage(from: client.nick, text: text), to: targetID, output)
            send(Replies.sentTo(target.nick), to: client.id, output)
        } else if let replica, let remote = replica.holder(of: key), let target = replica.members[remote] {
            publish(.privateMessage(remoteID(of: client), to: remote, text: Array(text)), output)
            send(Replies.sentTo(target.nick), to: client.id, output)
        } else {
            send(Replies.noSuchNick(nick), to: client.id, output)
        }
    }

    // MARK: - Files

    /// `/upload NAME SIZE`: a usage error consumes nothing; otherwise SIZE
    /// raw bytes follow whatever the answer, and a refusal goes out now.
    private func upload(_ arguments: [String], from client: Client, _ output: some ChatOutput) {
        guard arguments.count == 2, let size = Self.byteCount(arguments[1]) else {
            return send(Replies.usageUpload, to: client.id, output)
        }
        let name = arguments[0]
        var accepted: String?
        if let sharing = fileSharing {
            if !FileName.isValid(name) {
                send(Replies.invalidFileName(name), to: client.id, output)
            } else if size > sharing.maxUpload {
                send(Replies.fileTooLarge(max: sharing.maxUpload), to: client.id, output)
            } else if !catalog.reserve(size, quota: sharing.quota) {
                send(Replies.storageFull, to: client.id, output)
            } else {
                client.reserved += size
                accepted = name
            }
        } else {
            send(Replies.sharingOff, to: client.id, output)
        }
        rawFollows = UploadStart(size: size, name: accepted)
    }

    /// 1-18 decimal digits.
    static func byteCount(_ text: String) -> Int? {
        let digits = text.utf8
        guard (1...18).contains(digits.count), digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return digits.reduce(0) { $0 * 10 + Int($1 - 0x30) }
    }

    /// The store has `id`'s upload of `size` bytes on disk, flushed: the name
    /// it goes under (the requested one or the first free `name-N`, none
    /// of `avoiding`), or nil when the client is gone (the store deletes it:
    /// an upload whose connection ended leaves nothing behind).
    public func claimUpload(_ id: ConnectionID, requested: String, size: Int, avoiding: Set<String> = []) -> String? {
        guard let client = clients[id], client.reserved >= size else { return nil }
        client.reserved -= size
        guard let name = catalog.claim(requested, size: size, avoiding: avoiding) else {
            catalog.release(size)
            return nil
        }
        return name
    }

    /// A claimed name could not be used after all (taken on disk): the
    /// upload is `id`'s again, to claim another name or fail.
    public func unclaimUpload(_ id: ConnectionID, name: String) {
        guard let size = catalog.size(of: name) else { return }
        catalog.unclaim(name)
        if let client = clients[id] { client.reserved += size } else { catalog.release(size) }
    }

    /// The upload is in place under `name`: the sender hears `* stored`,
    /// its room `* nick shared` (nobody, if it left meanwhile).
    public func uploadStored(_ id: ConnectionID, name: String, size: Int, sha256: String, output: some ChatOutput) {
        guard let client = clients[id] else { return }
        send(Replies.stored(name, size: size, sha256: sha256), to: id, output)
        broadcast(Replies.shared(nick: client.nick, name: name, size: size), in: client.room, except: id, output)
        // Heard by every server, not only those with members in the room: one
        // that shares the upload directory lists the file too. (One stream,
        // so it still follows the sender's earlier lines.)
        publish(.shared(remoteID(of: client), name: name, size: size), output)
    }

    /// The store found `name` (`size` bytes) in the upload directory, put
    /// there by another server sharing it or by hand: `/files` lists it and
    /// `/download` sends it from now on (unless a name taken here meanwhile
    /// holds it). Returns whether it is listed now and was not before.
    @discardableResult
    public func fileFound(_ name: String, size: Int) -> Bool {
        guard fileSharing != nil else { return false }
        return catalog.found(name, size: size)
    }

    /// The store listed the whole upload directory (a SIGHUP, or the
    /// cluster link back): the files there that `/files` does not list are
    /// listed from now on, and listed ones no longer there (deleted by hand)
    /// are not. Returns how many of each.
    public func directoryListed(_ entries: [FileCatalog.Entry]) -> (listed: Int, unlisted: Int) {
        guard fileSharing != nil else { return (0, 0) }
        let unlisted = catalog.keep(only: Set(entries.map(\.name)))
        return (entries.count { catalog.found($0.name, size: $0.size) }, unlisted)
    }

    /// A `/download` found `name` gone from the upload directory (deleted by
    /// hand): it is no longer listed, and its bytes no longer count against
    /// the quota. (The client hears `! no such file`.)
    @discardableResult
    public func fileMissing(_ name: String) -> Bool {
        catalog.forget(name)
    }

    /// The store could not keep `id`'s upload of `size` bytes (a disk error):
    /// the quota it held is free again and the client hears why.
    public func uploadFailed(_ id: ConnectionID, size: Int, reason: String, output: some ChatOutput) {
        guard let client = clients[id] else { return }
        let released = min(size, client.reserved)
        client.reserved -= released
        catalog.release(released)
        send(Replies.uploadFailed(reason), to: id, output)
    }

    // MARK: - Lists

    /// The nicks in room `key` as this server sees them: its clients, and
    /// the others' in its replica. (Linked, `/who` reads Redis's keys
    /// instead; tests check the two agree.)
    func nicksSeen(in key: String) -> [String] {
        (rooms[key]?.members.compactMap { clients[$0]?.nick } ?? []) + (replica?.nicks(in: key) ?? [])
    }

    /// Sorted by the byte order of the lower-cased nick, each key built once.
    private func who(in room: Room) -> [UInt8] {
        if let who = room.who { return who }
        let nicks = nicksSeen(in: room.key)
        let sorted = nicks.map { (key: Array($0.asciiLowercased.utf8), nick: $0) }
            .sorted { $0.key.lexicographicallyPrecedes($1.key) }.map(\.nick)
        let reply = Replies.who(room: room.name, nicks: sorted)
        room.who = reply
        return reply
    }

    private func roomsReply() -> [UInt8] {
        if let roomList { return roomList }
        var counts = rooms.values.map { (key: $0.key, name: $0.name, count: count(of: $0)) }
        if let replica {
            for (key, room) in replica.rooms where rooms[key] == nil { counts.append((key, room.name, room.members.count)) }
        }
        let list = counts.map { (key: Array($0.key.utf8), entry: $0) }
            .sorted { $0.key.lexicographicallyPrecedes($1.key) }.map { ($0.entry.name, $0.entry.count) }
        let reply = Replies.rooms(list)
        roomList = reply
        return reply
    }

    // MARK: - Registry

    private func remove(_ client: Client, reason: DisconnectReason, _ output: some ChatOutput) {
        confirmJoin(client, resume: false, output)  // what was held for it goes out before the close
        if client.commandWaiting != nil { eventWaiters.removeAll { $0 == client.id } }
        heardCounts[client.id] = nil
        if let claim = client.claim { claims[claim.nick.asciiLowercased] = nil }
        if let spelling = client.pendingJoin {
            let key = spelling.asciiLowercased
            joining[key]?.removeAll { $0 == client.id }
            if joining[key]?.isEmpty == true { joining[key] = nil }
            roomUnheardIfEmpty(key, output)
        }
        leaveRoom(client, reason: reason, output)
        publish(.bye(remoteID(of: client), suffix: reason.suffix), output)
        let key = client.nick.asciiLowercased
        releaseKey(key, id: client.id, since: client.since, output)
        // A claim in flight may take its key yet: released after it.
        if let claim = client.claim { releaseKey(claim.nick.asciiLowercased, id: client.id, since: claim.since, output) }
        nicks[key] = nil
        releaseGuestNumber(key)
        clients[client.id] = nil
        catalog.release(client.reserved)
        if reason.isTheClients && replica != nil && linked {
            closingAfterBye.insert(client.id)
        } else {
            output.close(client.id)
        }
    }

    /// Takes the client out of its room; the room disappears when empty,
    /// otherwise it hears `* nick left #room` (with the reason, if any).
    private func leaveRoom(_ client: Client, reason: DisconnectReason?, _ output: some ChatOutput) {
        let room = client.room
        roomList = nil
        if let index = room.members.firstIndex(of: client.id) { room.members.remove(at: index) }
        if room.members.isEmpty {
            rooms[room.key] = nil
            roomUnheardIfEmpty(room.key, output)
        } else {
            let notice = Replies.left(nick: client.nick, room: room.name, reason: reason ?? .endOfInput)
            broadcast(notice, in: room, except: client.id, output)
        }
    }

    private func findOrCreateRoom(key: String, spelling: String) -> Room {
        if let room = rooms[key] { return room }
        // A room other servers have keeps the spelling it has there.
        let room = Room(key: key, name: replica?.rooms[key]?.name ?? "#" + spelling)
        rooms[key] = room
        return room
    }

    /// `guestN` with the smallest N >= 1 no connected nick equals ignoring case.
    /// `guestFloor` only rises past taken numbers and falls when a `guestN` nick
    /// is released, so a burst of connects costs O(1) each, not O(clients).
    private func allocateGuestNick() -> String {
        var number = guestFloor
        while nicks["guest\(number)"] != nil || claims["guest\(number)"] != nil || replica?.holder(of: "guest\(number)") != nil {
            number += 1
        }
        guestFloor = number + 1
        return "guest\(number)"
    }

    private func releaseGuestNumber(_ key: String) {
        guard let number = Self.guestNumber(key) else { return }
        guestFloor = min(guestFloor, number)
    }

    /// N of a lower-cased `guestN` (N >= 1, no leading zero), else nil.
    static func guestNumber(_ key: String) -> Int? {
        guard key.hasPrefix("guest") else { return nil }
        let digits = key.dropFirst(5)
        guard let first = digits.first, first != "0", digits.allSatisfy(\.isASCIIDigit), digits.count <= 18 else { return nil }
        return Int(digits)
    }

    // MARK: - Cluster (§6)

    /// Members here and on the other servers.
    private func count(of room: Room) -> Int { room.members.count + (replica?.count(in: room.key) ?? 0) }

    /// The room's name without `#`, as events carry it.
    private func roomSpelling(of room: Room) -> String { String(room.name.dropFirst()) }

    private func remoteID(of client: Client) -> RemoteClientID {
        RemoteClientID(node: replica?.node ?? "", id: client.id.rawValue)
    }

    private func publish(_ event: @autoclosure () -> ClusterEvent, room: String? = nil, _ output: some ChatOutput) {
        if replica != nil && linked { output.publish(event(), room: room) }
    }

    /// `key`, held by this server's `id` since `since`, is free again: its
    /// Redis key goes (after the event that freed it, published before).
    private func releaseKey(_ key: String, id: ConnectionID, since: Int64, _ output: some ChatOutput) {
        guard let replica, linked else { return }
        output.releaseNick(key, holder: NickKey.value(RemoteClientID(node: replica.node, id: id.rawValue), since: since))
    }

    /// Cluster (§6): every nick this server's clients hold, lower-cased, with
    /// its holder (`NickKey.value`): what the link keeps in Redis and renews
    /// every heartbeat.
    public func ownNickKeys() -> [(key: String, holder: String)] {
        guard let replica else { return [] }
        return clients.values.map { client in
            (client.nick.asciiLowercased, NickKey.value(RemoteClientID(node: replica.node, id: client.id.rawValue), since: client.since))
        }
    }

    /// Cluster (§6): Redis refused one of this server's claims (a `nick` or
    /// a `hello`): the nick's key is held by another client, so the event
    /// was not published. Decided as a claim that lost in the stream: the
    /// client hears `! nick taken`, or the next free guest number is claimed.
    public func claimRefused(_ event: ClusterEvent, output: some ChatOutput) {
        guard replica != nil, linked else { return }  // (the link went down meanwhile: decided then)
        switch event {
        case .nick(let who, let since, let nick):
            guard let client = clients[ConnectionID(who.id)], let claim = client.claim, claim.nick == nick, claim.since == since
            else { return }
            decide(client, claim: claim, taken: true, output)
        case .hello(let who, let since, let nick, _):
            let id = ConnectionID(who.id)
            guard let pending = welcoming[id], pending.nick == nick, pending.since == since else { return }
            _ = takeWelcome(id)
            claimGuestNick(for: id, held: pending.held, output)
        default:
            break
        }
    }

    /// This server no longer has anyone in room `key` (nor waiting to
    /// join it): it stops hearing the room's channel.
    private func roomUnheardIfEmpty(_ key: String, _ output: some ChatOutput) {
        guard replica != nil, key != Self.lobby, rooms[key] == nil, joining[key] == nil else { return }
        subscribedRooms.remove(key)
        output.unsubscribe(room: key)
    }

    /// Redis confirmed that this server hears room `key`'s channel: the
    /// clients waiting to join it join, in the order they asked.
    public func subscribed(room key: String, output: some ChatOutput) {
        guard linked, rooms[key] != nil || joining[key] != nil else { return }
        subscribedRooms.insert(key)
        guard let waiting = joining.removeValue(forKey: key) else { return }
        for id in waiting {
            guard let client = clients[id], let spelling = client.pendingJoin else { continue }
            client.pendingJoin = nil
            if enter(client, key: key, spelling: spelling, output) { output.resume(id) }
        }
    }

    /// The commands whose answer depends on what the other servers did.
    /// (`/who` and `/rooms` ask Redis's keys instead, whose answer comes
    /// in the stream's order.)
    private static let readsTheCluster: Set<String> = ["/msg", "/nick", "/join"]

    /// The link applied the events that had reached this server: the
    /// commands waiting for them run now (without waiting again), in the
    /// order they came, and their clients' input is handled again.
    public func eventsApplied(output: some ChatOutput) {
        let waiting = eventWaiters
        eventWaiters = []
        for id in waiting {
            guard let client = clients[id], let line = client.commandWaiting else { continue }
            client.commandWaiting = nil
            command(line, from: client, output, eventsApplied: true)
            holdFollows = false  // (a claim or a join holds the client by its own state)
            if clients[id]?.isHeld == false { output.resume(id) }
        }
    }

    /// The link to the other servers is up (again): ask for their clients
    /// and tell them ours. (The link hears the channel of every room this
    /// server has members in before it calls this.)
    public func clusterUp(output: some ChatOutput) {
        guard let replica else { return }
        linked = true
        subscribedRooms = Set(rooms.keys.filter { $0 != Self.lobby })
        output.publish(.sync(node: replica.node), room: nil)
        announceClients(output)
        // Uploads told while this link was down were not heard.
        if fileSharing != nil { output.lookForFiles() }
    }

    /// The link is down: only this server's clients can be heard. The
    /// others are forgotten until it is back, and the claims in flight are
    /// decided here, as a standalone server would.
    public func clusterDown(output: some ChatOutput) {
        guard replica != nil else { return }
        linked = false
        subscribedRooms = []
        for client in clients.values { client.confirmedKey = nil }
        for id in claims.values.sorted() {
            guard let client = clients[id], let claim = client.claim else { continue }
            decide(client, claim: claim, taken: nicks[claim.nick.asciiLowercased] != nil, output)
        }
        // Connections waiting for their welcome are welcomed here, with the
        // guest nick they claimed (nobody here could take it meanwhile).
        for id in welcoming.keys.sorted() {
            let pending = takeWelcome(id)!
            welcome(id, nick: pending.nick, since: pending.since, output)
            if pending.held { output.resume(id) }
        }
        claims = [:]
        for id in closingAfterBye.sorted() { output.close(id) }
        closingAfterBye = []
        // Joins waiting for their event are told here, as a standalone
        // server would.
        for id in heldOutput.keys.sorted() {
            if let client = clients[id] { confirmJoin(client, resume: true, output) }
        }
        // Joins waiting for a room's channel are made here. (Each room's
        // waiters stay listed until their turn, so a room emptied by one of
        // them is not let go while others still wait to join it.)
        for key in joining.keys.sorted(by: { $0.utf8.lexicographicallyPrecedes($1.utf8) }) {
            for id in joining.removeValue(forKey: key) ?? [] {
                guard let client = clients[id], let spelling = client.pendingJoin else { continue }
                client.pendingJoin = nil
                enter(client, key: key, spelling: spelling, output)
                output.resume(id)
            }
        }
        announcedSince = [:]
        if !replica!.isEmpty {
            replica!.removeAll()
            listsChanged()
        }
        // Commands waiting for events or for Redis's keys run now, answered as alone.
        heardCounts = [:]
        for id in clients.keys.sorted() {
            guard let client = clients[id], let line = client.asking else { continue }
            client.asking = nil
            command(line, from: client, output)
            holdFollows = false
            if !client.isHeld { output.resume(id) }
        }
        eventsApplied(output: output)
    }

    /// Cluster (§6): Redis's membership keys answered a question of this
    /// server's (`ChatOutput.ask`), or counted a room for its `hello` or
    /// `join`; heard in the stream's order, after every event published
    /// before the question.
    public func answered(_ id: ConnectionID, _ answer: ClusterAnswer, output: some ChatOutput) {
        guard linked else { return }  // (asked before the link went down: answered then)
        if case .count(let count) = answer {
            if welcoming[id] != nil || clients[id]?.joinUnconfirmed == true { heardCounts[id] = count }
            return
        }
        guard let client = clients[id], let line = client.asking else { return }
        let word = String(decoding: line.prefix { $0 != 0x20 }, as: UTF8.self).asciiLowercased
        switch answer {
        case .who(let nicks) where word == "/who":
            let sorted = nicks.map { (key: Array($0.asciiLowercased.utf8), nick: $0) }
                .sorted { $0.key.lexicographicallyPrecedes($1.key) }.map(\.nick)
            send(Replies.who(room: client.room.name, nicks: sorted), to: id, output)
        case .rooms(let list) where word == "/rooms":
            // A room this server has keeps the spelling it shows here.
            let sorted = list.filter { $0.count > 0 }.map { (key: Array($0.key.utf8), entry: $0) }
                .sorted { $0.key.lexicographicallyPrecedes($1.key) }
                .map { (rooms[$0.entry.key]?.name ?? "#" + $0.entry.spelling, $0.entry.count) }
            send(Replies.rooms(sorted), to: id, output)
        default:
            return
        }
        client.asking = nil
        if !client.isHeld { output.resume(id) }
    }

    /// A claim of this server's client is decided: it takes the nick or
    /// hears that it is taken, and its next lines are handled again.
    private func decide(_ client: Client, claim: (nick: String, since: Int64), taken: Bool, _ output: some ChatOutput) {
        let key = claim.nick.asciiLowercased
        client.claim = nil
        if claims[key] == client.id { claims[key] = nil }
        if taken {
            send(Replies.nickTaken(claim.nick), to: client.id, output)
        } else {
            rename(client, to: claim.nick, reply: Replies.youAreNow(claim.nick), since: claim.since, publishing: false, output)
            if linked { client.confirmedKey = key }
        }
        if client.clashWaits {
            client.clashWaits = false
            settleClash(client.nick, output)
        }
        output.resume(client.id)
    }

    /// Whether a claim of `key` by `who`, come in the stream now, loses:
    /// someone took the nick earlier in the stream. Every server answers
    /// alike (it holds the same replica, and its own clients' nicks that
    /// count were taken in the stream too).
    private func claimLoses(_ key: String, by who: RemoteClientID) -> Bool {
        if let localID = nicks[key], clients[localID]?.confirmedKey == key { return true }
        if let holder = replica?.holder(of: key), holder != who { return true }
        return false
    }

    /// One of this server's events came back through the stream: a claim
    /// is decided; a nick it announced is now known to every server.
    private func ownEventReturned(_ event: ClusterEvent, output: some ChatOutput) {
        switch event {
        // (`since` tells the client that sent it from a later connection
        // that got the same descriptor.)
        case .nick(let who, let since, let nick):
            guard let client = clients[ConnectionID(who.id)] else { return }
            if let claim = client.claim, claim.nick == nick, claim.since == since {
                let loses = claimLoses(nick.asciiLowercased, by: who)
                decide(client, claim: claim, taken: loses, output)
                // (Its key was free, so the holder this server knew of had
                // left.) The membership keys took the claim's nick: the
                // client's own is told again (every server holds it already).
                if loses {
                    releaseKey(nick.asciiLowercased, id: client.id, since: since, output)
                    publish(.rename(who, since: client.since, nick: client.nick), output)
                }
            }
        case .rename(let who, let since, let nick):
            guard let client = clients[ConnectionID(who.id)], client.nick == nick, client.since == since else { return }
            client.confirmedKey = nick.asciiLowercased
        case .join(let who, let room):
            guard let client = clients[ConnectionID(who.id)], client.room.key == room.asciiLowercased else { return }
            confirmJoin(client, resume: true, output)
        case .bye(let who, _):
            closeAfterBye(ConnectionID(who.id), output)
        case .hello(let who, let since, let nick, _):
            let id = ConnectionID(who.id)
            guard let pending = welcoming[id], pending.nick == nick, pending.since == since else { return }
            // A guest claim: welcomed with it, or the next free one is claimed.
            _ = takeWelcome(id)
            if claimLoses(nick, by: who) {
                heardCounts[id] = nil
                releaseKey(nick, id: id, since: since, output)
                return claimGuestNick(for: id, held: pending.held, output)
            }
            welcome(id, nick: nick, since: since, count: heardCounts.removeValue(forKey: id), output)
            clients[id]!.confirmedKey = nick
            if pending.held { output.resume(id) }
        case .here(let who, let since, let nick, _):
            guard let client = clients[ConnectionID(who.id)], client.nick == nick, client.since == since else { return }
            client.confirmedKey = nick.asciiLowercased
        default:
            break
        }
    }

    /// Another server is gone: each of its clients leaves, `suffix` after
    /// the notice (` (server lost)`).
    public func nodeGone(_ node: String, suffix: String, output: some ChatOutput) {
        guard let replica, node != replica.node else { return }
        announcedSince[node] = nil
        for who in replica.clients(of: node) { remoteLeft(who, suffix: suffix, output) }
    }

    /// An event from the stream: another server's, or this one's come back
    /// (which decides this server's claims).
    public func apply(_ event: ClusterEvent, output: some ChatOutput) {
        guard let node = replica?.node else { return }
        if event.isFrom(node) && linked {
            if case .sync = event { return }
            return ownEventReturned(event, output: output)
        }
        switch event {
        case .sync(let asker):
            guard asker != node else { return }
            announceClients(output)
            // The asker is new or back: it may have stored files that this
            // server was not told of.
            if fileSharing != nil { output.lookForFiles() }
        case .announced(let other, let keeping):
            // Its clients not listed left while its link was down.
            let listed = announcedSince.removeValue(forKey: other) ?? []
            let kept = Set(keeping.map { RemoteClientID(node: other, id: $0) })
            for who in replica!.clients(of: other) where !listed.contains(who) && !kept.contains(who) {
                remoteLeft(who, suffix: "", output)
            }
        case .hello(let who, let since, let nick, let room), .here(let who, let since, let nick, let room):
            guard who.node != node else { return }
            if case .here = event { announcedSince[who.node, default: []].insert(who) }
            // A guest claim that came after another's: refused everywhere
            // alike (its own server claims the next free one).
            if case .hello = event, claimLoses(nick.asciiLowercased, by: who) { return }
            let key = room.asciiLowercased
            replica!.add(who, ClusterReplica.Member(nick: nick, since: since, roomKey: key), spelling: room)
            listsChanged(room: key)
            if case .hello = event, let local = rooms[key] {
                broadcast(Replies.joined(nick: nick, room: local.name), in: local, except: ConnectionID(-1), output)
            }
            settleClash(nick, output)
        case .join(let who, let room):
            guard who.node != node, let member = replica!.members[who] else { return }
            let key = room.asciiLowercased
            guard key != member.roomKey else { return }
            let oldName = rooms[member.roomKey]?.name ?? replica!.rooms[member.roomKey]?.name
            replica!.move(who, to: key, spelling: room)
            listsChanged(room: member.roomKey)
            listsChanged(room: key)
            if let old = rooms[member.roomKey], let oldName {
                broadcast(Replies.left(nick: member.nick, room: oldName, reason: .endOfInput), in: old, except: ConnectionID(-1), output)
            }
            if let new = rooms[key] {
                broadcast(Replies.joined(nick: member.nick, room: new.name), in: new, except: ConnectionID(-1), output)
            }
        case .nick(let who, let since, let nick), .rename(let who, let since, let nick):
            guard who.node != node, let member = replica!.members[who] else { return }
            let oldKey = member.nick.asciiLowercased
            let key = nick.asciiLowercased
            // A claim that came after another's: refused everywhere alike
            // (its own server tells its client). A rename is never refused.
            if case .nick = event, key != oldKey && claimLoses(key, by: who) { return }
            replica!.rename(who, to: nick, since: since)
            releaseGuestNumber(oldKey)
            listsChanged(room: member.roomKey)
            if nick != member.nick, let room = rooms[member.roomKey] {
                broadcast(Replies.renamed(from: member.nick, to: nick), in: room, except: ConnectionID(-1), output)
            }
            settleClash(nick, output)
        case .say(let who, let text):
            guard who.node != node, let member = replica!.members[who], let room = rooms[member.roomKey] else { return }
            broadcast(Replies.message(from: member.nick, text: text), in: room, except: ConnectionID(-1), output)
        case .privateMessage(let who, let to, let text):
            guard who.node != node, to.node == node, let member = replica!.members[who], clients[ConnectionID(to.id)] != nil else {
                return
            }
            send(Replies.privateMessage(from: member.nick, text: text[...]), to: ConnectionID(to.id), output)
        case .bye(let who, let suffix):
            guard who.node != node else { return }
            remoteLeft(who, suffix: suffix, output)
        case .shared(let who, let name, let size):
            guard who.node != node else { return }
            if fileSharing != nil && catalog.size(of: name) == nil { output.lookForFile(name, size: size) }
            guard let member = replica!.members[who], let room = rooms[member.roomKey] else { return }
            broadcast(Replies.shared(nick: member.nick, name: name, size: size), in: room, except: ConnectionID(-1), output)
        }
    }

    /// Every local client, as `here` events, then `announced`, which
    /// tells the others that this server's clients not listed are gone
    /// (the answer to `sync`, and what a server says when its link is up).
    private func announceClients(_ output: some ChatOutput) {
        let here = clients.keys.sorted().compactMap { id -> ClusterEvent? in
            clients[id].map { .here(remoteID(of: $0), since: $0.since, nick: $0.nick, room: roomSpelling(of: $0.room)) }
        }
        output.announce(here + [.announced(node: replica!.node, keeping: welcoming.keys.sorted().map(\.rawValue))])
    }

    private func remoteLeft(_ who: RemoteClientID, suffix: String, _ output: some ChatOutput) {
        guard let member = replica?.remove(who) else { return }
        releaseGuestNumber(member.nick.asciiLowercased)
        listsChanged(room: member.roomKey)
        if let room = rooms[member.roomKey] {
            broadcast(Array("* \(member.nick) left \(room.name)\(suffix)\n".utf8), in: room, except: ConnectionID(-1), output)
        }
    }

    /// A remote claim of `nick` that a client here holds too: the earlier
    /// claim keeps it; if that is the remote one, the client here becomes a
    /// guest, and hears why. (A later remote claim is settled by its own
    /// server, which sees this one's claim the same way.)
    private func settleClash(_ nick: String, _ output: some ChatOutput) {
        let key = nick.asciiLowercased
        guard let replica, let localID = nicks[key], let local = clients[localID], let remote = replica.holder(of: key),
            let member = replica.members[remote]
        else { return }
        guard (member.since, remote.node, remote.id) < (local.since, replica.node, local.id.rawValue) else { return }
        // Its claim of another nick is in flight, and the other servers will
        // apply it where it falls: renaming it now would undo it there.
        if local.claim != nil {
            local.clashWaits = true
            return
        }
        let guest = allocateGuestNick()
        rename(local, to: guest, reply: Replies.youAreNowTakenElsewhere(guest), output)
    }

    /// The replica changed: `/rooms`, and `/who` of `room` (every room if nil), are built again.
    private func listsChanged(room key: String? = nil) {
        roomList = nil
        if let key { rooms[key]?.who = nil } else { for room in rooms.values { room.who = nil } }
    }

    // MARK: - Output

    @inline(__always)
    private func send(_ line: [UInt8], to id: ConnectionID, _ output: some ChatOutput) {
        messagesOut += 1
        if !heldOutput.isEmpty && heldOutput[id] != nil {
            heldOutput[id]!.lines.append(line)
            heldOutput[id]!.bytes += line.count
            if heldOutput[id]!.bytes > Self.maxHeldOutput, let client = clients[id] { confirmJoin(client, resume: true, output) }
            return
        }
        output.send(line, to: id)
    }

    private func broadcast(_ line: [UInt8], in room: Room, except sender: ConnectionID, _ output: some ChatOutput) {
        guard heldOutput.isEmpty else {
            for member in room.members where member != sender { send(line, to: member, output) }
            return
        }
        for member in room.members where member != sender {
            messagesOut += 1
            output.send(line, to: member)
        }
    }

    // MARK: - Names

    /// 1–32 of `A–Z a–z 0–9 _ -` (nicks and room names alike).
    static func isValidName(_ name: String) -> Bool {
        let bytes = name.utf8
        guard (1...32).contains(bytes.count) else { return false }
        return bytes.allSatisfy { byte in
            (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
                || byte == 0x5F || byte == 0x2D
        }
    }

    static func afterSpaces(_ bytes: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        bytes.drop { $0 == 0x20 }
    }

}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}

extension String {
    /// Lower-cases A–Z only. Names and command words are ASCII; Unicode case
    /// folding would let the Kelvin sign (U+212A) match `k`.
    var asciiLowercased: String {
        String(decoding: utf8.map { $0 >= 0x41 && $0 <= 0x5A ? $0 | 0x20 : $0 }, as: UTF8.self)
    }
}

// MARK: - Inspection (for checkers, not for the server)

extension ChatCore {
    /// A copy of the registry as it is now. O(clients + rooms); read-only.
    public func registrySnapshot() -> RegistrySnapshot {
        RegistrySnapshot(
            clients: clients.values.sorted { $0.id < $1.id }.map { client in
                RegistrySnapshot.Client(
                    id: client.id, nick: client.nick, roomKey: client.room.key,
                    bufferedBytes: client.framer.bufferedByteCount)
            },
            rooms: rooms.values.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }.map { room in
                RegistrySnapshot.Room(key: room.key, name: room.name, members: room.members)
            },
            nickIndex: nicks)
    }
}
