import Testing

@testable import EchoChatCore

/// A recorder that also keeps what the core published.
private final class NodeOutput: ChatOutput {
    let bus: Bus
    let node: String
    var lines: [ConnectionID: [String]] = [:]
    var closed: [ConnectionID] = []
    var resumed: [ConnectionID] = []
    /// The rooms the core asked to hear (its link's list, kept while down).
    var rooms: Set<String> = []
    /// The files the core asked the store to look for, as "name size".
    var looked: [String] = []
    /// How many times the core asked the store to look for every file.
    var lookedForAll = 0

    init(bus: Bus, node: String) {
        self.bus = bus
        self.node = node
    }

    func send(_ line: [UInt8], to id: ConnectionID) { lines[id, default: []].append(text(Array(line.dropLast()))) }
    func close(_ id: ConnectionID) { closed.append(id) }
    func resume(_ id: ConnectionID) { resumed.append(id) }
    func transportStats() -> TransportStats { TransportStats(strategy: "test") }
    func publish(_ event: ClusterEvent, room: String?) {
        // What Redis would carry: the encoded bytes, decoded on arrival.
        let operations = MembershipKeys.operations(for: event)
        if let (key, holder) = NickKey.claimed(by: event) {
            bus.queue.append(.claim(node: node, channel: room ?? "events", event.encoded, key: key, holder: holder, operations))
        } else {
            bus.queue.append(.publish(node: node, channel: room ?? "events", [event.encoded], operations, replace: false))
        }
    }
    func announce(_ events: [ClusterEvent]) {
        bus.queue.append(.publish(node: node, channel: "events", events.map(\.encoded), events.flatMap(MembershipKeys.operations), replace: true))
    }
    func ask(_ query: ClusterQuery, for id: ConnectionID) { bus.queue.append(.ask(node: node, id: id, query)) }
    func releaseNick(_ key: String, holder: String) { bus.queue.append(.release(key: key, holder: holder)) }
    func subscribe(room key: String) {
        rooms.insert(key)
        bus.queue.append(.subscribe(node: node, room: key))
    }
    func unsubscribe(room key: String) {
        rooms.remove(key)
        bus.queue.append(.unsubscribe(node: node, room: key))
    }
    func lookForFile(_ name: String, size: Int) { looked.append("\(name) \(size)") }
    func lookForFiles() { lookedForAll += 1 }
    /// What the link would say: events reached the node and are not applied yet.
    var eventsUnapplied = false
    func eventsPending() -> Bool { eventsUnapplied }
}

/// Redis's part, in memory: one ordered queue of what the nodes sent.
/// Every node hears the events channel and #lobby's, its own messages
/// included, and a room's channel from its subscription on. Nick keys as
/// the link's scripts keep them: a claim is published only if it takes its
/// key, a release deletes a key that still names its holder.
private final class Bus {
    enum Item {
        case publish(node: String, channel: String, [[UInt8]], [String], replace: Bool)
        case claim(node: String, channel: String, [UInt8], key: String, holder: String, [String])
        case ask(node: String, id: ConnectionID, ClusterQuery)
        case release(key: String, holder: String)
        case subscribe(node: String, room: String)
        case unsubscribe(node: String, room: String)
    }
    var queue: [Item] = []
    var heard: [String: Set<String>] = [:]
    /// Lower-cased nick -> holder (`NickKey.value`).
    var keys: [String: String] = [:]
    /// Claims refused because their key was held.
    var refused = 0
    /// The membership keys, as the link's scripts keep them: room -> `NODE
    /// ID` -> nick, room -> spelling, node -> client id -> room.
    var members: [String: [String: String]] = [:]
    var spellings: [String: String] = [:]
    var index: [String: [String: String]] = [:]

    @discardableResult
    func drop(_ node: String, _ id: String) -> String? {
        guard let key = index[node]?[id] else { return nil }
        let nick = members[key]?.removeValue(forKey: node + " " + id)
        if members[key]?.isEmpty == true {
            members[key] = nil
            spellings[key] = nil
        }
        index[node]![id] = nil
        return nick
    }

    func dropAll(_ node: String, keeping: Set<String> = []) {
        for id in index[node, default: [:]].keys.sorted() where !keeping.contains(id) { drop(node, id) }
        if index[node]?.isEmpty == true { index[node] = nil }
    }

    /// The operations (`MembershipKeys`): the counts told back, by client id.
    func apply(_ node: String, _ operations: [String]) -> [(ConnectionID, Int)] {
        var counts: [(ConnectionID, Int)] = []
        for start in stride(from: 0, to: operations.count - 4, by: 5) {
            let kind = operations[start], id = operations[start + 1], key = operations[start + 2]
            var nick: String? = operations[start + 4]
            switch kind {
            case "out": drop(node, id)
            case "keep": break
            case "nick":
                if let at = index[node]?[id] { members[at]![node + " " + id] = nick }
            default:
                let was = drop(node, id)
                if kind == "join" { nick = was }
                guard let nick else { continue }
                members[key, default: [:]][node + " " + id] = nick
                index[node, default: [:]][id] = key
                if spellings[key] == nil { spellings[key] = operations[start + 3] }
                if kind != "here" { counts.append((ConnectionID(Int(id)!), members[key]!.count)) }
            }
        }
        return counts
    }

    func answer(_ query: ClusterQuery) -> ClusterAnswer {
        switch query {
        case .who(let room): .who(members[room].map { Array($0.values) } ?? [])
        case .rooms: .rooms(members.map { ClusterAnswer.RoomCount(key: $0.key, spelling: spellings[$0.key]!, count: $0.value.count) })
        }
    }

    func hears(_ node: String, _ channel: String) -> Bool {
        channel == "events" || channel == ChatCore.lobby || heard[node, default: []].contains(channel)
    }
}

/// Several cores joined by the in-memory bus; `pump` delivers everything
/// sent so far, in order, to every node that hears it. Like a connection,
/// each client's input waits while the core holds it (a nick claim or a
/// join in flight) and is handed in again when the core resumes it.
private final class SimulatedCluster {
    let bus = Bus()
    var cores: [String: ChatCore] = [:]
    var outputs: [String: NodeOutput] = [:]
    var time: Int64 = 1000
    /// Input not yet taken by the core, per node and client.
    var unread: [String: [Int: [UInt8]]] = [:]
    var held: Set<String> = []
    /// Messages per node, for checking who heard what.
    var delivered: [String: Int] = [:]

    init(_ nodes: [String], fileSharing: FileSharing? = nil) {
        for node in nodes {
            cores[node] = ChatCore(maxLine: 4096, fileSharing: fileSharing, node: node, clock: { [unowned self] in time })
            outputs[node] = NodeOutput(bus: bus, node: node)
            cores[node]!.clusterUp(output: outputs[node]!)
        }
        pump()
    }

