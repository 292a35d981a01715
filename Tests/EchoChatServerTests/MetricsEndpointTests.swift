import EchoChatCore
import EchoChatOptions
import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// An HTTP response read off a raw socket.
struct HTTPReply {
    var status: Int
    /// Field names lower-cased.
    var fields: [String: String]
    var body: String
}

extension ServerProcess {
    /// Sends `request` to the metrics port and reads the whole response
    /// (the server closes after one); checks the framing on the way.
    func metricsRequest(_ request: [UInt8], timeout: Double = 10) throws -> HTTPReply {
        guard let port = metricsPort else { throw TestFailure("no metrics port in the log:\n\(log.text)") }
        let client = try TestClient(host: "127.0.0.1", port: port, timeout: timeout)
        try? client.send(request)  // an answer may come (and the server stop reading) before all is sent
        let bytes = try client.readToEnd()
        let text = String(decoding: bytes, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { throw TestFailure("no end of head in \(text.debugDescription)") }
        let head = text[..<split.lowerBound].components(separatedBy: "\r\n")
        let statusWords = head[0].split(separator: " ", maxSplits: 2)
        guard statusWords.count == 3, statusWords[0] == "HTTP/1.1", let status = Int(statusWords[1]) else {
            throw TestFailure("bad status line \(head[0].debugDescription)")
        }
        var fields: [String: String] = [:]
        for line in head.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { throw TestFailure("bad field \(line.debugDescription)") }
            fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let body = String(text[split.upperBound...])
        if !request.starts(with: Array("HEAD ".utf8)) {
            #expect(fields["content-length"] == String(body.utf8.count), "Content-Length and body disagree")
        }
        #expect(fields["connection"] == "close")
        return HTTPReply(status: status, fields: fields, body: body)
    }

    func metricsRequest(_ request: String, timeout: Double = 10) throws -> HTTPReply {
        try metricsRequest(Array(request.utf8), timeout: timeout)
    }

    func scrape() throws -> Exposition {
        let reply = try metricsRequest("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n")
        #expect(reply.status == 200)
        #expect(reply.fields["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
        return try Exposition(parsing: reply.body)
    }
}

/// `--metrics HOST:PORT`: Prometheus text on `GET /metrics`, from a thread of
/// the server's own, against every strategy.
@Suite("Metrics endpoint", .ownThreads)
struct MetricsEndpointTests {
    static let scrapeRequest = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    /// The whole output parses strictly (every line a HELP, a TYPE or a
    /// `name{labels} value` sample, every family declared once), every
    /// `/stats` counter is there, and the counters move with traffic:
    /// connections, bytes, messages, a refusal by reason, an idle timeout.
    @Test(arguments: Strategy.tested, ServerMode.allCases)
    func theScrapeParsesWholeAndCountersMove(strategy: Strategy, mode: ServerMode) throws {
        let server = try ServerProcess(
            ["--mode", mode.rawValue, "--metrics", "127.0.0.1:0", "--max-per-address", "2", "--idle-timeout", "1"],
            strategy: strategy)
        let before = try server.scrape()
        #expect(before.value("echochat_info", ["mode": mode.rawValue, "strategy": strategy.rawValue, "version": Release.version]) == 1)
        var expected = [
            "echochat_clients", "echochat_rooms", "echochat_uptime_seconds", "echochat_connections_total",
            "echochat_refused_total", "echochat_messages_in_total", "echochat_messages_out_total", "echochat_bytes_in_total",
            "echochat_bytes_out_total", "echochat_refusals_total", "echochat_emfile_events_total",
            "echochat_slow_consumers_total", "echochat_timeouts_total", "echochat_rate_limited_total",
        ]
        if mode == .chat { expected += ["echochat_files", "echochat_files_bytes"] }
        switch strategy {
        case .epoll, .async: break
        case .thread: expected.append("echochat_threads")
        case .pool: expected += ["echochat_workers", "echochat_queue_depth"]
        case .reactors: expected += ["echochat_loops", "echochat_loop_connections"]
        }
        #expect(Set(before.families.map(\.name)) == Set(expected + ["echochat_info"]))
        for family in before.families where family.name != "echochat_info" {
            #expect(!family.help.hasPrefix("The /stats value"), "\(family.name) has no help of its own")
            let counter = family.name.hasSuffix("_total")
            #expect(family.type == (counter ? "counter" : "gauge"), "\(family.name)")
        }
        for reason in ["server_full", "per_address", "out_of_descriptors"] {
            #expect(before.value("echochat_refusals_total", ["reason": reason]) == 0)
        }
        #expect(before.value("echochat_connections_total") == 0)

        // Two clients talk, a third from the same address is refused.
        var held: [TestClient] = []
        for index in 0..<2 {
            let client = try server.connect()
            if mode == .chat { _ = try client.readLine() }  // the welcome
            held.append(client)
            try client.send("hello from \(index)\n")
            // Echo: it comes back; chat: the other one (if there) sees it.
            if mode == .echo { #expect(try client.readLine() == "hello from \(index)") }
        }
        if mode == .chat {
            #expect(try held[0].readLines(2) == ["* guest2 joined #lobby", "<guest2> hello from 1"])
            // Its own line may still wait for a worker (pool): a reply to its
            // next one proves it was handled, before a later client could hear it.
            #expect(try held[0].syncWho() == "* #lobby: guest1, guest2 (2)")
        }
        let refused = try server.connect()
        #expect(try refused.readLine() == "! too many connections from your address")
        for client in held { client.close() }
        // A silent client is closed by the idle timeout (the others have
        // left; the server may still be closing them, hence the retries).
        var silent: TestClient?
        for _ in 0..<100 where silent == nil {
            let client = try server.connect()
            if mode == .echo { try client.send("x\n") }
            if try client.readLine() != "! too many connections from your address" { silent = client }
        }
        let sleeper = try #require(silent)
        // Chat: a leave notice may come first, of a client the server was still closing.
        if mode == .chat {
            let lines = try sleeper.readLines(until: { !$0.contains(" left #lobby") })
            #expect(lines.last == "* idle timeout", "\(lines)")
        }
        #expect(try sleeper.isClosedByServer())

        // The client sees the close a moment before the server's count drops
        // (it shuts the socket, then ends the session): scrape until it has.
        var after = try server.scrape()
        for _ in 0..<100 where after.value("echochat_clients") != 0 { after = try server.scrape() }
        let perAddress = try #require(after.value("echochat_refusals_total", ["reason": "per_address"]))
        #expect(perAddress >= 1)
        #expect(after.value("echochat_refused_total") == perAddress)
        #expect(after.value("echochat_connections_total") == 3)
        #expect(after.value("echochat_timeouts_total", ["kind": "idle"]) == 1)
        #expect(after.value("echochat_clients") == 0)
        for counter in ["echochat_bytes_in_total", "echochat_bytes_out_total", "echochat_messages_in_total", "echochat_messages_out_total"] {
            let (was, now) = (before.value(counter) ?? -1, after.value(counter) ?? -1)
            #expect(now > was, "\(counter) did not move: \(was) -> \(now)")
        }
    }

    /// Echo counts every LF it reads and writes, exactly: lines written back
    /// whole, lines split across reads, and output cut short by a full
    /// kernel buffer and queued (the client reads nothing until it has sent
    /// all; `max-output` lets the server queue all of it).
    @Test(arguments: Strategy.tested)
    func echoCountsEveryMessageExactly(strategy: Strategy) throws {
        let server = try ServerProcess(["--metrics", "127.0.0.1:0", "--max-output", "64M"], strategy: strategy)
        let client = try TestClient(host: "127.0.0.1", port: server.port, timeout: 30)
        var sent: [UInt8] = []
        try client.send("one\ntw")
        try client.send("o\nthree\n")
        sent += Array("one\ntwo\nthree\n".utf8)
        #expect(try client.readLines(3) == ["one", "two", "three"])
        let line = [UInt8](repeating: 0x61, count: 8191) + [0x0A]
        let bulk = Array([[UInt8]](repeating: line, count: 1536).joined())  // 12 MiB: more than the kernel buffers hold
        try client.send(bulk)
        let echoed = try client.read(count: bulk.count)
        sent += bulk
        #expect(echoed == bulk, "the bulk came back changed")
        let lines = Double(3 + 1536)
        var metrics = try server.scrape()
        // The client may read the last bytes a moment before the server counts them.
        for _ in 0..<100 where metrics.value("echochat_messages_out_total") != lines { metrics = try server.scrape() }
        #expect(metrics.value("echochat_messages_in_total") == lines)
        #expect(metrics.value("echochat_messages_out_total") == lines)
        #expect(metrics.value("echochat_bytes_in_total") == Double(sent.count))
        #expect(metrics.value("echochat_bytes_out_total") == Double(sent.count))
    }

    @Test(.requires(.curl), arguments: Strategy.tested)
    func curlScrapesIt(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat", "--metrics", "127.0.0.1:0"], strategy: strategy)
        let (alice, _) = try server.joinChat()
        try alice.send("/stats\n")
        let stats = try parseStats(try alice.readLine())
        let url = "http://127.0.0.1:\(try #require(server.metricsPort))/metrics"
        let curl = try RequiredTool.curl.path()
        let result = try runProgram(curl, ["-sS", "--max-time", "10", "-D", "/dev/stderr", url])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(result.stderr.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"))
        let exposition = try Exposition(parsing: result.stdout)
        #expect(exposition.value("echochat_clients") == 1)
        #expect(exposition.value("echochat_rooms") == 1)
        #expect(exposition.value("echochat_connections_total") == Double(stats["connections_total"] ?? ""))
        #expect(exposition.value("echochat_messages_in_total") == Double(stats["messages_in"] ?? ""))

        func status(_ extra: [String], _ target: String = url) throws -> String {
            try runProgram(curl, ["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}"] + extra + [target]).stdout
        }
        #expect(try status(["-X", "POST", "--data", "x=1"]) == "405")
        #expect(try status([], url.replacingOccurrences(of: "/metrics", with: "/")) == "404")
        #expect(try status(["--http1.0"]) == "200")
        let head = try runProgram(curl, ["-sS", "--max-time", "10", "-I", url])
        #expect(head.stdout.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(head.stdout.hasSuffix("\r\n\r\n"), "HEAD has no body")
    }

    /// Bad HTTP gets an answer (400, 431, 404, 405, 408), never a crash, and
    /// a client that sends nothing holds nothing up: others are served
    /// meanwhile and it gets 408 once the request timeout passes.
    @Test(arguments: Strategy.tested)
    func badRequestsGetAnAnswerNotACrash(strategy: Strategy) throws {
        let server = try ServerProcess(["--metrics", "127.0.0.1:0"], strategy: strategy)
        let port = try #require(server.metricsPort)
        let started = Date()
        let silent = try TestClient(host: "127.0.0.1", port: port, timeout: 15)
        let halfway = try TestClient(host: "127.0.0.1", port: port, timeout: 15)
        try halfway.send("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")

        #expect(try server.metricsRequest("hello\r\n\r\n").status == 400)
        var noise: [UInt8] = [0, 1, 2, 0xFF, 0xFE, 0x16, 0x03, 0x01] + Array(repeating: 0, count: 300)
        noise += Array("\n\n".utf8)
        #expect(try server.metricsRequest(noise).status == 400)
        let oversized = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + String(repeating: "a", count: 20_000) + "\r\n\r\n"
        #expect(try server.metricsRequest(oversized).status == 431)
        let manyFields = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n" + String(repeating: "X-A: b\r\n", count: 100) + "\r\n"
        #expect(try server.metricsRequest(manyFields).status == 431)
        #expect(try server.metricsRequest("GET /metrics HTTP/1.1\r\n\r\n").status == 400)  // no Host
        #expect(try server.metricsRequest("DELETE /metrics HTTP/1.1\r\nHost: h\r\n\r\n").status == 405)
        #expect(try server.metricsRequest("GET /stats HTTP/1.1\r\nHost: h\r\n\r\n").status == 404)
        // One that resets right after asking, and one that hangs up at once.
        let rude = try TestClient(host: "127.0.0.1", port: port)
        try rude.send(Self.scrapeRequest)
        try rude.reset()
        try TestClient(host: "127.0.0.1", port: port).close()
        // Meanwhile the silent ones hold nothing up.
        #expect(try server.metricsRequest(Self.scrapeRequest).status == 200)
        #expect(Date().timeIntervalSince(started) < 4, "served while two clients were silent")

        for client in [silent, halfway] {
            #expect(try client.readLine() == "HTTP/1.1 408 Request Timeout\r")
            _ = try client.readToEnd()
        }
        let waited = Date().timeIntervalSince(started)
        #expect(waited >= 4.5 && waited < 12, "408 after the 5 s request timeout, not \(waited) s")
        #expect(try server.metricsRequest(Self.scrapeRequest).status == 200)
        #expect(!server.log.text.contains("metrics: poll"), "the metrics thread is still running")
    }

    /// SIGTERM stops the metrics thread with the server, without waiting for
    /// a metrics client's timeout, and nothing listens on the port after.
    @Test(arguments: Strategy.tested)
    func sigtermStopsTheMetricsEndpointToo(strategy: Strategy) throws {
        let server = try ServerProcess(["--mode", "chat", "--metrics", "127.0.0.1:0"], strategy: strategy)
        let port = try #require(server.metricsPort)
        let silent = try TestClient(host: "127.0.0.1", port: port, timeout: 10)
        #expect(try server.metricsRequest(Self.scrapeRequest).status == 200)
        let started = Date()
        #expect(try server.stop(.terminate) == 0)
        #expect(Date().timeIntervalSince(started) < 4, "shutdown waited for the metrics client")
        #expect(try silent.isClosedByServer())
        #expect(throws: (any Error).self) { try TestClient(host: "127.0.0.1", port: port, timeout: 1) }
    }

    /// A metrics port that is taken stops the start with a clear error.
    @Test func aBusyMetricsPortIsAStartUpError() throws {
        let taken = try Socket.listen(host: "127.0.0.1", port: 0)
        defer { taken.close() }
        let port = try taken.localAddress().port
        let result = try runProgram(ServerProcess.binary, ["--port", "0", "--metrics", "127.0.0.1:\(port)"], timeout: 30)
        #expect(result.status == 1)
        #expect(result.stderr.contains("Error: cannot listen for metrics on 127.0.0.1:\(port): "), "\(result.stderr)")
        #expect(result.stderr.lowercased().contains("address already in use"), "\(result.stderr)")
        #expect(!result.stderr.contains("listening on"))
    }

    @Test func checkConfigShowsTheNewSettings() throws {
        let result = try runProgram(
            ServerProcess.binary, ["--check-config", "--metrics", "[::1]:9107"],
            environment: ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("ECHOCHAT_") }
                .merging(["ECHOCHAT_MAX_PER_ADDRESS": "25"]) { $1 })
        #expect(result.status == 0, "\(result.stderr)")
        // `key = value   # source`, the comments aligned.
        func line(_ stdout: String, _ key: String) -> (value: String, source: String)? {
            guard let line = stdout.split(separator: "\n").first(where: { $0.hasPrefix("\(key) = ") }) else { return nil }
            let parts = line.dropFirst(key.count + 3).components(separatedBy: "#")
            return (parts[0].trimmingCharacters(in: .whitespaces), parts.dropFirst().joined(separator: "#").trimmingCharacters(in: .whitespaces))
        }
        #expect(line(result.stdout, "metrics")! == ("[::1]:9107", "flag --metrics"), "\(result.stdout)")
        #expect(line(result.stdout, "max-per-address")! == ("25", "env ECHOCHAT_MAX_PER_ADDRESS"), "\(result.stdout)")
        let defaults = try runProgram(ServerProcess.binary, ["--check-config"], environment: [:])
        #expect(line(defaults.stdout, "metrics")! == ("off", "default"), "\(defaults.stdout)")
        #expect(line(defaults.stdout, "max-per-address")! == ("0", "default"), "\(defaults.stdout)")
    }
}
