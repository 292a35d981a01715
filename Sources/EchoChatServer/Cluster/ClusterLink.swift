import EchoChatCore
import EchoChatPOSIX
import Synchronization

/// `--cluster redis://…`: this server's link to the cluster's Redis
/// (docs/cluster.md).
///
/// - Thread: one of its own, whatever the strategy, which alone owns the
///   two Redis connections (commands, pipelined; and a subscriber). It
///   reaches clients only through the chat hub and the strategy's waker,
///   as the file store's thread does, so every strategy gets the cluster
///   from this one file, and no serving loop ever waits for Redis.
/// - Blocking: only in poll(2), over the stop eventfd and the two
///   connections; every request has a deadline (`cluster-timeout`): Redis
///   silent that long counts as down.
/// - Presence: the key `echochat:node:ID` (this instance's token, expiring
///   after two thirds of `cluster-timeout`) is renewed every quarter of it,
///   and the set `echochat:nodes` lists the nodes. Each beat also counts the
///   live ones; a listed node whose key has expired is lost, and the one
///   survivor whose SREM removes it from the set announces it on
///   `echochat:cluster` (exactly once). A clean stop says goodbye there.
/// - Nicks: `echochat:nick:NICK` names its holder (`NickKey`). A claim is
///   one script, SET NX then PUBLISH (`claimScript`): refused, it is never
///   published and the core hears `claimRefused`. Freed nicks are deleted
///   after the event that freed them; the heartbeat renews the rest just
///   before the presence key, so none outlives it.
/// - Failure: a lost connection, a stall, or bytes that are not RESP2 close
///   both connections; the server carries on standalone, its clients are
///   told, and the link tries again with backoff (0.1 s doubling to 5 s).
public final class ClusterLink: Sendable {
    /// This server's name in the cluster.
    public let node: String
    let url: RedisURL
    /// `cluster-timeout`, in nanoseconds.
    let timeout: Int64
    private let logger: Logger
    private let stopBell: Wakeup
    private let thread = Lock<ThreadHandle?>(nil)
    private let shared = Lock(Shared())
    /// Events the hub queued, in its order, for the link's thread to publish.
    private let outbox = Lock(Outbox())
    private let mailBell: Wakeup
    /// The subscriber's descriptor while a session is up (-1 otherwise), the
    /// link's thread reading and applying what it heard, and a serving
    /// thread waiting for that: `eventsPending`.
    private let subscriberDescriptor = Atomic<Int32>(-1)
    private let reading = Atomic<Bool>(false)
    private let appliedWanted = Atomic<Bool>(false)
    /// The nick keys this server set, and their holders: the last
    /// heartbeat's, and claims won since (the link's thread alone uses it).
    private let nickKeysSet = Lock<[String: String]>([:])

    private struct Outbox {
        /// Off while the link is down: the events would be stale when it is
        /// back, and the servers exchange their whole state then instead.
        var accepting = false
        /// What goes to Redis, in the hub's order.
        var items: [Outgoing] = []
        var count = 0
        /// The rooms this server has members in (besides `#lobby`): the
        /// channels a new session subscribes to.
        var rooms: Set<String> = []
        /// Changes to `rooms` since the session last took them, in order
        /// (true: subscribe).
        var roomChanges: [(room: String, hear: Bool)] = []
    }
    /// Random per start: tells this instance's presence key from a stale one.
    private let token: String

    private enum Outgoing {
        /// Consecutive events for one channel: one LF-separated message (one PUBLISH).
        case run(channel: String, events: [UInt8])
        /// A nick claim (`nick`, `hello`): published only if it takes the
        /// nick's key (`claimScript`); counted then.
        case claim(channel: String, event: ClusterEvent)
        /// Nick keys to delete where they still name these holders (`releaseScript`).
        case release(keys: [String], holders: [String])
    }

    /// `echochat:nick:NICK` (lower-cased): who holds NICK (`NickKey.value`).
    static func nickKey(_ key: String) -> String { prefix + "nick:" + key }