    /// Delivers what was sent, in order (`items`: only that many of what is queued).
    func pump(items: Int = .max) {
        var left = items
        while !bus.queue.isEmpty && left > 0 {
            left -= 1
            switch bus.queue.removeFirst() {
            case .publish(let node, let channel, let payloads, let operations, let replace):
                if replace {
                    let kept = stride(from: 0, to: operations.count - 4, by: 5).filter { operations[$0] == "keep" }.map { operations[$0 + 1] }
                    bus.dropAll(node, keeping: Set(kept))
                }
                tell(node, counts: bus.apply(node, operations))
                for payload in payloads { deliver(payload, on: channel) }
            case .ask(let node, let id, let query):
                cores[node]!.answered(id, bus.answer(query), output: outputs[node]!)
                resumeHeld(node)
            case .claim(let node, let channel, let payload, let key, let holder, let operations):
                if bus.keys[key] == nil {
                    bus.keys[key] = holder
                    renewed[node, default: [:]][key] = holder
                    tell(node, counts: bus.apply(node, operations))
                    deliver(payload, on: channel)
                } else {
                    bus.refused += 1
                    cores[node]!.claimRefused(ClusterEvent(decoding: payload)!, output: outputs[node]!)
                    resumeHeld(node)
                }
            case .release(let key, let holder):
                if bus.keys[key] == holder { bus.keys[key] = nil }
            case .subscribe(let node, let room):
                bus.heard[node, default: []].insert(room)
                cores[node]!.subscribed(room: room, output: outputs[node]!)
                resumeHeld(node)
            case .unsubscribe(let node, let room):
                bus.heard[node, default: []].remove(room)
            }
        }
    }

    private func tell(_ node: String, counts: [(ConnectionID, Int)]) {
        for (id, count) in counts { cores[node]!.answered(id, .count(count), output: outputs[node]!) }
    }

    /// An event of `node`, a server with no core here, published as its
    /// link would: the membership keys change with it.
    func inject(_ event: ClusterEvent, from node: String) {
        bus.queue.append(.publish(node: node, channel: "events", [event.encoded], MembershipKeys.operations(for: event), replace: false))
        pump()
    }

    /// `node` is found lost: whoever takes it off the list takes its
    /// clients out of the membership keys and tells the others.
    func lost(_ node: String) {
        bus.dropAll(node)
        for other in cores.keys.sorted() where other != node {
            cores[other]!.nodeGone(node, suffix: " (server lost)", output: outputs[other]!)
        }
    }

    private func deliver(_ payload: [UInt8], on channel: String) {
        guard let event = ClusterEvent(decoding: payload) else {
            Issue.record("undecodable event \(text(payload))")
            return
        }
        for node in cores.keys.sorted() where bus.hears(node, channel) {
            delivered[node, default: 0] += 1
            cores[node]!.apply(event, output: outputs[node]!)
            resumeHeld(node)
        }
    }

    /// The keys each node set: its last heartbeat's, and claims it won since.
    var renewed: [String: [String: String]] = [:]

    /// The link's heartbeat: deletes the keys it set that its clients no
    /// longer hold (freed while the link was down), and renews
    /// (sets, if nobody holds them) those of its clients' nicks.
    func refreshKeys(_ node: String) {
        let current = Dictionary(cores[node]!.ownNickKeys().map { ($0.key, $0.holder) }, uniquingKeysWith: { a, _ in a })
        for (key, holder) in renewed[node, default: [:]] where current[key] != holder && bus.keys[key] == holder { bus.keys[key] = nil }
        renewed[node] = current
        for (key, holder) in current where bus.keys[key] == nil { bus.keys[key] = holder }
    }

    /// `node`'s keys expire with its presence (it died, or was lost).
    func expireKeys(_ node: String) {
        bus.keys = bus.keys.filter { !$0.value.hasPrefix(node + " ") }
    }

    /// Every key names the client of some node that holds that nick.
    func keysMatchTheClients() -> Bool {
        var held: [String: String] = [:]
        for core in cores.values { for (key, holder) in core.ownNickKeys() { held[key] = holder } }
        return bus.keys.allSatisfy { held[$0.key] == $0.value }
    }

    /// Every node sees each room as the membership keys hold it (its
    /// clients and its replica): `/who` from the keys says what the
    /// replica would have.
    func replicasMatchTheKeys(of nodes: [String]? = nil) -> Bool {
        for node in nodes ?? cores.keys.sorted() {
            let core = cores[node]!
            for key in Set(bus.members.keys) {
                let seen = core.nicksSeen(in: key).sorted(), listed = bus.members[key]!.values.sorted()
                if seen != listed {
                    Issue.record("\(node) sees #\(key) as \(seen), the keys as \(listed)")
                    return false
                }
            }
        }
        return true
    }

    /// Clients the core resumed read on.
    func resumeHeld(_ node: String) {
        let resumed = outputs[node]!.resumed
        outputs[node]!.resumed = []
        for id in resumed {
            #expect(held.remove("\(node)/\(id.rawValue)") != nil, "\(node) resumed \(id), which it did not hold")
            feed(node, id.rawValue)
        }
    }

    /// The link comes back: a new session hears the rooms the node has
    /// members in before the core is told.
    func linkUp(_ node: String) {
        bus.heard[node] = outputs[node]!.rooms
        cores[node]!.clusterUp(output: outputs[node]!)
    }

    /// A cluster of `nodes` with `clients` (node, id) connected, welcomed,
    /// heard of everywhere, and their lines so far taken: where most tests start.
    static func settled(_ nodes: [String], clients: [(String, Int)]) -> SimulatedCluster {
        let cluster = SimulatedCluster(nodes)
        for (node, id) in clients { cluster.connect(node, id) }
        cluster.pump()
        for (node, id) in clients { _ = cluster.take(node, id) }
        return cluster
    }

    func connect(_ node: String, _ id: Int) {
        time += 1
        cores[node]!.connect(ConnectionID(id), output: outputs[node]!)
    }

    func say(_ node: String, _ id: Int, _ input: String) {
        time += 1
        unread[node, default: [:]][id, default: []] += Array(input.utf8)
        feed(node, id)
    }

    func isHeld(_ node: String, _ id: Int) -> Bool { held.contains("\(node)/\(id)") }

    private func feed(_ node: String, _ id: Int) {
        guard !isHeld(node, id), let bytes = unread[node]?[id], !bytes.isEmpty else { return }
        let intake = bytes.withUnsafeBytes { cores[node]!.receive($0, from: ConnectionID(id), output: outputs[node]!) }
        unread[node]![id] = Array(bytes[intake.consumed...])
        if intake.held { held.insert("\(node)/\(id)") }
    }

    func linkDown(_ node: String) {
        bus.heard[node] = []
        cores[node]!.clusterDown(output: outputs[node]!)
        resumeHeld(node)
    }

    /// Lines `id` on `node` got since the last call.
    func take(_ node: String, _ id: Int) -> [String] {
        defer { outputs[node]!.lines[ConnectionID(id)] = [] }
        return outputs[node]!.lines[ConnectionID(id)] ?? []
    }
}

