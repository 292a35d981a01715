import EchoChatCore
import EchoChatTestSupport
import Testing

@testable import EchoChatServer

/// The cluster link's Lua scripts for room membership, run by hand on a
/// real Redis: what each operation (`MembershipKeys`) leaves in the keys,
/// the counts and answers they publish on the node's channel, a list that
/// replaces a node's entries but keeps a welcome in flight, and a loss.
@Suite("Cluster membership scripts", .requires(.redisServer))
struct ClusterScriptTests {
    @Test("membership scripts: moves, renames, leaves, a node's list, the answers, a loss")
    func membershipScripts() throws {
        let redis = try RedisProcess()
        let keys = try redis.client()
        let watcher = try redis.client()
        _ = try watcher.command(["SUBSCRIBE", "echochat:to:n1", "echochat:cluster"])
        let life = "60000"
        func publish(_ operations: [String], replacing: Bool = false) throws {
            let reply = try keys.command(
                ["EVAL", ClusterLink.publishScript, "0", "n1", life, "echochat:events", "", replacing ? "1" : "0"] + operations)
            #expect(reply == .integer(1), "\(reply)")
        }
        func op(_ event: ClusterEvent) -> [String] { MembershipKeys.operations(for: event) }
        let hash = keys.hash
        let (one, two, three, four) = (
            RemoteClientID(node: "n1", id: 1), RemoteClientID(node: "n1", id: 2), RemoteClientID(node: "n1", id: 3),
            RemoteClientID(node: "n1", id: 4)
        )

        try publish(op(.hello(one, since: 1, nick: "guest1", room: "lobby")))
        #expect(try hash("echochat:who:lobby") == ["n1 1": "guest1"])
        #expect(try hash("echochat:in:n1") == ["1": "lobby"])
        try publish(op(.join(one, room: "Dev")))
        #expect(try hash("echochat:who:dev") == ["n1 1": "guest1"])
        #expect(try keys.command(["EXISTS", "echochat:who:lobby"]) == .integer(0))
        #expect(try hash("echochat:rooms") == ["dev": "Dev"])
        try publish(op(.hello(two, since: 2, nick: "guest2", room: "lobby")) + op(.nick(two, since: 3, nick: "bob")))
        try publish(op(.join(two, room: "dev")))  // the room keeps its first spelling
        #expect(try hash("echochat:who:dev") == ["n1 1": "guest1", "n1 2": "bob"])
        #expect(try hash("echochat:rooms") == ["dev": "Dev"])
        #expect(try watcher.messages(quietFor: 0.5) == ["count 1 1", "count 1 1", "count 2 1", "count 2 2"])
        let ttl = try keys.command(["PTTL", "echochat:who:dev"]).integer ?? -1
        #expect(ttl > 50_000 && ttl <= 60_000, "PTTL \(ttl)")

        try publish(op(.bye(one, suffix: "")))
        #expect(try hash("echochat:who:dev") == ["n1 2": "bob"])
        #expect(try hash("echochat:in:n1") == ["2": "dev"])
        // The node's list: 2 is listed (back in #lobby), 3's welcome is in
        // flight (kept), 4 left while the link was down (gone).
        try publish(op(.hello(three, since: 4, nick: "guest3", room: "lobby")) + op(.hello(four, since: 5, nick: "guest4", room: "lobby")))
        _ = try watcher.messages(quietFor: 0.3)
        try publish(op(.here(two, since: 3, nick: "bob", room: "lobby")) + op(.announced(node: "n1", keeping: [3])), replacing: true)
        #expect(try hash("echochat:who:lobby") == ["n1 2": "bob", "n1 3": "guest3"])
        #expect(try hash("echochat:in:n1") == ["2": "lobby", "3": "lobby"])
        #expect(try hash("echochat:rooms") == ["lobby": "lobby"])
        #expect(try watcher.messages(quietFor: 0.3) == [], "a here is no arrival: no count")

        // The answers, on the node's channel.
        #expect(try keys.command(["EVAL", ClusterLink.whoScript, "0", "n1", life, "7", "lobby"]) == .integer(1))
        #expect(try keys.command(["EVAL", ClusterLink.roomsScript, "0", "n1", life, "8"]) == .integer(1))
        let answers = try watcher.messages(quietFor: 0.5)
        #expect(answers.count == 2)
        let who = answers.first.flatMap { ClusterAnswer.decode($0) }
        #expect(who?.id == ConnectionID(7), "\(answers)")
        if case .who(let nicks)? = who?.answer { #expect(nicks.sorted() == ["bob", "guest3"]) } else { Issue.record("not a who answer: \(answers)") }
        #expect(answers.last == "rooms 8 lobby lobby 2")

        // A loss: announced (and the entries taken out) only by whoever takes the node off the list.
        #expect(try keys.command(["EVAL", ClusterLink.lostScript, "0", "n1", life]) == .integer(0))
        #expect(try hash("echochat:who:lobby").count == 2)
        #expect(try keys.command(["SADD", "echochat:nodes", "n1"]) == .integer(1))
        #expect(try keys.command(["EVAL", ClusterLink.lostScript, "0", "n1", life]) == .integer(1))
        #expect(try keys.command(["EXISTS", "echochat:who:lobby", "echochat:in:n1", "echochat:rooms"]) == .integer(0))
        #expect(try watcher.messages(quietFor: 0.5) == ["lost n1"])
    }
}