    /// KEYS: the nick's key, this node's presence key; ARGV: holder, TTL (ms),
    /// channel, event. Takes the nick if nobody holds it (SET NX), expiring
    /// with this node's presence (so a lost node's nicks are free by the time
    /// it is found lost), and only then publishes the claim: 1, or 0 if taken.
    static let claimScript = """
        local ttl = redis.call('PTTL', KEYS[2])
        if ttl <= 0 then ttl = tonumber(ARGV[2]) end
        if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ttl) then return 0 end
        redis.call('PUBLISH', ARGV[3], ARGV[4])
        return 1
        """
    /// KEYS: nick keys; ARGV: their holders. Deletes each that still names
    /// its holder (a nick freed; a key taken since by another stays).
    static let releaseScript = """
        local freed = 0
        for i, key in ipairs(KEYS) do
          if redis.call('GET', key) == ARGV[i] then redis.call('DEL', key); freed = freed + 1 end
        end
        return freed
        """
    /// KEYS: this node's clients' nick keys; ARGV: TTL (ms), then their
    /// holders. Renews each key that names its holder, and sets each that
    /// nobody holds (a nick given after an outage, or by a `rename`); one
    /// held by another client is left to the clash rule (§6). Returns how
    /// many are held by others.
    static let refreshScript = """
        local others = 0
        for i, key in ipairs(KEYS) do
          local held = redis.call('GET', key)
          if held == ARGV[i + 1] then redis.call('PEXPIRE', key, ARGV[1])
          elseif not held then redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
          else others = others + 1 end
        end
        return others
        """
    /// Keys per script call: a heartbeat for 10,000 clients is ten calls,
    /// none holding Redis for long.
    static let keysPerCall = 1000

    static let prefix = "echochat:"
    static let nodesKey = prefix + "nodes"
    static let channel = prefix + "cluster"
    /// Every server's chat events, in one order (`ClusterEvent`), but
    /// lines said in rooms.
    static let events = prefix + "events"
    /// Lines said in room `key`: heard by the servers with members there.
    static func roomChannel(_ key: String) -> String { prefix + "room:" + key }
    static let roomPrefix = prefix + "room:"
    static func nodeKey(_ node: String) -> String { prefix + "node:" + node }

    private struct Shared {
        var hub: ChatHub?
        var wake: (@Sendable (Connection) -> Void)?
        var up = false
        var liveNodes: [String] = []
        var roundTripMicroseconds = 0
        var linkLosses = 0
        /// Events this server published, PUBLISH commands that carried them,
        /// and events heard from the others.
        var eventsPublished = 0
        var publishes = 0
        var eventsReceived = 0
    }

    public init(url: RedisURL, node: String, timeoutSeconds: Double, logger: Logger) throws(SystemError) {
        self.url = url
        self.node = node
        timeout = Int64(timeoutSeconds * 1e9)
        self.logger = logger
        stopBell = try Wakeup()
        do { mailBell = try Wakeup() } catch {
            stopBell.close()
            throw error
        }
        token = String(UInt64.random(in: 1...UInt64.max), radix: 16)
    }

    /// Where the link delivers what it tells clients (before `start`).
    func attach(hub: ChatHub, wake: @escaping @Sendable (Connection) -> Void) {
        shared.withLock {
            $0.hub = hub
            $0.wake = wake
        }
    }

    /// Starts the link's thread (after the daemon forked). Returns at once:
    /// Redis may be down, and the server serves meanwhile.
    public func start() throws(SystemError) {
        let handle = try Threads.spawn(name: "echochat-cluster") { [self] in run() }
        thread.withLock { $0 = handle }
    }

    /// The server began to shut down: the link's thread publishes what is
    /// queued, says goodbye (so the other servers let this one's clients go
    /// now, not once its connections have lingered) and ends. Returns at once.
    func leave() {
        stopBell.ring()
    }