@Suite("Cluster core: events and the replica")
struct ClusterCoreTests {
    @Test("membership: each event's operations on the keys, and the keys' answers decoded; garbage is no answer")
    func membershipCodec() {
        let who = RemoteClientID(node: "east", id: 12)
        #expect(MembershipKeys.operations(for: .hello(who, since: 1, nick: "guest1", room: "lobby")) == ["hello", "12", "lobby", "lobby", "guest1"])
        #expect(MembershipKeys.operations(for: .here(who, since: 1, nick: "Ann", room: "Dev")) == ["here", "12", "dev", "Dev", "Ann"])
        #expect(MembershipKeys.operations(for: .join(who, room: "Dev")) == ["join", "12", "dev", "Dev", ""])
        #expect(MembershipKeys.operations(for: .nick(who, since: 2, nick: "bob")) == ["nick", "12", "", "", "bob"])
        #expect(MembershipKeys.operations(for: .rename(who, since: 2, nick: "guest3")) == ["nick", "12", "", "", "guest3"])
        #expect(MembershipKeys.operations(for: .bye(who, suffix: " (quit)")) == ["out", "12", "", "", ""])
        #expect(MembershipKeys.operations(for: .announced(node: "east", keeping: [4, 9])) == ["keep", "4", "", "", "", "keep", "9", "", "", ""])
        for event: ClusterEvent in [.say(who, text: [0x41]), .sync(node: "east"), .shared(who, name: "a.txt", size: 1), .announced(node: "east", keeping: [])] {
            #expect(MembershipKeys.operations(for: event).isEmpty)
        }
        let who3 = ClusterAnswer.decode("who 3 ann Bob")
        #expect(who3?.id == ConnectionID(3) && who3?.answer == .who(["ann", "Bob"]))
        #expect(ClusterAnswer.decode("who 3 ")?.answer == .who([]))
        let rooms = ClusterAnswer.decode("rooms 4 dev Dev 2 lobby lobby 1")
        #expect(rooms?.answer == .rooms([.init(key: "dev", spelling: "Dev", count: 2), .init(key: "lobby", spelling: "lobby", count: 1)]))
        #expect(ClusterAnswer.decode("count 5 3")?.answer == .count(3))
        for garbage in ["", "who", "who x ann", "who 3 a!b", "rooms 4 dev Dev", "rooms 4 dev Ops 2", "rooms 4 dev Dev -1", "count 5", "count 5 0", "hello 1 2"] {
            #expect(ClusterAnswer.decode(garbage) == nil, "\(garbage)")
        }
    }

    @Test("every event survives encoding; garbage is no event")
    func eventCodec() {
        let who = RemoteClientID(node: "east-1:7007", id: 12)
        let events: [ClusterEvent] = [
            .hello(who, since: 1_700_000_000_123, nick: "guest1", room: "lobby"),
            .here(who, since: 5, nick: "Ann-2", room: "Dev_ops"),
            .join(who, room: "x"),
            .nick(who, since: 9, nick: "bob"),
            .say(who, text: Array("hello  world ".utf8)),
            .say(who, text: []),
            .privateMessage(who, to: RemoteClientID(node: "w", id: 3), text: Array("psst".utf8)),
            .bye(who, suffix: " (quit text)"),
            .bye(who, suffix: ""),
            .shared(who, name: "notes-2.txt", size: 1234),
            .sync(node: "w"),
            .announced(node: "w", keeping: []),
            .announced(node: "w", keeping: [3, 17]),
        ]
        for event in events { #expect(ClusterEvent(decoding: event.encoded) == event, "\(event)") }
        for garbage in ["", "hello", "hello a 1 2 bad! lobby", "join a x lobby", "nick a 1 x", "pm a 1 b", "sync", "sync a b", "frob a 1", "say a", "shared a 1 5", "shared a 1 x f", "shared a 1 5 ../f", "shared a 1 5 f g", "announced", "announced w x", "announced w 3 x"] {
            #expect(ClusterEvent(decoding: Array(garbage.utf8)) == nil, "\(garbage)")
        }
    }

    @Test("an upload is told to its room on every node; a node whose directory has the file lists it")
    func sharedFiles() {
        let cluster = SimulatedCluster.settled(["a", "b", "c"], clients: [("a", 1), ("b", 1), ("c", 1)])
        cluster.say("c", 1, "/join elsewhere\n")
        cluster.pump()
        _ = cluster.take("a", 1) + cluster.take("b", 1) + cluster.take("c", 1)
        cluster.cores["a"]!.uploadStored(ConnectionID(1), name: "x.txt", size: 5, sha256: "ab", output: cluster.outputs["a"]!)
        cluster.pump()
        #expect(cluster.take("a", 1) == ["* stored x.txt (5 bytes, sha256 ab)"])
        #expect(cluster.take("b", 1) == ["* guest1 shared x.txt (5 bytes)"])
        #expect(cluster.take("c", 1) == [])  // another room
        // No file sharing on these nodes: nobody looks.
        #expect(cluster.outputs.values.allSatisfy { $0.looked.isEmpty && $0.lookedForAll == 0 })
    }

    /// Uploads told while a link was down are heard by nobody: when it is
    /// back, the node whose link it was and every node that hears its
    /// `sync` look through the directory for what they missed.
    @Test("with file sharing, a link that comes back has it and the nodes that hear it look for every file")
    func lookingForFilesAfterAnOutage() {
        let cluster = SimulatedCluster(["a", "b", "c"], fileSharing: FileSharing())
        // Starting, each node looks once for its own link and once for each
        // other node's sync (a new node may bring files).
        #expect(cluster.outputs.values.map(\.lookedForAll) == [3, 3, 3])
        cluster.connect("a", 1)
        cluster.pump()
        cluster.linkDown("b")
        cluster.pump()
        #expect(cluster.outputs.values.map(\.lookedForAll) == [3, 3, 3])
        cluster.linkUp("b")
        cluster.pump()
        #expect(["a", "b", "c"].map { cluster.outputs[$0]!.lookedForAll } == [4, 4, 4])
        // What the store finds is listed, once.
        let b = cluster.cores["b"]!
        #expect(b.fileFound("late.txt", size: 4))
        #expect(!b.fileFound("late.txt", size: 4))
        _ = cluster.take("a", 1)
        cluster.connect("b", 1)
        cluster.pump()
        _ = cluster.take("b", 1)
        cluster.say("b", 1, "/files\n")
        #expect(cluster.take("b", 1) == ["* files: late.txt (4)"])

        // Without file sharing, nobody looks.
        let plain = SimulatedCluster(["a", "b"])
        plain.linkDown("b")
        plain.linkUp("b")
        plain.pump()
        #expect(plain.outputs.values.allSatisfy { $0.lookedForAll == 0 })
    }

    @Test("with file sharing, the other nodes look for a stored file and list what they find")
    func sharedDirectory() {
        let cluster = SimulatedCluster(["a", "b"], fileSharing: FileSharing())
        cluster.connect("a", 1)
        cluster.pump()
        cluster.connect("b", 1)
        cluster.pump()
        _ = cluster.take("a", 1) + cluster.take("b", 1)
        let a = cluster.cores["a"]!
        cluster.say("a", 1, "/upload x.txt 5\n")
        #expect(a.claimUpload(ConnectionID(1), requested: "x.txt", size: 5) == "x.txt")
        a.uploadStored(ConnectionID(1), name: "x.txt", size: 5, sha256: "ab", output: cluster.outputs["a"]!)
        cluster.pump()
        #expect(cluster.take("b", 1) == ["* guest1 shared x.txt (5 bytes)"])
        #expect(cluster.outputs["b"]!.looked == ["x.txt 5"])
        #expect(cluster.outputs["a"]!.looked == [])  // its own
        // Not listed until the store finds it.
        cluster.say("b", 1, "/files\n/download x.txt\n")
        #expect(cluster.take("b", 1) == ["* files: none", "! no such file: x.txt"])
        cluster.cores["b"]!.fileFound("x.txt", size: 5)
        cluster.say("b", 1, "/files\n")
        #expect(cluster.take("b", 1) == ["* files: x.txt (5)"])
        // A name listed already is neither looked for again nor replaced.
        cluster.cores["b"]!.fileFound("x.txt", size: 9)
        cluster.cores["a"]!.apply(.shared(RemoteClientID(node: "b", id: 1), name: "x.txt", size: 7), output: cluster.outputs["a"]!)
        #expect(cluster.outputs["a"]!.looked == [])
        cluster.say("b", 1, "/files\n")
        #expect(cluster.take("b", 1) == ["* files: x.txt (5)"])
    }

    /// A `/join` is told once its event is back from the stream, so a
    /// `/who` or `/rooms` on any server after `* you joined` counts the
    /// newcomer; what the room says meanwhile follows the reply.
    @Test("a join is told once every server has it; lines meanwhile follow the reply; a link going down tells it at once")
    func joinToldOnceEveryServerHasIt() {
        let cluster = SimulatedCluster.settled(["a", "b"], clients: [("a", 1), ("a", 2), ("b", 1)])
        cluster.say("a", 2, "/join dev\n")
        cluster.pump()
        #expect(cluster.take("a", 2) == ["* you joined #dev (1 here)"])
        _ = cluster.take("a", 1) + cluster.take("b", 1)

        cluster.say("a", 1, "/join DEV\n/who\n")
        // In the room here at once, but not told, and its input waits.
        #expect(cluster.take("a", 1) == [])
        #expect(cluster.isHeld("a", 1))
        #expect(cluster.take("a", 2) == ["* guest1 joined #dev"])
        cluster.say("a", 2, "hello\n")
        cluster.say("b", 1, "/join dev\n")  // after a's join in the stream
        cluster.pump()
        #expect(cluster.take("a", 1) == [
            "* you joined #dev (2 here)", "<guest2> hello", "* #dev: guest1, guest2 (2)", "* guest3 joined #dev",
        ])
        #expect(cluster.take("b", 1) == ["* guest1 left #lobby", "* you joined #dev (3 here)"])

