import EchoChatCore
import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// `max-per-address` (PROTOCOL.md §3.6) and the rate-limited log, end to
/// end against every strategy.
@Suite("Abuse limits: max-per-address, log flood", .ownThreads)
struct AbuseLimitTests {
    static let tooMany = "! too many connections from your address"

    /// A client that is being served: chat got its welcome, echo its first
    /// line back. Nil if it was refused (the refusal line is returned in `refusal`).
    static func admit(_ server: ServerProcess, mode: ServerMode, host: String? = nil, refusal: inout String?) throws -> TestClient? {
        let client = try TestClient(host: host ?? server.host, port: server.port)
        if mode == .echo { try? client.send("ping\n") }
        let line = try client.readLine()
        if line.hasPrefix("!") {
            refusal = line
            return nil
        }
        #expect(mode == .chat ? line.hasPrefix("* welcome ") : line == "ping", "\(line)")
        return client
    }

    /// Two connections from 127.0.0.1 are served, the third is refused with
    /// its line and closed; refusals are counted (`refused`,
    /// `refused_per_address`) but hold no place: whenever the clients leave,
    /// new ones get in, round after round.
    @Test(arguments: Strategy.tested, ServerMode.allCases)
    func theConnectionPastTheLimitIsRefusedAndRefusalsDoNotLeak(strategy: Strategy, mode: ServerMode) throws {
        let server = try ServerProcess(["--mode", mode.rawValue, "--max-per-address", "2"], strategy: strategy)
        var refusals = 0
        for round in 0..<4 {
            var held: [TestClient] = []
            // The server learns of the last round's closes asynchronously: a
            // refusal is fine for a while, for ever would be a leak.
            for _ in 0..<200 where held.count < 2 {
                var refusal: String?
                if let client = try Self.admit(server, mode: mode, refusal: &refusal) {
                    held.append(client)
                } else {
                    #expect(refusal == Self.tooMany, "round \(round)")
                    refusals += 1
                }
            }
            #expect(held.count == 2, "round \(round): refused for good after the others left")
            let extra = try server.connect()
            #expect(try extra.readLine() == Self.tooMany)
            #expect(try extra.readToEnd().isEmpty)  // the only thing it receives
            refusals += 1
            let stats = try server.statsFromLog()
            #expect(stats["clients"] == "2")
            #expect(stats["refused_per_address"] == String(refusals))
            #expect(stats["refused"] == String(refusals))
            #expect(stats["connections_total"] == String(2 * (round + 1)))
            for client in held { client.close() }
        }
        #expect(server.log.lines.contains { $0.contains("INFO  refused a client from 127.0.0.1: max-per-address (2) reached") })
    }

    /// IPv6: `::1` is an address of its own.
    @Test(arguments: Strategy.tested)
    func ipv6ClientsAreCountedByTheirAddress(strategy: Strategy) throws {
        let server = try ServerProcess(["--max-per-address", "1"], strategy: strategy, host: "::1")
        var refusal: String?
        let first = try #require(try Self.admit(server, mode: .echo, refusal: &refusal))
        let second = try server.connect()
        #expect(try second.readLine() == Self.tooMany)
        #expect(server.log.waitFor({ $0.contains("refused a client from ::1:") }, timeout: 10) != nil)
        first.close()
    }

    /// An IPv6 listener that takes IPv4 clients sees them as
    /// `::ffff:127.0.0.1`: counted as 127.0.0.1 (the log names it so), and
    /// the same whether the client used an IPv4 or an IPv6 socket.
    @Test(arguments: Strategy.tested)
    func ipv4MappedClientsCountAsTheirIPv4Address(strategy: Strategy) throws {
        let server = try ServerProcess(["--max-per-address", "2"], strategy: strategy, host: "::ffff:127.0.0.1")
        var refusal: String?
        let overIPv4 = try #require(try Self.admit(server, mode: .echo, host: "127.0.0.1", refusal: &refusal))
        let overIPv6 = try #require(try Self.admit(server, mode: .echo, host: "::ffff:127.0.0.1", refusal: &refusal))
        for host in ["127.0.0.1", "::ffff:127.0.0.1"] {
            let third = try TestClient(host: host, port: server.port)
            #expect(try third.readLine() == Self.tooMany)
        }
        let logged = try #require(server.log.waitFor({ $0.contains("refused a client from ") }, timeout: 10))
        #expect(logged.contains("refused a client from 127.0.0.1: "), "\(logged)")
        overIPv4.close()
        overIPv6.close()
    }