    /// Says goodbye (if Redis is there to hear it, waiting a second at
    /// most) and stops the thread.
    public func stop() {
        stopBell.ring()
        if let handle = thread.withLock({ handle in defer { handle = nil }; return handle }) { handle.join() }
        stopBell.close()
        mailBell.close()
    }

    /// Whether events have reached this server that the link has not
    /// applied yet: unread on the subscriber, or read and being applied.
    /// If so, the link's thread reads and applies them, then tells the hub
    /// (`ChatHub.eventsApplied`). Called by the core (under the hub lock)
    /// before a command that reads the cluster's state, so that it answers
    /// with everything another server had told its clients by then.
    func eventsPending() -> Bool {
        let descriptor = subscriberDescriptor.load(ordering: .acquiring)
        guard descriptor >= 0 else { return false }
        // The socket first: once the thread took the bytes, `reading` says so until they are applied.
        let pending = (try? Poll.readable([descriptor], timeoutMilliseconds: 0).first) == true || reading.load(ordering: .acquiring)
        if pending {
            appliedWanted.store(true, ordering: .releasing)
            mailBell.ring()
        }
        return pending
    }

    /// Queues `event` to be published (the hub calls it under its lock, so
    /// events leave in the core's order). The link's thread is rung only
    /// when the outbox was empty.
    func publish(_ event: ClusterEvent, room: String?) {
        let channel = room.map(Self.roomChannel) ?? Self.events
        let ring = outbox.withLock { box -> Bool in
            guard box.accepting else { return false }
            let wasEmpty = box.items.isEmpty
            if NickKey.claimed(by: event) != nil {
                box.items.append(.claim(channel: channel, event: event))
                return wasEmpty
            }
            if case .run(channel, var events)? = box.items.last {
                box.items.removeLast()  // (so the bytes are not copied on append)
                events.append(0x0A)
                events += event.encoded
                box.items.append(.run(channel: channel, events: events))
            } else {
                box.items.append(.run(channel: channel, events: event.encoded))
            }
            box.count += 1
            return wasEmpty
        }
        if ring { mailBell.ring() }
    }

    /// From the hub, under its lock: a client of this server no longer
    /// holds nick `key` (as `holder`): its key goes, after what was queued before.
    func releaseNick(_ key: String, holder: String) {
        let ring = outbox.withLock { box -> Bool in
            guard box.accepting else { return false }
            let wasEmpty = box.items.isEmpty
            if case .release(var keys, var holders)? = box.items.last {
                box.items.removeLast()
                keys.append(key)
                holders.append(holder)
                box.items.append(.release(keys: keys, holders: holders))
            } else {
                box.items.append(.release(keys: [key], holders: [holder]))
            }
            return wasEmpty
        }
        if ring { mailBell.ring() }
    }

    /// From the hub, under its lock: this server has members in room `key`
    /// now (`hear`), or no longer. Kept whether the link is up or not: a
    /// new session subscribes to every such room before it is up.
    func hear(room key: String, _ hear: Bool) {
        outbox.withLock { box in
            if hear { box.rooms.insert(key) } else { box.rooms.remove(key) }
            box.roomChanges.append((key, hear))
        }
        mailBell.ring()
    }

    /// From the hub, under its lock: whether events are taken (dropped when not).
    func outbox(accepting: Bool) {
        outbox.withLock { box in
            box.accepting = accepting
            if !accepting {
                box.items = []
                box.count = 0
            }
        }
    }

    /// Room channels this server hears (`#lobby`'s included), for metrics.
    private var roomChannels: Int { outbox.withLock { $0.rooms.count } + 1 }

    /// `/stats`' `node` and `nodes` (the live servers; this one alone while the link is down).
    var statsPairs: [TransportStats.Pair] {
        let nodes = shared.withLock { $0.up ? max(1, $0.liveNodes.count) : 1 }
        return [TransportStats.Pair("node", node), TransportStats.Pair("nodes", String(nodes))]
    }