        // The link goes down while a join waits: told at once, as alone.
        cluster.say("a", 1, "/join lobby\n")
        #expect(cluster.take("a", 1) == [])
        cluster.linkDown("a")
        #expect(cluster.take("a", 1) == ["* you joined #lobby (1 here)"])
        #expect(!cluster.isHeld("a", 1))

        // A busy room while a join travels: past 256 KiB held, it is told at once.
        cluster.linkUp("a")
        cluster.pump()
        for (node, id) in [("a", 1), ("a", 2), ("b", 1)] { _ = cluster.take(node, id) }
        let long = String(repeating: "x", count: 4000)
        cluster.say("a", 1, "/join dev\n")
        cluster.say("a", 2, String(repeating: "\(long)\n", count: 65))
        #expect(cluster.take("a", 1).isEmpty)
        cluster.say("a", 2, "\(long)\n")
        let told = cluster.take("a", 1)
        #expect(told.first == "* you joined #dev (3 here)")
        #expect(told.count == 67 && told.dropFirst().allSatisfy { $0 == "<guest2> \(long)" }, "\(told.count) lines")
        #expect(cluster.outputs["a"]!.resumed == [ConnectionID(1)])  // its input is handled again
        cluster.pump()
        #expect(!cluster.take("a", 1).contains { $0.hasPrefix("* you joined") })
    }

    /// A command that reads the cluster's state waits while events that
    /// reached its server are not applied, then runs once (not waiting
    /// again), and the client's next lines after it. (`/who` and `/rooms`
    /// ask the keys instead: their answer follows those events anyway.)
    @Test("/msg, /nick and /join wait for events that reached the node; other lines do not")
    func readingCommandsWaitForEventsThatArrived() {
        let cluster = SimulatedCluster.settled(["a", "b"], clients: [("a", 1), ("b", 1)])
        let (b, output) = (cluster.cores["b"]!, cluster.outputs["b"]!)
        output.eventsUnapplied = true
        cluster.say("b", 1, "hi\n/help\n")
        #expect(cluster.take("b", 1).count == Replies.help.count)  // not waiting
        cluster.say("a", 1, "/nick Ann\n")  // its event not yet delivered to b
        cluster.say("b", 1, "/msg ann one\n/msg ann two\n")
        #expect(cluster.take("b", 1) == [])
        #expect(cluster.isHeld("b", 1))
        // The link applies what it had, then tells the core; it runs the
        // first /msg even though more is pending now, then the second waits again.
        cluster.pump()
        _ = cluster.take("b", 1)
        b.eventsApplied(output: output)
        cluster.resumeHeld("b")
        #expect(cluster.take("b", 1) == ["* sent to Ann"])
        output.eventsUnapplied = false
        b.eventsApplied(output: output)
        cluster.resumeHeld("b")
        #expect(cluster.take("b", 1) == ["* sent to Ann"])
        #expect(!cluster.isHeld("b", 1))
        // /who waits for its answer from the keys, not for the events.
        output.eventsUnapplied = true
        cluster.say("b", 1, "/who\n")
        #expect(cluster.take("b", 1) == [])
        cluster.pump()
        #expect(cluster.take("b", 1) == ["* #lobby: Ann, guest2 (2)"])
        output.eventsUnapplied = false
        // The link goes down: waiting commands are answered as alone.
        output.eventsUnapplied = true
        cluster.say("b", 1, "/msg ann hello\n")
        #expect(cluster.take("b", 1) == [])
        cluster.linkDown("b")
        #expect(cluster.take("b", 1) == ["! no such nick: ann"])
        #expect(!cluster.isHeld("b", 1))
    }

    /// A client that leaves (`/quit`, end of input) has its connection
    /// closed once its `bye` is back from the stream: after the close, no
    /// server lists it and its nick is free everywhere.
    @Test("a client that leaves is closed once every server has its bye; one the server drops is closed at once")
    func leaverClosedOnceEveryServerHasIt() {
        let cluster = SimulatedCluster.settled(["a", "b"], clients: [("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 1)])
        let (a, output) = (cluster.cores["a"]!, cluster.outputs["a"]!)
        cluster.say("a", 1, "/quit later\n")
        #expect(cluster.take("a", 1) == ["* bye"])
        a.endOfInput(from: ConnectionID(2), output: output)
        #expect(output.closed == [])
        cluster.pump()
        #expect(output.closed == [ConnectionID(1), ConnectionID(2)])
        #expect(cluster.take("b", 1) == ["* guest1 left #lobby (later)", "* guest2 left #lobby"])

        // Dropped by the server (a timeout, an error): closed at once.
        a.disconnect(ConnectionID(3), reason: .idleTimeout, output: output)
        #expect(output.closed.last == ConnectionID(3))
        // A connection that ends while its bye travels is closed then, once.
        cluster.say("a", 4, "/quit\n")
        a.disconnect(ConnectionID(4), reason: .connectionError, output: output)
        #expect(output.closed.last == ConnectionID(4))
        cluster.pump()
        #expect(output.closed == [ConnectionID(1), ConnectionID(2), ConnectionID(3), ConnectionID(4)])

        // The link goes down while a bye travels: closed at once.
        cluster.connect("a", 5)
        cluster.pump()
        cluster.say("a", 5, "/quit\n")
        cluster.linkDown("a")
        #expect(output.closed.last == ConnectionID(5))
    }

    @Test("rooms, counts, /who, /rooms and /msg across nodes")
    func oneChat() {
        let cluster = SimulatedCluster(["a", "b"])
        cluster.connect("a", 1)
        cluster.pump()
        cluster.connect("b", 1)
        // The guest nick is claimed first: the welcome waits for the stream.
        #expect(cluster.take("b", 1) == [])
        cluster.pump()
        #expect(cluster.take("b", 1) == ["* welcome guest2, you are in #lobby (2 here); /help lists commands"])
        #expect(cluster.take("a", 1) == ["* welcome guest1, you are in #lobby (1 here); /help lists commands", "* guest2 joined #lobby"])

        cluster.say("a", 1, "/nick Zed\n/join Dev\n")
        cluster.pump()
        #expect(cluster.take("b", 1) == ["* guest1 is now Zed", "* Zed left #lobby"])
        cluster.say("b", 1, "/nick zed\n/join dev\n/who\n/rooms\nhi\n/msg ZED psst\n")
        // b has nobody in #dev yet: the join waits until b hears the room.
        #expect(cluster.take("b", 1) == ["! nick taken: zed"])
        cluster.pump()
        #expect(cluster.take("b", 1) == [
            "* you joined #Dev (2 here)", "* #Dev: guest2, Zed (2)", "* rooms: #Dev (2)", "* sent to Zed",
        ])
        cluster.pump()
        #expect(cluster.take("a", 1) == [
            "* you are now Zed", "* you joined #Dev (1 here)", "* guest2 joined #Dev", "<guest2> hi", "[pm from guest2] psst",
        ])
        // b's client leaves: a hears it, and the nick and guest number are free.
        cluster.say("b", 1, "/quit later\n")
        cluster.pump()
        #expect(cluster.take("a", 1) == ["* guest2 left #Dev (later)"])
        cluster.connect("a", 2)
        cluster.pump()
        #expect(cluster.take("a", 2) == ["* welcome guest1, you are in #lobby (1 here); /help lists commands"])
        cluster.say("a", 1, "/who\n/rooms\n")
        cluster.pump()
        #expect(cluster.take("a", 1) == ["* #Dev: Zed (1)", "* rooms: #Dev (1), #lobby (1)"])
    }

    @Test("guest numbers skip the other nodes' guests")
    func guestNumbers() {
        let cluster = SimulatedCluster(["a", "b"])
        for id in 1...3 {
            cluster.connect("a", id)
            cluster.pump()
        }
        cluster.connect("b", 1)
        cluster.pump()
        #expect(cluster.take("b", 1) == ["* welcome guest4, you are in #lobby (4 here); /help lists commands"])
        cluster.say("a", 2, "/nick x\n")
        cluster.pump()
        cluster.connect("b", 2)
        cluster.pump()
        #expect(cluster.take("b", 2) == ["* welcome guest2, you are in #lobby (5 here); /help lists commands"])
    }

    @Test("two servers welcome at once: each guest number is given once, in the stream's order, and nobody is renamed")
    func simultaneousWelcomes() {
        let cluster = SimulatedCluster(["a", "b"])
        // Both would give guest1: a's claim comes first in the stream.
        cluster.connect("a", 1)
        cluster.connect("b", 1)
        cluster.pump()
        #expect(cluster.take("a", 1) == ["* welcome guest1, you are in #lobby (1 here); /help lists commands", "* guest2 joined #lobby"])
        #expect(cluster.take("b", 1) == ["* welcome guest2, you are in #lobby (2 here); /help lists commands"])
        cluster.say("b", 1, "/who\n")
        cluster.pump()
        #expect(cluster.take("b", 1) == ["* #lobby: guest1, guest2 (2)"])
        // Three at once on each of two servers: six distinct numbers.
        for id in 2...4 {
            cluster.connect("a", id)
            cluster.connect("b", id)
        }
        cluster.pump()
        var welcomed: [String] = []
        for node in ["a", "b"] {
            for id in 2...4 {
                let lines = cluster.take(node, id)
                let welcome = lines.first ?? ""
                #expect(welcome.hasPrefix("* welcome guest"), "\(node)/\(id): \(lines)")
                #expect(!lines.contains { $0.contains("(nick taken elsewhere)") }, "\(node)/\(id): \(lines)")
                welcomed.append(String(welcome.split(separator: " ")[2].dropLast()))
            }
        }
        #expect(Set(welcomed) == Set((3...8).map { "guest\($0)" }), "\(welcomed)")
    }

    @Test("a /nick guestN typed while another server welcomes its guestN: the first in the stream gets it; nobody is renamed",
          arguments: [false, true])
    func typedGuestNameAgainstAWelcome(typedFirst: Bool) {
        let cluster = SimulatedCluster.settled(["a", "b"], clients: [("a", 1), ("b", 1)])
        // b's next guest would be guest3; a's client asks for that name by hand.
        if typedFirst {
            cluster.say("a", 1, "/nick Guest3\n")
            cluster.connect("b", 2)
        } else {
            cluster.connect("b", 2)
            cluster.say("a", 1, "/nick Guest3\n")
        }
        #expect(cluster.isHeld("a", 1), "the typed guest name is a claim, decided in the stream")
        cluster.pump()
        let typed = cluster.take("a", 1)
        let welcome = cluster.take("b", 2).first ?? ""
        if typedFirst {
            // b's claim of guest3 loses where it falls; b claims the next
            // free number, guest1, which a's client has just given up.
            #expect(typed == ["* you are now Guest3", "* guest1 joined #lobby"])
            #expect(welcome == "* welcome guest1, you are in #lobby (3 here); /help lists commands")
        } else {
            #expect(typed == ["* guest3 joined #lobby", "! nick taken: Guest3"])
            #expect(welcome == "* welcome guest3, you are in #lobby (3 here); /help lists commands")
        }
        // Nobody was renamed afterwards, and both servers agree on the room.
        for (node, id) in [("a", 1), ("b", 1), ("b", 2)] {
            #expect(!cluster.take(node, id).contains { $0.contains("(nick taken elsewhere)") })
            cluster.say(node, id, "/who\n")
        }
        cluster.pump()
        let who = typedFirst ? "* #lobby: guest1, guest2, Guest3 (3)" : "* #lobby: guest1, guest2, guest3 (3)"
        #expect(cluster.take("a", 1) == [who])
        #expect(cluster.take("b", 1) == [who])
        #expect(cluster.take("b", 2) == [who])
    }

    @Test("a claim of a name taken earlier is refused; a rename (a clash settled by its server) never is")
    func renamesAreNeverRefused() {
        let event = ClusterEvent.rename(RemoteClientID(node: "b", id: 3), since: 42, nick: "guest9")
        #expect(ClusterEvent(decoding: event.encoded) == event)
        #expect(text(event.encoded) == "rename b 3 42 guest9")
        let cluster = SimulatedCluster.settled(["a", "b"], clients: [("a", 1), ("b", 1)])
        cluster.say("a", 1, "/nick zed\n")
        cluster.pump()
        #expect(cluster.take("a", 1) == ["* you are now zed"])
        let b1 = RemoteClientID(node: "b", id: 1)
        let (core, output) = (cluster.cores["a"]!, cluster.outputs["a"]!)
        core.apply(.nick(b1, since: 1, nick: "Zed"), output: output)
        #expect(cluster.take("a", 1) == [], "a claim of a nick taken earlier in the stream changes nothing")
        core.apply(.rename(b1, since: 1, nick: "Zed"), output: output)
        // Applied; b's client took it at 1, before a's: a's client gives way.
        let lines = cluster.take("a", 1)
        #expect(lines.first == "* guest2 is now Zed", "\(lines)")
        #expect(lines.dropFirst().first?.hasSuffix("(nick taken elsewhere)") == true, "\(lines)")
    }

    @Test("what a client sends before its welcome waits for it, then is handled")
    func inputBeforeTheWelcome() {
        let cluster = SimulatedCluster.settled(["a", "b"], clients: [("b", 1)])
        cluster.connect("a", 1)
        cluster.say("a", 1, "/nick Ann\nhello\n")
        #expect(cluster.isHeld("a", 1))
        #expect(cluster.take("a", 1) == [])
        #expect(cluster.take("b", 1) == [])
        cluster.pump()
        #expect(!cluster.isHeld("a", 1))
        #expect(cluster.take("a", 1) == ["* welcome guest2, you are in #lobby (2 here); /help lists commands", "* you are now Ann"])
        #expect(cluster.take("b", 1) == ["* guest2 joined #lobby", "* guest2 is now Ann", "<Ann> hello"])
    }

    @Test("a client that goes before its welcome: its guest number is free, and the others hear it leave once")
    func leavingBeforeTheWelcome() {
        let cluster = SimulatedCluster.settled(["a", "b"], clients: [("b", 1)])
        cluster.connect("a", 1)
        cluster.cores["a"]!.disconnect(ConnectionID(1), reason: .connectionError, output: cluster.outputs["a"]!)
        #expect(cluster.outputs["a"]!.closed == [ConnectionID(1)])
        #expect(cluster.cores["a"]!.clientCount == 0)
        cluster.pump()
        #expect(cluster.take("a", 1) == [])
        #expect(cluster.take("b", 1) == ["* guest2 joined #lobby", "* guest2 left #lobby (connection error)"])
        cluster.connect("a", 2)
        cluster.pump()
        #expect(cluster.take("a", 2) == ["* welcome guest2, you are in #lobby (2 here); /help lists commands"])
    }

    @Test("the link goes down with welcomes in flight: they are welcomed here, and read on")
    func linkDownBeforeTheWelcome() {
        let cluster = SimulatedCluster(["a"])
        cluster.connect("a", 1)
        cluster.connect("a", 2)
        cluster.say("a", 2, "/who\n")
        #expect(cluster.cores["a"]!.clientCount == 2)
        cluster.linkDown("a")
        #expect(cluster.take("a", 1) == ["* welcome guest1, you are in #lobby (1 here); /help lists commands", "* guest2 joined #lobby"])
        #expect(cluster.take("a", 2) == ["* welcome guest2, you are in #lobby (2 here); /help lists commands", "* #lobby: guest1, guest2 (2)"])
        #expect(!cluster.isHeld("a", 2))
    }

    @Test("a claim waits for its turn in the stream, and so do the lines after it")
    func aClaimWaitsForTheStream() {
        let cluster = SimulatedCluster.settled(["a", "b"], clients: [("a", 1), ("b", 1)])
        cluster.say("a", 1, "/nick bob\nhello\n/who\n")
        // Nothing is answered, said or shown before the claim comes back.
        #expect(cluster.isHeld("a", 1))
        #expect(cluster.take("a", 1) == [])
        #expect(cluster.take("b", 1) == [])
        cluster.say("b", 1, "/nick BOB\n")
        #expect(cluster.take("b", 1) == [], "a claim in flight elsewhere is not known yet")
        cluster.pump()
        #expect(!cluster.isHeld("a", 1))
        #expect(cluster.take("a", 1) == ["* you are now bob", "* #lobby: bob, guest2 (2)"])
        // b's claim came after a's in the stream (and before a's line, which
        // a's client sent once its claim was decided): refused, never shown.
        #expect(cluster.take("b", 1) == ["* guest1 is now bob", "! nick taken: BOB", "<bob> hello"])
        cluster.say("a", 1, "/who\n")
        cluster.say("b", 1, "/who\n")
        cluster.pump()
        #expect(cluster.take("a", 1) == ["* #lobby: bob, guest2 (2)"])
        #expect(cluster.take("b", 1) == ["* #lobby: bob, guest2 (2)"])
    }

    @Test("two servers claim one nick at once: the first claim in the stream gets it everywhere; nobody is renamed", arguments: [false, true])
    func clash(laterOnA: Bool) {
        let cluster = SimulatedCluster.settled(["a", "b"], clients: [("a", 1), ("b", 1)])
        // Both ask for "bob" before either hears of the other.
        let (first, second) = laterOnA ? ("b", "a") : ("a", "b")
        cluster.say(first, 1, "/nick bob\n")
        cluster.say(second, 1, "/nick BOB\n")
        #expect(cluster.take(first, 1) == [] && cluster.take(second, 1) == [])
        cluster.pump()
        let firstGuest = laterOnA ? "guest2" : "guest1"
        #expect(cluster.take(first, 1) == ["* you are now bob"])
        #expect(cluster.take(second, 1) == ["* \(firstGuest) is now bob", "! nick taken: BOB"])
        // Both nodes list the same two, distinct, nicks.
        cluster.say("a", 1, "/who\n")
        cluster.say("b", 1, "/who\n")
        cluster.pump()
        let whoA = cluster.take("a", 1).last!
        let whoB = cluster.take("b", 1).last!
        #expect(whoA == whoB)
        #expect(whoA.hasPrefix("* #lobby: bob, guest") && whoA.hasSuffix("(2)"), "\(whoA)")
        #expect(cluster.replicasMatchTheKeys())
    }

    @Test("many claims of a few nicks from three servers at once: every server ends with the same holders, each told once")
    func manyClaimsAgree() {
        let nodes = ["a", "b", "c"]
        let cluster = SimulatedCluster(nodes)
        for node in nodes { for id in 1...4 { cluster.connect(node, id) } }
        cluster.pump()
        for node in nodes { for id in 1...4 { _ = cluster.take(node, id) } }
        var granted = 0
        for round in 0..<3 {
            for (index, node) in nodes.enumerated() {
                for id in 1...4 { cluster.say(node, id, "/nick N\((id + index + round) % 3)\n") }
            }
            cluster.pump()
            // Each nick went to one client at most.
            var grants: [String: Int] = [:]
            for node in nodes {
                for id in 1...4 {
                    for line in cluster.take(node, id) where line.hasPrefix("* you are now ") {
                        grants[line.dropFirst("* you are now ".count).lowercased(), default: 0] += 1
                    }
                }
            }
            #expect(grants.values.allSatisfy { $0 == 1 }, "round \(round): \(grants)")
            granted += grants.count
        }
        #expect(granted >= 3)
        // Every server lists the same twelve distinct nicks.
        var lists: Set<String> = []
        for node in nodes { cluster.say(node, 1, "/who\n") }
        cluster.pump()
        for node in nodes { lists.insert(cluster.take(node, 1).last!) }
        #expect(cluster.replicasMatchTheKeys())
        #expect(lists.count == 1, "the servers disagree: \(lists)")
        let names = lists.first!.dropFirst("* #lobby: ".count).split(separator: " (")[0].split(separator: ", ").map { $0.lowercased() }
        #expect(names.count == 12 && Set(names).count == 12, "\(names)")
        for nick in ["n0", "n1", "n2"] { #expect(names.contains(nick), "\(names)") }
    }

    @Test("the link goes down with a claim in flight: decided here, as standalone, and the client reads on")
    func aClaimInFlightWhenTheLinkGoes() {
        let cluster = SimulatedCluster.settled(["a", "b"], clients: [("a", 1), ("a", 2)])
        cluster.say("a", 1, "/nick bob\n/who\n")
        cluster.say("a", 2, "/nick Bob\n")
        #expect(cluster.take("a", 2) == ["! nick taken: Bob"], "a claim in flight here is taken for the others here")
        cluster.bus.queue = []  // lost with the link
        cluster.linkDown("a")
        #expect(!cluster.isHeld("a", 1))
        #expect(cluster.take("a", 1) == ["* you are now bob", "* #lobby: bob, guest2 (2)"])
        #expect(cluster.take("a", 2) == ["* guest1 is now bob"])
    }

    @Test("a client that leaves with its claim in flight frees the nick for the others here")
    func aClaimantLeaves() {
        let cluster = SimulatedCluster(["a"])
        cluster.connect("a", 1)
        cluster.connect("a", 2)
        cluster.pump()
        cluster.say("a", 1, "/nick bob\n")
        cluster.cores["a"]!.disconnect(ConnectionID(1), reason: .connectionError, output: cluster.outputs["a"]!)
        cluster.pump()
        _ = cluster.take("a", 2)
        cluster.say("a", 2, "/nick bob\n")
        cluster.pump()
        #expect(cluster.take("a", 2) == ["* you are now bob"])
    }

    @Test("a server hears a room's lines only while it has members there; a join waits until it does")
    func roomChannels() {
        let cluster = SimulatedCluster(["a", "b"])
        cluster.connect("a", 1)
        cluster.connect("b", 1)
        cluster.say("a", 1, "/nick ann\n/join dev\n")
        cluster.pump()
        _ = (cluster.take("a", 1), cluster.take("b", 1))
        let before = cluster.delivered["b", default: 0]
        for index in 0..<10 { cluster.say("a", 1, "line \(index)\n") }
        cluster.pump()
        #expect(cluster.delivered["b", default: 0] == before, "b heard #dev's lines with nobody there")
        // b's client joins: nothing until b hears #dev, then every line from its join on.
        cluster.say("b", 1, "/join DEV\nhello\n")
        #expect(cluster.isHeld("b", 1))
        #expect(cluster.take("b", 1) == [])
        cluster.say("a", 1, "next\n")
        cluster.pump()
        // (b heard #dev from before a's line: its client had joined by then.)
        #expect(cluster.take("b", 1) == ["* you joined #dev (2 here)", "<ann> next"])
        #expect(cluster.take("a", 1) == ["* guest2 joined #dev", "<guest2> hello"])
        cluster.say("a", 1, "after\n")
        cluster.pump()
        #expect(cluster.take("b", 1) == ["<ann> after"])
        // The last one leaves: b stops hearing #dev.
        cluster.say("b", 1, "/join lobby\n")
        cluster.pump()
        _ = cluster.take("b", 1)
        let left = cluster.delivered["b", default: 0]
        cluster.say("a", 1, "alone again\n")
        cluster.pump()
        #expect(cluster.delivered["b", default: 0] == left)
    }

    @Test("the link goes down while joins wait for their rooms: they join here, in order")
    func joinsInFlightWhenTheLinkGoes() {
        let cluster = SimulatedCluster(["a"])
        for id in 1...3 { cluster.connect("a", id) }
        cluster.pump()
        cluster.say("a", 1, "/join x\n/who\n")
        cluster.say("a", 2, "/join y\n")
        cluster.say("a", 3, "/join X\n")
        for id in 1...3 { #expect(cluster.isHeld("a", id)) }
        cluster.bus.queue = []  // lost with the link
        for id in 1...3 { _ = cluster.take("a", id) }
        cluster.linkDown("a")
        #expect(cluster.take("a", 1) == ["* you joined #x (1 here)", "* guest3 joined #x", "* #x: guest1, guest3 (2)"])
        #expect(cluster.take("a", 2) == ["* guest1 left #lobby", "* guest3 left #lobby", "* you joined #y (1 here)"])
        #expect(cluster.take("a", 3) == ["* guest1 left #lobby", "* you joined #x (2 here)"])
        // The link keeps the rooms to hear when it is back.
        #expect(cluster.outputs["a"]!.rooms == ["x", "y"])
    }

    @Test("a lost node's clients leave with (server lost); their nicks are free")
    func nodeGone() {
        let cluster = SimulatedCluster(["a", "b"])
        cluster.connect("a", 1)
        cluster.connect("b", 1)
        cluster.pump()
        cluster.say("b", 1, "/nick bob\n")
        cluster.pump()
        _ = cluster.take("a", 1)
        cluster.expireKeys("b")  // (with its presence, before it is found lost)
        cluster.lost("b")
        cluster.say("a", 1, "/who\n/nick bob\n")
        cluster.pump()
        #expect(cluster.take("a", 1) == ["* bob left #lobby (server lost)", "* #lobby: guest1 (1)", "* you are now bob"])
        #expect(cluster.replicasMatchTheKeys(of: ["a"]))  // (b is dead)
    }

    @Test("an outage: the other nodes are forgotten, then merged back; a nick taken on both sides stays with its first holder")
    func outage() {
        let cluster = SimulatedCluster.settled(["a", "b"], clients: [("a", 1), ("b", 1)])
        for node in ["a", "b"] { cluster.linkDown(node) }
        cluster.bus.queue = []  // nothing crosses while the link is down
        cluster.say("b", 1, "/nick ann\n/who\n")
        cluster.say("a", 1, "/nick Ann\n/who\n")
        #expect(cluster.take("b", 1) == ["* you are now ann", "* #lobby: ann (1)"])
        #expect(cluster.take("a", 1) == ["* you are now Ann", "* #lobby: Ann (1)"])
        cluster.bus.queue = []
        for node in ["a", "b"] { cluster.linkUp(node) }
        cluster.pump()
        // b's client took it first (an earlier clock): a's is renamed.
        #expect(cluster.take("a", 1) == ["* you are now guest1 (nick taken elsewhere)"])
        cluster.say("b", 1, "/who\n")
        cluster.pump()
        #expect(cluster.take("b", 1) == ["* Ann is now guest1", "* #lobby: ann, guest1 (2)"])
        // The keys follow at the next heartbeats: the guest nicks given up
        // during the outage go, ann's is b's client's, guest1's a's.
        cluster.pump()
        for node in ["a", "b"] { cluster.refreshKeys(node) }
        #expect(cluster.keysMatchTheClients())
        #expect(cluster.bus.keys.keys.sorted() == ["ann", "guest1"])
        #expect(cluster.bus.keys["ann"]?.hasPrefix("b ") == true && cluster.bus.keys["guest1"]?.hasPrefix("a ") == true)
        #expect(cluster.replicasMatchTheKeys())
    }

    @Test("a claim that takes its key but loses in the stream leaves the client's own nick in the membership keys")
    func aClaimThatLosesInTheStream() {
        let cluster = SimulatedCluster.settled(["a", "b"], clients: [("a", 1), ("b", 1)])
        // b's client took "bob" while b's link was down: its key is set
        // only at b's next heartbeat, after b's list comes back.
        cluster.linkDown("b")
        cluster.say("b", 1, "/nick bob\n")
        cluster.linkUp("b")
        cluster.pump(items: 1)  // b's sync: a answers with its list
        // a's client asks for it before a has heard b's list: a's claim takes the free key.
        cluster.say("a", 1, "/nick bob\n/who\n")
        cluster.pump()
        #expect(cluster.take("a", 1) == ["! nick taken: bob", "* #lobby: bob, guest1 (2)"])
        #expect(cluster.bus.members["lobby"]?.values.sorted() == ["bob", "guest1"])
        #expect(cluster.replicasMatchTheKeys())
    }

    @Test("a client whose welcome is in flight when its server lists its clients is kept, in the keys and everywhere")
    func aWelcomeInFlightIsKeptByTheList() {
        let cluster = SimulatedCluster.settled(["a", "b"], clients: [("a", 1), ("b", 1)])
        cluster.connect("a", 2)  // its hello goes out...
        // ...and a answers a sync before its hello comes back: its list
        // cannot name the client yet, and says to keep it.
        cluster.cores["a"]!.apply(.sync(node: "b"), output: cluster.outputs["a"]!)
        cluster.pump()
        #expect(cluster.take("a", 2) == ["* welcome guest3, you are in #lobby (3 here); /help lists commands"])
        #expect(cluster.take("b", 1) == ["* guest3 joined #lobby"])
        #expect(cluster.bus.members["lobby"]?.values.sorted() == ["guest1", "guest2", "guest3"])
        #expect(cluster.replicasMatchTheKeys())
    }

    @Test("a node's list replaces its membership keys and the others' view of it when its link comes back: who left meanwhile is gone")
    func membershipAfterAnOutage() {
        let cluster = SimulatedCluster.settled(["a", "b"], clients: [("a", 1), ("a", 2), ("b", 1)])
        #expect(cluster.bus.members["lobby"]?.count == 3)
        cluster.linkDown("a")
        cluster.bus.queue = []  // nothing crosses while the link is down
        cluster.cores["a"]!.disconnect(ConnectionID(2), reason: .connectionError, output: cluster.outputs["a"]!)
        cluster.say("a", 1, "/nick ann\n/join dev\n")
        #expect(cluster.bus.members["lobby"]?.count == 3, "the keys still hold what the stream last said")
        cluster.linkUp("a")
        cluster.pump()
        #expect(cluster.bus.members["lobby"].map { Array($0.values) } == ["guest3"])
        #expect(cluster.bus.members["dev"].map { Array($0.values) } == ["ann"])
        #expect(cluster.bus.spellings == ["dev": "dev", "lobby": "lobby"])
        // b hears that guest2 left: a's list no longer has it. (guest1,
        // now ann in #dev, is moved and renamed without a notice, as a
        // merge does.)
        #expect(cluster.take("b", 1) == ["* guest2 left #lobby"])
        #expect(cluster.replicasMatchTheKeys())
    }

    @Test("Redis decides: a claim of a nick whose key is held is refused, a held guest number skipped")
    func keysDecideClaims() {
        let cluster = SimulatedCluster.settled(["a", "b"], clients: [("a", 1), ("b", 1)])
        for node in ["a", "b"] { cluster.refreshKeys(node) }
        #expect(cluster.bus.keys.keys.sorted() == ["guest1", "guest2"])
        // Held by a client no server has heard of (a node that just died,
        // say): refused, and the lines after the claim are handled then.
        cluster.bus.keys["dave"] = "gone 7 1"
        let refused = cluster.bus.refused
        cluster.say("a", 1, "/nick dave\n/who\n")
        #expect(cluster.isHeld("a", 1))
        cluster.pump()
        #expect(cluster.take("a", 1) == ["! nick taken: dave", "* #lobby: guest1, guest2 (2)"])
        #expect(cluster.bus.refused == refused + 1 && !cluster.isHeld("a", 1))
        // Free again: taken, and the guest nick's key goes.
        cluster.bus.keys["dave"] = nil
        cluster.say("a", 1, "/nick dave\n")
        cluster.pump()
        #expect(cluster.take("a", 1) == ["* you are now dave"])
        #expect(cluster.bus.keys.keys.sorted() == ["dave", "guest2"])
        // guest1 is free in every replica, but its key is held: the welcome takes guest3.
        cluster.bus.keys["guest1"] = "gone 8 1"
        cluster.connect("b", 2)
        cluster.pump()
        #expect(cluster.take("b", 2) == ["* welcome guest3, you are in #lobby (3 here); /help lists commands"])
        cluster.bus.keys["guest1"] = nil
        // Leaving, renaming, and leaving with a claim in flight all free their keys.
        cluster.say("b", 1, "/nick erin\n")
        cluster.say("b", 2, "/nick fay\n")
        cluster.cores["b"]!.disconnect(ConnectionID(2), reason: .connectionError, output: cluster.outputs["b"]!)
        cluster.pump()
        #expect(cluster.bus.keys.keys.sorted() == ["dave", "erin"])
        #expect(cluster.keysMatchTheClients())
    }

    @Test("when the holder of a nick two servers claimed lets it go, the other claim holds it until its server settles")
    func aRivalClaimTakesOverTheNick() {
        let cluster = SimulatedCluster(["a"])
        cluster.connect("a", 1)
        cluster.pump()
        let (b1, c1) = (RemoteClientID(node: "b", id: 1), RemoteClientID(node: "c", id: 1))
        for event: ClusterEvent in [
            // b's and c's clients took "bob" while the link was down, and
            // both came back with it.
            .here(b1, since: 5, nick: "bob", room: "lobby"), .here(c1, since: 6, nick: "Bob", room: "lobby"),
            // b's client moves on before c's server has renamed its own.
            .nick(b1, since: 7, nick: "zed"),
        ] {
            cluster.inject(event, from: event.isFrom("b") ? "b" : "c")
        }
        _ = cluster.take("a", 1)
        cluster.say("a", 1, "/nick bob\n")
        #expect(cluster.take("a", 1) == ["! nick taken: bob"])
        cluster.inject(.bye(c1, suffix: ""), from: "c")
        cluster.say("a", 1, "/nick bob\n/who\n")
        cluster.pump()
        #expect(cluster.take("a", 1) == ["* Bob left #lobby", "* you are now bob", "* #lobby: bob, zed (2)"])
    }

    @Test("a node with thousands of clients, lost: each leaves once, every nick is free again")
    func aBigNodeGone() {
        let cluster = SimulatedCluster(["a"])
        let (core, output) = (cluster.cores["a"]!, cluster.outputs["a"]!)
        cluster.connect("a", 1)
        cluster.pump()
        let count = 5_000
        for id in 1...count {
            core.apply(.hello(RemoteClientID(node: "b", id: id), since: Int64(id), nick: "n\(id)", room: "lobby"), output: output)
        }
        _ = cluster.take("a", 1)
        core.nodeGone("b", suffix: " (server lost)", output: output)
        let lines = cluster.take("a", 1)
        #expect(lines.count == count && Set(lines).count == count)
        cluster.say("a", 1, "/nick n\(count)\n/who\n")
        cluster.pump()
        #expect(cluster.take("a", 1) == ["* you are now n\(count)", "* #lobby: n\(count) (1)"])
    }
}