    /// SIGHUP turns the limit on for a running server: the connections it
    /// already has count.
    @Test(arguments: Strategy.tested)
    func aReloadTurnsTheLimitOnAndCountsWhoIsThere(strategy: Strategy) throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("echochat-\(UUID()).conf").path
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        try "max-per-address = 0\n".write(toFile: scratch, atomically: true, encoding: .utf8)
        let server = try ServerProcess(["--config", scratch], strategy: strategy)
        var refusal: String?
        let held = try (0..<3).map { _ in try #require(try Self.admit(server, mode: .echo, refusal: &refusal)) }
        try "max-per-address = 3\n".write(toFile: scratch, atomically: true, encoding: .utf8)
        server.signal(.hangup)
        #expect(server.log.waitFor({ $0.contains("SIGHUP: reloaded") && $0.hasSuffix(" max-per-address=3") }, timeout: 10) != nil)
        // The strategy picks the new settings up on its next wake-up: a
        // connection may still get in before it does (then it makes four).
        var admittedLate = 0
        var extra: [TestClient] = []
        for _ in 0..<50 {
            if let client = try Self.admit(server, mode: .echo, refusal: &refusal) {
                admittedLate += 1
                extra.append(client)
            } else {
                break
            }
        }
        #expect(refusal == Self.tooMany)
        #expect(admittedLate <= 1, "the limit was not applied: \(admittedLate) more admitted")
        // Open until here: an optimized build may end a variable's life at its last use.
        withExtendedLifetime(held) {}
    }

    /// While out of descriptors, every client that arrives is refused, tens
    /// of thousands a second in a storm; the log gets about one line a
    /// second, each saying how many refusals it stands for, instead of one
    /// line per refusal.
    @Test(arguments: Strategy.tested)
    func descriptorExhaustionLogsAboutOneLineASecond(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "echo", "--metrics", "127.0.0.1:0"], strategy: strategy)
        try server.lowerOpenFileLimit(to: 40)
        // Fill the server up (the clients are held) until it refuses.
        var held: [TestClient] = []
        var full = false
        for index in 0..<100 where !full {
            let client = try server.connect()
            try? client.send("hello \(index)\n")
            switch try? client.readLine() {
            case "hello \(index)"?: held.append(client)
            case "! server full, try again later"?: full = true
            case let other: Issue.record("client \(index) got \(String(describing: other))")
            }
        }
        #expect(full, "the server never ran out of descriptors")
        // A connect storm for a few seconds, from two threads.
        let duration = 3.0
        let started = Date()
        let storms = (0..<2).map { _ in
            Background<Int> {
                var refused = 0
                while Date().timeIntervalSince(started) < duration {
                    guard let client = try? server.connect() else { continue }
                    if (try? client.readLine()) == "! server full, try again later" { refused += 1 }
                    client.close()
                }
                return refused
            }
        }
        let refused = try storms.map { try $0.value(timeout: 60) }.reduce(0, +)
        let elapsed = Date().timeIntervalSince(started)
        let stats = try server.statsFromLog()
        let lines = server.log.lines.filter { $0.contains("out of file descriptors: refused a client") }
        let suppressed = lines.compactMap { line -> Int? in
            guard let range = line.range(of: "(suppressed ") else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }
        let figures = "\(refused) refusals in \(String(format: "%.1f", elapsed)) s, \(lines.count) log lines"
        print("descriptor exhaustion (\(strategy)): \(figures), stats refused=\(stats["refused"] ?? "?")")
        #expect(refused > 200, "too small a storm to tell: \(figures)")
        #expect(lines.count <= Int(elapsed.rounded(.up)) + 2, "about one line a second: \(figures)")
        #expect(!suppressed.isEmpty && suppressed.allSatisfy { $0 > 0 }, "the lines say what they left out: \(lines)")
        #expect(lines.allSatisfy { $0.contains(" WARN  ") })
        // Every refusal is either a line or counted in a later line, except
        // those of the last second, which the next line would report.
        let serverRefused = try #require(Int(stats["refused"] ?? ""))
        #expect(lines.count + suppressed.reduce(0, +) <= serverRefused)
        #expect(serverRefused >= refused)
        // It kept serving the clients it held.
        for (index, client) in held.enumerated() {
            try client.send("still \(index)\n")
            #expect(try client.readLine() == "still \(index)")
        }
        // Once they leave, the metrics endpoint (which could not accept
        // either meanwhile) tells the refusals by cause.
        for client in held { client.close() }
        let metrics = try server.scrape()
        #expect(metrics.value("echochat_refusals_total", ["reason": "out_of_descriptors"]) == Double(serverRefused))
        #expect(metrics.value("echochat_refusals_total", ["reason": "server_full"]) == 0)
        #expect((metrics.value("echochat_emfile_events_total") ?? 0) >= Double(serverRefused))
    }
}