    /// For metrics: the link's state, its losses and Redis's last round trip.
    var detailPairs: [TransportStats.Pair] {
        shared.withLock {
            [
                TransportStats.Pair("cluster_link_up", $0.up ? "1" : "0"),
                TransportStats.Pair("cluster_link_losses", String($0.linkLosses)),
                TransportStats.Pair("cluster_round_trip_us", String($0.roundTripMicroseconds)),
                TransportStats.Pair("cluster_events_published", String($0.eventsPublished)),
                TransportStats.Pair("cluster_publishes", String($0.publishes)),
                TransportStats.Pair("cluster_events_received", String($0.eventsReceived)),
            ]
        } + [TransportStats.Pair("cluster_room_channels", String(roomChannels))]
    }

    // MARK: - The link's thread

    /// Two connections to Redis while they last.
    private final class Session {
        let commands: RedisConnection
        let subscriber: RedisConnection
        /// Registered and subscribed to every channel of the first
        /// SUBSCRIBE: the link is up.
        var registered = false
        /// The first SUBSCRIBE's channels not yet confirmed.
        var unconfirmed: Set<String> = []
        var subscribed: Bool { unconfirmed.isEmpty }
        /// The subscriber's PING waiting for its pong, and when it was sent.
        var pingSent: Int64?
        var nextBeat: Int64 = 0
        /// When the connections were opened: the link must be up within the timeout.
        let opened = Clock.monotonicNanoseconds()
        /// Messages heard before the link was up (the subscription can be
        /// confirmed before the registration): applied once it is, after the
        /// clients were told and this server's own state went out, in order.
        var early: [RESPValue] = []
        var announced = false

        init(url: RedisURL) throws(RedisFailure) {
            commands = try RedisConnection(url: url)
            do {
                subscriber = try RedisConnection(url: url)
            } catch {
                commands.close()
                throw error
            }
            subscriber.subscriber = true
        }

        var up: Bool { registered && subscribed }

        func close() {
            commands.close()
            subscriber.close()
        }
    }

