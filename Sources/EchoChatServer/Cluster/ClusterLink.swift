import EchoChatCore
import EchoChatPOSIX
import Synchronization

/// `--cluster redis://…`: this server's link to the cluster's Redis
/// (docs/cluster.md).
///
/// - Threads: none of its own. The strategy's own loop drives it: the loop
///   watches `descriptor` (the link's epoll instance, readable when one of
///   its two Redis connections or its mail bell is ready) and wakes by
///   `waitTimeout` (the next heartbeat or reply deadline), then calls
///   `service`, which does what is ready and returns. The host is the loop
///   of epoll and async, reactors' first loop, any pool worker (one shot,
///   one at a time), and the thread strategy's acceptor. The two
///   connections (commands, pipelined; and a subscriber) belong to whoever
///   is servicing (`engine`'s lock). The link reaches clients only through
///   the chat hub and the strategy's waker, so every strategy gets the
///   cluster from this one file.
/// - Blocking: never. Sockets are non-blocking, and a Redis host given by
///   name (not an address) is resolved on a short thread of its own, as
///   getaddrinfo(3) may wait on DNS. Every request has a deadline
///   (`cluster-timeout`): Redis silent that long counts as down.
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
///   after the presence key. Each nick key's lifetime is the presence
///   key's remaining one (read in the same script) less 10 ms, so none
///   outlives it.
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
    /// The link's epoll instance (level-triggered): the mail bell and both
    /// connections. A host loop watches its descriptor.
    private let poller: Poller
    /// What the servicing thread keeps between calls, under its lock.
    private let engine: Lock<Engine>
    /// When the link must be serviced even if nothing is ready (monotonic
    /// nanoseconds; `.max`: never).
    private let due = Atomic<Int64>(.max)
    /// The connections a service queued lines for, for its host to wake
    /// (only the servicing thread uses it).
    private let woken = Lock<[Connection]>([])
    /// Shutdown began: the next service says goodbye.
    private let leaving = Atomic<Bool>(false)
    /// The goodbye is done (or there was nobody to say it to): the link
    /// does nothing more, and its host may stop.
    private let left = Atomic<Bool>(false)
    private let shared = Lock(Shared())
    /// Events the hub queued, in its order, for the link to publish.
    private let outbox = Lock(Outbox())
    private let mailBell: Wakeup
    /// The subscriber's descriptor while a session is up (-1 otherwise), the
    /// link reading and applying what it heard, and a serving thread
    /// waiting for that: `eventsPending`.
    private let subscriberDescriptor = Atomic<Int32>(-1)
    private let reading = Atomic<Bool>(false)
    private let appliedWanted = Atomic<Bool>(false)
    /// The nick keys this server set, and their holders: the last
    /// heartbeat's, and claims won since (only the servicing thread uses it).
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
        /// `operations`: what the events change in the membership keys
        /// (`MembershipKeys`); none for lines said in rooms.
        case run(channel: String, events: [UInt8], operations: [String])
        /// This server's clients (`here` events): they replace its
        /// membership keys in one script, then are published.
        case announce(events: [ClusterEvent])
        /// A question for the membership keys, for connection `id`.
        case ask(ClusterQuery, id: Int)
        /// A nick claim (`nick`, `hello`): published only if it takes the
        /// nick's key (`claimScript`); counted then.
        case claim(channel: String, event: ClusterEvent)
        /// Nick keys to delete where they still name these holders (`releaseScript`).
        case release(keys: [String], holders: [String])
    }

    /// `echochat:nick:NICK` (lower-cased): who holds NICK (`NickKey.value`).
    static func nickKey(_ key: String) -> String { prefix + "nick:" + key }

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
    /// This server's own channel: the membership keys' answers to it
    /// (compared with every message heard: built once).
    private let answers: String

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
        self.answers = Self.prefix + "to:" + node
        timeout = Int64(timeoutSeconds * 1e9)
        self.logger = logger
        mailBell = try Wakeup()
        do {
            poller = try Poller()
        } catch {
            mailBell.close()
            throw error
        }
        do {
            try poller.register(mailBell.descriptor, for: .readable, data: Self.mailToken)
        } catch {
            poller.close()
            mailBell.close()
            throw error
        }
        engine = Lock(Engine())
        token = String(UInt64.random(in: 1...UInt64.max), radix: 16)
    }

    /// Where the link delivers what it tells clients (before `start`).
    func attach(hub: ChatHub, wake: @escaping @Sendable (Connection) -> Void) {
        shared.withLock {
            $0.hub = hub
            $0.wake = wake
        }
    }

    /// The link may connect: its host services it at once (it does
    /// nothing before). Redis may be down, and the server serves meanwhile.
    public func start() {
        due.store(0, ordering: .releasing)
        mailBell.ring()
    }

    /// The server began to shut down: the link publishes what is queued and
    /// says goodbye (so the other servers let this one's clients go now,
    /// not once its connections have lingered). Returns at once; the host's
    /// next service does it.
    func leave() {
        leaving.store(true, ordering: .releasing)
        mailBell.ring()
    }

    /// Once no host services the link any more (the strategy has returned):
    /// finishes the goodbye here (if Redis is there to hear it, waiting a
    /// second at most) and closes the link.
    public func stop() {
        leaving.store(true, ordering: .releasing)
        var events = PollEvents(capacity: 4)
        let wake = shared.withLock { $0.wake }
        while true {
            let finished = engine.withLock { engine in
                step(engine)
                return engine.finished
            }
            // No host now: woken the strategy's way, from this thread.
            for connection in woken.withLock({ woken in defer { woken = [] }; return woken }) { wake?(connection) }
            if finished { break }
            _ = try? poller.wait(into: &events, timeoutMilliseconds: waitTimeout(1000, now: Clock.monotonicNanoseconds()))
        }
        // A resolver still asking DNS rings the bell when it is done.
        engine.withLock { $0.resolving?.thread.join() }
        poller.close()
        mailBell.close()
    }

    // MARK: - Hosting

    /// Whether the link has said goodbye and done (shutdown).
    var hasLeft: Bool { left.load(ordering: .acquiring) }

    /// What a host loop watches for reading: readable when the link has
    /// something to do.
    var descriptor: Int32 { poller.descriptor }

    /// A host's poll timeout (ms): `timeout` (-1: none) cut short to the
    /// link's next deadline.
    func waitTimeout(_ timeout: Int32, now: Int64) -> Int32 {
        let due = due.load(ordering: .acquiring)
        guard due != .max else { return timeout }
        let until = Int32(clamping: max(0, (due - now + 999_999) / 1_000_000))
        return timeout < 0 ? until : min(timeout, until)
    }

    /// After a host's wait: does what is ready if `descriptor` was `ready`
    /// or a deadline has passed. Never blocks. The connections it queued
    /// lines for (what other servers said, notices) are added to
    /// `deliveries`, for the host to serve or wake its own way. True if it
    /// did; false if it had nothing to do, or another thread is servicing
    /// the link (a pool worker, which then re-arms the link's one-shot
    /// registration itself).
    @discardableResult
    func service(ready: Bool, now: Int64, into deliveries: inout Deliveries) -> Bool {
        guard ready || now >= due.load(ordering: .acquiring) else { return false }
        guard engine.withLockIfAvailable({ step($0) }) != nil else { return false }
        woken.withLock { woken in
            deliveries.woken += woken
            woken.removeAll(keepingCapacity: true)
        }
        return true
    }

    /// Whether events have reached this server that the link has not
    /// applied yet: unread on the subscriber, or read and being applied.
    /// If so, the link's host is rung: the link reads and applies them, then tells the hub
    /// (`ChatHub.eventsApplied`). Called by the core (under the hub lock)
    /// before a command that reads the cluster's state, so that it answers
    /// with everything another server had told its clients by then.
    func eventsPending() -> Bool {
        let descriptor = subscriberDescriptor.load(ordering: .acquiring)
        guard descriptor >= 0 else { return false }
        // The socket first: once the link took the bytes, `reading` says so until they are applied.
        let pending = (try? Poll.readable([descriptor], timeoutMilliseconds: 0).first) == true || reading.load(ordering: .acquiring)
        if pending {
            appliedWanted.store(true, ordering: .releasing)
            mailBell.ring()
        }
        return pending
    }

    /// Queues `event` to be published (the hub calls it under its lock, so
    /// events leave in the core's order). The link's host is rung only
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
            let operations = MembershipKeys.operations(for: event)
            if case .run(channel, var events, var changes)? = box.items.last {
                box.items.removeLast()  // (so the bytes are not copied on append)
                events.append(0x0A)
                events += event.encoded
                changes += operations
                box.items.append(.run(channel: channel, events: events, operations: changes))
            } else {
                box.items.append(.run(channel: channel, events: event.encoded, operations: operations))
            }
            box.count += 1
            return wasEmpty
        }
        if ring { mailBell.ring() }
    }

    /// From the hub, under its lock: this server's clients (`here`
    /// events), which replace its membership keys in one step.
    func announce(_ events: [ClusterEvent]) {
        queue(.announce(events: events), events: events.count)
    }

    /// From the hub, under its lock: `query` for connection `id`, read from
    /// the membership keys after what was queued before; the answer comes
    /// on this node's channel.
    func ask(_ query: ClusterQuery, for id: ConnectionID) {
        queue(.ask(query, id: id.rawValue), events: 0)
    }

    private func queue(_ item: Outgoing, events: Int) {
        let ring = outbox.withLock { box -> Bool in
            guard box.accepting else { return false }
            let wasEmpty = box.items.isEmpty
            box.items.append(item)
            box.count += events
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

    // MARK: - Servicing

    /// The link's poller's tokens.
    static let mailToken: UInt64 = 0
    static let commandsToken: UInt64 = 1
    static let subscriberToken: UInt64 = 2

    /// What the servicing thread keeps between calls.
    private final class Engine {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        var events = PollEvents(capacity: 4)
        var session: Session?
        var retryAt: Int64 = 0
        var backoff: Int64 = 100_000_000
        /// Tries that failed since the link was last up.
        var failures = 0
        /// Redis's host name being resolved.
        var resolving: Resolving?
        /// Shutting down: the goodbye is sent, and waited for until then.
        var goodbyeBy: Int64?
        /// Shut down: the link does nothing more.
        var finished = false

        deinit { buffer.deallocate() }
    }

    /// getaddrinfo(3) on a thread of its own, which rings the mail bell when
    /// the answer is in.
    private struct Resolving {
        let answer: Lock<Result<[SocketAddress], RedisFailure>?>
        let thread: ThreadHandle
    }

    /// Two connections to Redis while they last.
    private final class Session {
        let commands: RedisConnection
        let subscriber: RedisConnection
        /// What the link's poller watches each for (nil: not registered).
        var commandsWatched: Poller.Events?
        var subscriberWatched: Poller.Events?
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

        init(address: SocketAddress, url: RedisURL) throws(RedisFailure) {
            commands = try RedisConnection(address: address, url: url)
            do {
                subscriber = try RedisConnection(address: address, url: url)
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

    /// One service: what the link's poller reports ready, then the link's
    /// state (connect, read, apply, beat, publish, or say goodbye), then
    /// what to watch and when to come back.
    private func step(_ engine: Engine) {
        let count = (try? poller.wait(into: &engine.events, timeoutMilliseconds: 0)) ?? 0
        var commands = Poll.Readiness()
        var subscriber = Poll.Readiness()
        for index in 0..<count {
            let events = engine.events.events(at: index)
            let readiness = Poll.Readiness(
                readable: events.contains(.readable), writable: events.contains(.writable),
                failed: !events.isDisjoint(with: [.error, .hangup]))
            switch engine.events.data(at: index) {
            case Self.mailToken: mailBell.drain()
            case Self.commandsToken: commands = readiness
            case Self.subscriberToken: subscriber = readiness
            default: break
            }
        }
        guard !engine.finished else { return }
        let now = Clock.monotonicNanoseconds()
        if leaving.load(ordering: .acquiring) {
            sayGoodbye(engine, commands: commands, now: now)
        } else {
            serve(engine, commands: commands, subscriber: subscriber, now: now)
        }
        due.store(engine.finished ? .max : nextDeadline(engine), ordering: .releasing)
    }

    private func serve(_ engine: Engine, commands: Poll.Readiness, subscriber: Poll.Readiness, now: Int64) {
        if engine.session == nil && now >= engine.retryAt { connect(engine, now: now) }
        guard let current = engine.session else { return }
        do throws(RedisFailure) {
            try current.commands.handle(commands, buffer: engine.buffer)
            do {
                // Asked before this read: what had arrived by then is applied below.
                let wanted = appliedWanted.exchange(false, ordering: .acquiringAndReleasing)
                reading.store(true, ordering: .releasing)
                defer { reading.store(false, ordering: .releasing) }
                var subscriber = subscriber
                if wanted { subscriber.readable = true }  // it may have come after the poller looked
                try current.subscriber.handle(subscriber, buffer: engine.buffer)
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
                engine.failures = 0
                engine.backoff = 100_000_000
            }
            sendRoomChanges(current, now: now)
            try current.commands.flush()
            try current.subscriber.flush()
            try watch(current)
        } catch {
            subscriberDescriptor.store(-1, ordering: .releasing)
            current.close()
            engine.session = nil
            // The loss of a link that was up is said by `setDown`; a session
            // never up since the last loss is one more failed try.
            retry(engine, after: setDown(reason: error.description) ? nil : error, now: now)
        }
    }

    /// Opens a session to Redis's address (once it is known).
    private func connect(_ engine: Engine, now: Int64) {
        switch address(engine) {
        case nil: return  // being resolved: the answer rings the bell
        case .failure(let error): retry(engine, after: error, now: now)
        case .success(let addresses):
            // A name with several addresses (localhost: ::1 and 127.0.0.1):
            // each failed try takes the next.
            do {
                let opened = try open(addresses[engine.failures % addresses.count], now: now)
                engine.session = opened
                subscriberDescriptor.store(opened.subscriber.socket.descriptor, ordering: .releasing)
            } catch {
                retry(engine, after: error, now: now)
            }
        }
    }

    /// The next try comes after the backoff (0.1 s, doubling to 5 s). A try
    /// that failed (`error`) is said once, then every 20th.
    private func retry(_ engine: Engine, after error: RedisFailure?, now: Int64) {
        if let error {
            engine.failures += 1
            if engine.failures == 1 || engine.failures % 20 == 0 {
                logger.warn("cluster: cannot reach Redis at \(url): \(error) (trying again)")
            }
        }
        engine.retryAt = now + engine.backoff
        engine.backoff = min(engine.backoff * 2, 5_000_000_000)
    }

    /// Redis's addresses: at once for an IP address; for a host name, nil
    /// while a thread of its own resolves it (getaddrinfo(3) may wait on
    /// DNS for seconds, and the host loop must not), then its answer.
    private func address(_ engine: Engine) -> Result<[SocketAddress], RedisFailure>? {
        if let resolving = engine.resolving {
            guard let answer = resolving.answer.withLock({ $0 }) else { return nil }
            resolving.thread.join()
            engine.resolving = nil
            return answer
        }
        if let address = try? SocketAddress.resolve(host: url.host, port: url.port, passive: false, numericOnly: true).first {
            return .success([address])
        }
        let answer = Lock<Result<[SocketAddress], RedisFailure>?>(nil)
        let (url, bell) = (url, mailBell)
        do {
            let thread = try Threads.spawn(name: "echochat-resolve") {
                let result: Result<[SocketAddress], RedisFailure>
                do {
                    let found = try SocketAddress.resolve(host: url.host, port: url.port, passive: false)
                    result = found.isEmpty ? .failure(RedisFailure("cannot resolve \(url.host)")) : .success(found)
                } catch {
                    result = .failure(RedisFailure("cannot resolve \(url.host): \(error)"))
                }
                answer.withLock { $0 = result }
                bell.ring()
            }
            engine.resolving = Resolving(answer: answer, thread: thread)
            return nil
        } catch {
            return .failure(RedisFailure("cannot resolve \(url.host): \(error)"))
        }
    }

    /// Shutting down: what is queued goes out, then the goodbye; the link
    /// finishes once Redis has answered it all, or after a second. The
    /// subscriber is no longer read (nor watched, so it cannot keep the
    /// host busy).
    private func sayGoodbye(_ engine: Engine, commands: Poll.Readiness, now: Int64) {
        if let session = engine.session {
            if engine.goodbyeBy == nil {
                engine.goodbyeBy = now
                if session.up {
                    sendOutbox(session, now: now)
                    goodbye(session, now: now)
                    engine.goodbyeBy = now + 1_000_000_000
                }
            }
            if now < engine.goodbyeBy!, session.commands.unanswered > 0 {
                do throws(RedisFailure) {
                    try session.commands.handle(commands, buffer: engine.buffer)
                    try watch(session, hearing: false)
                    if session.commands.unanswered > 0 { return }
                } catch {}
            }
            subscriberDescriptor.store(-1, ordering: .releasing)
            session.close()
            engine.session = nil
        }
        setDown(reason: nil)
        engine.finished = true
        left.store(true, ordering: .releasing)
    }

    /// When the link must be serviced next though nothing is ready: the
    /// heartbeat, the oldest request's deadline, the next try.
    private func nextDeadline(_ engine: Engine) -> Int64 {
        guard let session = engine.session else { return engine.resolving == nil ? engine.retryAt : .max }
        if let by = engine.goodbyeBy { return by }
        var due = session.up ? session.nextBeat : session.opened + timeout
        if let sent = session.commands.oldestSent { due = min(due, sent + timeout) }
        if let sent = session.pingSent { due = min(due, sent + timeout) }
        return due + 1_000_000  // the checks are strict: a millisecond past
    }

    /// The link's poller in step with what each connection waits for
    /// (`hearing`: the subscriber's too).
    private func watch(_ session: Session, hearing: Bool = true) throws(RedisFailure) {
        do {
            try follow(session.commands, Self.commandsToken, from: &session.commandsWatched, to: session.commands.events)
            try follow(
                session.subscriber, Self.subscriberToken, from: &session.subscriberWatched,
                to: hearing ? session.subscriber.events : nil)
        } catch {
            throw RedisFailure("\(error)")
        }
    }

    private func follow(
        _ connection: RedisConnection, _ token: UInt64, from watched: inout Poller.Events?, to wanted: Poller.Events?
    ) throws(SystemError) {
        guard watched != wanted else { return }
        let descriptor = connection.socket.descriptor
        switch (watched, wanted) {
        case (nil, let events?): try poller.register(descriptor, for: events, data: token)
        case (_?, let events?): try poller.modify(descriptor, for: events, data: token)
        case (_?, nil): try poller.unregister(descriptor)
        case (nil, nil): break
        }
        watched = wanted
    }

    /// Connects both connections and queues the handshake: credentials,
    /// database, registration, subscription.
    private func open(_ address: SocketAddress, now: Int64) throws(RedisFailure) -> Session {
        let session = try Session(address: address, url: url)
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
        let channels = [Self.channel, Self.events, answers, Self.roomChannel(ChatCore.lobby)] + rooms.sorted().map(Self.roomChannel)
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
        let sent = now
        session.commands.send(presence(), now: now) { [self] reply in
            let roundTrip = (Clock.monotonicNanoseconds() - sent) / 1000
            shared.withLock { $0.roundTripMicroseconds = Int(roundTrip) }
            if reply != .simple("OK") { logger.warn("cluster: the heartbeat got \(reply)", limitedAs: "cluster-beat") }
        }
        refreshNicks(session, now: now)
        membership(Self.membershipRefreshScript, [], nil, [], session: session, now: now)
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
        session.commands.send(["EVAL", Self.lostScript, "0", member, membershipLifetime], now: Clock.monotonicNanoseconds())
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
        case "message" where parts.count == 3 && parts[1].text == answers:
            guard let text = parts[2].text, let (id, answer) = ClusterAnswer.decode(text) else {
                return logger.warn("cluster: an answer that is not one: \(parts[2])", limitedAs: "cluster-answer")
            }
            deliver { $0.answered(id, answer) }
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
    /// goodbye at once (`sayGoodbye` waits for Redis to take it).
    private func goodbye(_ session: Session, now: Int64) {
        membership(Self.goodbyeScript, [], nil, [], session: session, now: now)
        // Then its clients' nicks are free (the others have had its goodbye):
        // every key it set, whether or not its clients are still listed (the
        // hub lets them all go as shutdown begins).
        var held = nickKeysSet.withLock { $0 }
        for (key, holder) in shared.withLock({ $0.hub })?.ownNickKeys() ?? [] { held[key] = holder }
        release(keys: held.map(\.key), holders: held.map(\.value), session: session, now: now)
    }

    private func setUp() {
        let (changed, hub, lost) = shared.withLock { state in
            defer { state.up = true }
            return (!state.up, state.hub, state.linkLosses > 0)
        }
        guard changed else { return }
        hub?.clusterUp()
        if lost {
            logger.info("cluster: link to \(url) restored (node \(node))")
            deliver { $0.tellEveryone(Replies.clusterLinkRestored) }
        } else {
            logger.info("cluster: joined through \(url) as node \(node)")
        }
    }

    /// The link went down (`reason`), or the link stops (nil). False if it was not up.
    @discardableResult
    private func setDown(reason: String?) -> Bool {
        let changed = shared.withLock { state in
            defer {
                if state.up && reason != nil { state.linkLosses += 1 }
                state.up = false
                state.liveNodes = []
            }
            return state.up
        }
        // Claims in flight are decided here: their clients hear how.
        if changed { deliver { $0.clusterDown() } }
        guard changed, let reason else { return changed }
        logger.warn("cluster: link to \(url) lost: \(reason); serving this server's clients alone")
        deliver { $0.tellEveryone(Replies.clusterLinkLost) }
        return true
    }

    /// Runs `body` on the hub; the connections it queued lines for are
    /// handed to the host when the service ends (`service(…into:)`).
    private func deliver(_ body: (ChatHub) -> Deliveries) {
        guard let hub = shared.withLock({ $0.hub }) else { return }
        let deliveries = body(hub)
        if !deliveries.woken.isEmpty { woken.withLock { $0 += deliveries.woken } }
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
            case .run(let channel, let events, let operations) where operations.isEmpty:
                publishes += 1
                session.commands.send([Array("PUBLISH".utf8), Array(channel.utf8), events], now: now)
            case .run(let channel, let events, let operations):
                publishes += 1
                membership(Self.publishScript, [channel], events, ["0"] + operations, session: session, now: now)
            case .announce(let events):
                publishes += 1
                let payload = Array(events.map(\.encoded).joined(separator: [0x0A]))
                membership(Self.publishScript, [Self.events], payload, ["1"] + events.flatMap(MembershipKeys.operations), session: session, now: now)
            case .ask(let query, let id):
                switch query {
                case .who(let room): membership(Self.whoScript, [String(id), room], nil, [], session: session, now: now)
                case .rooms: membership(Self.roomsScript, [String(id)], nil, [], session: session, now: now)
                }
            case .claim(let channel, let event):
                guard let (key, holder) = NickKey.claimed(by: event) else { continue }
                let arguments = [
                    Self.claimScript, "2", Self.nickKey(key), Self.nodeKey(node), node, membershipLifetime, holder, keyLifetime, channel,
                ]
                let operations = MembershipKeys.operations(for: event).map { Array($0.utf8) }
                session.commands.send([Array("EVAL".utf8)] + arguments.map { Array($0.utf8) } + [event.encoded] + operations, now: now) {
                    [self] reply in
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

    /// `script` (one that begins with `membershipFunctions`) with ARGV:
    /// this node, the lifetime, `before`, `payload` if any, `after`.
    private func membership(
        _ script: String, _ before: [String], _ payload: [UInt8]?, _ after: [String], session: Session, now: Int64
    ) {
        let head = ["EVAL", script, "0", node, membershipLifetime] + before
        let command = head.map { Array($0.utf8) } + (payload.map { [$0] } ?? []) + after.map { Array($0.utf8) }
        session.commands.send(command, now: now) { [logger] reply in
            if reply.integer == nil { logger.warn("cluster: a membership script got \(reply)", limitedAs: "cluster-membership") }
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
    /// How long the membership keys live unless renewed (ms): past the
    /// timeout, so a lost node's clients are still listed when a survivor
    /// takes them out (`lostScript`); if no server is left, they expire.
    private var membershipLifetime: String { String(max(1, timeout * 2 / 1_000_000)) }

    /// The heartbeat's part for nicks: renews the keys of this server's
    /// clients' nicks (sets those nobody holds) and deletes those it set for
    /// nicks its clients no longer hold that were not deleted when they
    /// were freed (the link was down then). Sent after the presence key is
    /// renewed: each key then expires just before it.
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
                ["EVAL", Self.refreshScript, String(batch.count + 1), Self.nodeKey(node)] + batch.map { Self.nickKey($0.key) }
                    + [keyLifetime] + batch.map(\.holder), now: now
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
}