    private func run() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        var session: Session?
        var retryAt: Int64 = 0
        var backoff: Int64 = 100_000_000
        var failures = 0
        while true {
            var now = Clock.monotonicNanoseconds()
            if session == nil && now >= retryAt {
                do {
                    let opened = try open(now: now)
                    session = opened
                    subscriberDescriptor.store(opened.subscriber.socket.descriptor, ordering: .releasing)
                } catch {
                    failures += 1
                    if failures == 1 || failures % 20 == 0 {
                        logger.warn("cluster: cannot reach Redis at \(url): \(error) (trying again)")
                    }
                    retryAt = now + backoff
                    backoff = min(backoff * 2, 5_000_000_000)
                }
            }
            var interests = [Poll.Interest(stopBell.descriptor), Poll.Interest(mailBell.descriptor)]
            if let session { interests += [session.commands.interest, session.subscriber.interest] }
            // Deadlines are checked at least every 100 ms while Redis owes an answer.
            let wake = session.map { min($0.nextBeat, now + 100_000_000) } ?? retryAt
            let timeout = Int32(clamping: max(0, (wake - now) / 1_000_000 + 1))
            let ready: [Poll.Readiness]
            do {
                ready = try Poll.wait(interests, timeoutMilliseconds: timeout)
            } catch {
                logger.error("cluster: \(error); the cluster link stops")
                break
            }
            now = Clock.monotonicNanoseconds()
            if ready.first?.readable == true {
                if let session, session.up { sendOutbox(session, now: now) }
                if let session {
                    if session.up { goodbye(session, buffer: buffer) }
                    subscriberDescriptor.store(-1, ordering: .releasing)
                    session.close()
                }
                setDown(reason: nil)
                return
            }
            guard let current = session else { continue }
            do throws(RedisFailure) {
                if !ready.isEmpty {
                    if ready[1].readable { mailBell.drain() }
                    try current.commands.handle(ready[2], buffer: buffer)
                    // Asked before this read: what had arrived by then is applied below.
                    let wanted = appliedWanted.exchange(false, ordering: .acquiringAndReleasing)
                    reading.store(true, ordering: .releasing)
                    defer { reading.store(false, ordering: .releasing) }
                    var subscriber = ready[3]
                    if wanted { subscriber.readable = true }  // it may have come after poll looked
                    try current.subscriber.handle(subscriber, buffer: buffer)
                    if wanted { deliver { $0.eventsApplied() } }
                }
                // Commands are answered in order, a subscriber's only sign of
                // life is its pong, and a subscription unconfirmed is a stall too.
                if current.commands.overdue(now: now, timeout: self.timeout)
                    || current.pingSent.map({ now - $0 > self.timeout }) == true
                    || (!current.up && now - current.opened > self.timeout)
                {
                    throw RedisFailure("Redis did not answer within \(Double(self.timeout) / 1e9) s")
                }
                if current.up {
                    if now >= current.nextBeat { beat(current, now: now) }
                    if !current.announced {
                        current.announced = true
                        setUp()
                        let early = current.early
                        current.early = []
                        for value in early { push(value, session: current) }
                    }
                    sendOutbox(current, now: now)
                    failures = 0
                    backoff = 100_000_000
                }
                sendRoomChanges(current, now: now)
                try current.commands.flush()
                try current.subscriber.flush()
            } catch {
                subscriberDescriptor.store(-1, ordering: .releasing)
                current.close()
                session = nil
                retryAt = now + backoff
                backoff = min(backoff * 2, 5_000_000_000)
                if !setDown(reason: error.description) {
                    // Never up since the last loss: said once, then every 20th try.
                    failures += 1
                    if failures == 1 || failures % 20 == 0 { logger.warn("cluster: Redis at \(url): \(error) (trying again)") }
                }
            }
        }
    }

    /// Connects both connections and queues the handshake: credentials,
    /// database, registration, subscription.
    private func open(now: Int64) throws(RedisFailure) -> Session {
        let session = try Session(url: url)
        for connection in [session.commands, session.subscriber] {
            if let password = url.password {
                connection.send(["AUTH"] + (url.user.map { [$0] } ?? []) + [password], now: now) { [logger] reply in
                    if case .error(let message) = reply { logger.error("cluster: Redis refused the credentials: \(message)") }
                }
            }
            if url.database != 0 { connection.send(["SELECT", String(url.database)], now: now) }
        }
        session.commands.send(["CLIENT", "SETNAME", "echochat-" + sanitized(node)], now: now)
        register(session, now: now)
        session.subscriber.onPush = { [self, session] value in push(value, session: session) }
        // The cluster's channels, #lobby's, and those of the rooms this
        // server has members in: all heard before the link is up.
        let rooms = outbox.withLock { box -> Set<String> in
            box.roomChanges = []
            return box.rooms
        }
        let channels = [Self.channel, Self.events, Self.roomChannel(ChatCore.lobby)] + rooms.sorted().map(Self.roomChannel)
        session.unconfirmed = Set(channels)
        session.subscriber.send(["SUBSCRIBE"] + channels, now: now)
        return session
    }

    /// Redis client names cannot hold blanks (node ids cannot either) or quotes.
    private func sanitized(_ text: String) -> String {
        String(text.map { $0.isLetter || $0.isNumber || "-_.:".contains($0) ? $0 : "_" })
    }

    private func register(_ session: Session, now: Int64) {
        session.commands.send(presence(), now: now) { [self, session] reply in
            guard reply == .simple("OK") else {
                logger.error("cluster: Redis refused this node's registration: \(reply)")
                return
            }
            session.registered = true
        }
        session.commands.send(["SADD", Self.nodesKey, node], now: now)
        session.nextBeat = now  // the first beat counts the nodes as soon as the link is up
    }

    /// This instance's presence key, expiring after two thirds of the timeout:
    /// renewed every quarter, so a lost node is noticed within the timeout.
    private func presence() -> [String] {
        ["SET", Self.nodeKey(node), token, "PX", keyLifetime]
    }

    /// The heartbeat: renew the presence key, then count the live nodes and
    /// take lost ones off the list (announcing each exactly once).
    private func beat(_ session: Session, now: Int64) {
        session.nextBeat = now + timeout / 4
        refreshNicks(session, now: now)
        let sent = now
        session.commands.send(presence(), now: now) { [self] reply in
            let roundTrip = (Clock.monotonicNanoseconds() - sent) / 1000
            shared.withLock { $0.roundTripMicroseconds = Int(roundTrip) }
            if reply != .simple("OK") { logger.warn("cluster: the heartbeat got \(reply)", limitedAs: "cluster-beat") }
        }
        session.commands.send(["SADD", Self.nodesKey, node], now: now)
        session.commands.send(["SMEMBERS", Self.nodesKey], now: now) { [self, session] reply in
            let members = (reply.elements ?? []).compactMap(\.text)
            count(members, session: session)
        }
        if session.pingSent == nil {
            session.pingSent = now
            session.subscriber.send(["PING"], now: now)
        }
    }

    private func count(_ members: [String], session: Session) {
        guard !members.isEmpty else { return counted([]) }
        var live: [String] = []
        var answered = 0
        let now = Clock.monotonicNanoseconds()
        for member in members {
            session.commands.send(["EXISTS", Self.nodeKey(member)], now: now) { [self, session] reply in
                answered += 1
                if reply.integer == 1 {
                    live.append(member)
                } else if member != node {
                    takeOff(member, session: session)
                }
                if answered == members.count { counted(live) }
            }
        }
    }

    /// The live nodes, as the last beat found them; a change is logged.
    private func counted(_ live: [String]) {
        let sorted = live.sorted()
        let changed = shared.withLock { state in
            defer {
                state.liveNodes = sorted
            }
            return state.liveNodes != sorted
        }
        if changed { logger.info("cluster: \(sorted.count) nodes: \(sorted.joined(separator: ", "))") }
    }

    /// A listed node whose presence expired: whoever removes it announces it.
    private func takeOff(_ member: String, session: Session) {
        session.commands.send(["SREM", Self.nodesKey, member], now: Clock.monotonicNanoseconds()) { [session] reply in
            guard reply.integer == 1 else { return }
            session.commands.send(["PUBLISH", Self.channel, "lost " + member], now: Clock.monotonicNanoseconds())
        }
    }

    /// What the subscriber hears: its subscription, pongs, and the cluster channel.
    private func push(_ value: RESPValue, session: Session) {
        guard let parts = value.elements, let kind = parts.first?.text else { return }
        switch kind {
        case "subscribe" where parts.count >= 2:
            guard let channel = parts[1].text, session.unconfirmed.remove(channel) == nil,
                channel.hasPrefix(Self.roomPrefix)
            else { return }
            // A room this server has members in since the session began.
            let room = String(channel.dropFirst(Self.roomPrefix.count))
            deliver { $0.subscribed(room: room) }
        case "pong": session.pingSent = nil
        case "message" where !session.announced:
            session.early.append(value)
        case "message" where parts.count == 3 && (parts[1].text == Self.events || parts[1].text?.hasPrefix(Self.roomPrefix) == true):
            guard let bytes = parts[2].bytes else { return }
            let events = bytes.split(separator: 0x0A).compactMap { ClusterEvent(decoding: Array($0)) }
            let received = events.count { !$0.isFrom(node) }
            if received > 0 { shared.withLock { $0.eventsReceived += received } }
            deliver { $0.apply(events) }
        case "message" where parts.count == 3:
            guard let text = parts[2].text else { return }
            let words = text.split(separator: " ", maxSplits: 1).map(String.init)
            guard words.count == 2 else { return }
            guard words[1] != node else {
                // Declared lost while alive (a heartbeat too late: a starved
                // thread, a paused machine): the others have let its clients
                // go, so it registers and announces them again.
                guard words[0] == "lost" else { return }
                logger.warn("cluster: this node was declared lost (its heartbeat came late); announcing its clients again")
                register(session, now: Clock.monotonicNanoseconds())
                shared.withLock { $0.hub }?.clusterUp()
                return
            }
            switch words[0] {
            case "lost":
                logger.warn("cluster: node \(words[1]) lost (silent for \(Double(timeout) / 1e9) s)")
                deliver { $0.nodeGone(words[1], suffix: " (server lost)") }
            case "bye":
                logger.info("cluster: node \(words[1]) left")
                deliver { $0.nodeGone(words[1], suffix: " (server shutting down)") }
            default: break
            }
        default: break
        }
    }

    /// A clean stop: the presence key and list entry go and the others hear
    /// goodbye at once. Waits a second at most for Redis to take it.
    private func goodbye(_ session: Session, buffer: UnsafeMutableRawBufferPointer) {
        let now = Clock.monotonicNanoseconds()
        session.commands.send(["DEL", Self.nodeKey(node)], now: now)
        session.commands.send(["SREM", Self.nodesKey, node], now: now)
        session.commands.send(["PUBLISH", Self.channel, "bye " + node], now: now)
        // Then its clients' nicks are free (the others have had its goodbye):
        // every key it set, whether or not its clients are still listed (the
        // hub lets them all go as shutdown begins).
        var held = nickKeysSet.withLock { $0 }
        for (key, holder) in shared.withLock({ $0.hub })?.ownNickKeys() ?? [] { held[key] = holder }
        release(keys: held.map(\.key), holders: held.map(\.value), session: session, now: now)
        let deadline = now + 1_000_000_000
        while session.commands.unanswered > 0 {
            let left = deadline - Clock.monotonicNanoseconds()
            guard left > 0, let ready = try? Poll.wait([session.commands.interest], timeoutMilliseconds: Int32(left / 1_000_000 + 1)),
                !ready.isEmpty
            else { break }
            do { try session.commands.handle(ready[0], buffer: buffer) } catch { break }
        }
    }

    private func setUp() {
        let (changed, hub, wake, lost) = shared.withLock { state in
            defer { state.up = true }
            return (!state.up, state.hub, state.wake, state.linkLosses > 0)
        }
        guard changed else { return }
        hub?.clusterUp()
        if lost {
            logger.info("cluster: link to \(url) restored (node \(node))")
            tell(Replies.clusterLinkRestored, hub: hub, wake: wake)
        } else {
            logger.info("cluster: joined through \(url) as node \(node)")
        }
    }

    /// The link went down (`reason`), or the link stops (nil). False if it was not up.
    @discardableResult
    private func setDown(reason: String?) -> Bool {
        let (changed, hub, wake) = shared.withLock { state in
            defer {
                if state.up && reason != nil { state.linkLosses += 1 }
                state.up = false
                state.liveNodes = []
            }
            return (state.up, state.hub, state.wake)
        }
        if changed, let hub {
            // Claims in flight are decided here: their clients hear how.
            let woken = hub.clusterDown().woken
            if let wake { for connection in woken { wake(connection) } }
        }
        guard changed, let reason else { return changed }
        logger.warn("cluster: link to \(url) lost: \(reason); serving this server's clients alone")
        tell(Replies.clusterLinkLost, hub: hub, wake: wake)
        return true
    }

    /// Runs `body` on the hub and wakes the connections it queued lines for.
    private func deliver(_ body: (ChatHub) -> Deliveries) {
        let (hub, wake) = shared.withLock { ($0.hub, $0.wake) }
        guard let hub, let wake else { return }
        for connection in body(hub).woken { wake(connection) }
    }

    /// Sends what the hub queued, in its order: one PUBLISH per run of
    /// events for one channel (events are one per line), so a burst of
    /// lines costs one command; a nick claim in the script that takes its key.
    private func sendOutbox(_ session: Session, now: Int64) {
        let (items, count) = outbox.withLock { box -> ([Outgoing], Int) in
            defer {
                box.items = []
                box.count = 0
            }
            return (box.items, box.count)
        }
        guard !items.isEmpty else { return }
        var publishes = 0
        for item in items {
            switch item {
            case .run(let channel, let events):
                publishes += 1
                session.commands.send([Array("PUBLISH".utf8), Array(channel.utf8), events], now: now)
            case .claim(let channel, let event):
                guard let (key, holder) = NickKey.claimed(by: event) else { continue }
                let arguments = [Self.claimScript, "2", Self.nickKey(key), Self.nodeKey(node), holder, keyLifetime, channel]
                session.commands.send([Array("EVAL".utf8)] + arguments.map { Array($0.utf8) } + [event.encoded], now: now) { [self] reply in
                    if reply.integer == 1 {
                        // Taken (the next heartbeat deletes it if no client here holds it then) and published.
                        nickKeysSet.withLock { $0[key] = holder }
                        shared.withLock {
                            $0.eventsPublished += 1
                            $0.publishes += 1
                        }
                        return
                    }
                    if reply.integer != 0 { logger.warn("cluster: a nick claim got \(reply)", limitedAs: "cluster-claim") }
                    deliver { $0.claimRefused(event) }
                }
            case .release(let keys, let holders):
                release(keys: keys, holders: holders, session: session, now: now)
            }
        }
        shared.withLock {
            $0.eventsPublished += count
            $0.publishes += publishes
        }
    }

    /// `releaseScript` over `keys` (their holders), a thousand at a time.
    private func release(keys: [String], holders: [String], session: Session, now: Int64) {
        for start in stride(from: 0, to: keys.count, by: Self.keysPerCall) {
            let end = min(start + Self.keysPerCall, keys.count)
            session.commands.send(
                ["EVAL", Self.releaseScript, String(end - start)] + keys[start..<end].map(Self.nickKey) + holders[start..<end], now: now)
        }
    }

    /// How long the presence key and nick keys live unless renewed (ms).
    private var keyLifetime: String { String(max(1, timeout * 2 / 3 / 1_000_000)) }

    /// The heartbeat's part for nicks: renews the keys of this server's
    /// clients' nicks (sets those nobody holds) and deletes those it set for
    /// nicks its clients no longer hold that were not deleted when they
    /// were freed (the link was down then). Sent before the presence key is
    /// renewed, so no nick key outlives it.
    private func refreshNicks(_ session: Session, now: Int64) {
        guard let hub = shared.withLock({ $0.hub }) else { return }
        let held = hub.ownNickKeys()
        var current: [String: String] = [:]
        for (key, holder) in held { current[key] = holder }
        let stale = nickKeysSet.withLock { last in
            defer { last = current }
            return last.filter { current[$0.key] != $0.value }
        }
        if !stale.isEmpty { release(keys: stale.map(\.key), holders: stale.map(\.value), session: session, now: now) }
        for start in stride(from: 0, to: held.count, by: Self.keysPerCall) {
            let batch = held[start..<min(start + Self.keysPerCall, held.count)]
            session.commands.send(
                ["EVAL", Self.refreshScript, String(batch.count)] + batch.map { Self.nickKey($0.key) } + [keyLifetime]
                    + batch.map(\.holder), now: now
            ) { [logger] reply in
                if reply.integer == nil { logger.warn("cluster: renewing nick keys got \(reply)", limitedAs: "cluster-nicks") }
            }
        }
    }

    /// Rooms gained or left since the session last looked: SUBSCRIBE or
    /// UNSUBSCRIBE, in order (a join waits for its room's confirmation).
    private func sendRoomChanges(_ session: Session, now: Int64) {
        let changes = outbox.withLock { box in
            defer { box.roomChanges = [] }
            return box.roomChanges
        }
        for change in changes {
            session.subscriber.send([change.hear ? "SUBSCRIBE" : "UNSUBSCRIBE", Self.roomChannel(change.room)], now: now)
        }
    }

    private func tell(_ line: [UInt8], hub: ChatHub?, wake: (@Sendable (Connection) -> Void)?) {
        guard let hub, let wake else { return }
        let deliveries = hub.tellEveryone(line)
        for connection in deliveries.woken { wake(connection) }
    }
}
