import EchoChatCore
import EchoChatOptions
import EchoChatTestSupport
import Testing

@testable import EchoChatServer

/// The metrics endpoint's pure parts: the exposition text, the HTTP request
/// reader and the answers, the `--metrics` value. In memory, no socket.
@Suite("Metrics: exposition and HTTP in memory")
struct MetricsFormatTests {
    /// What the server hands the renderer: the `/stats` pairs, then the detail.
    static let stats: [TransportStats.Pair] = {
        let transport = TransportStats(
            strategy: "pool", uptimeSeconds: 7, connectionsTotal: 9, refused: 6, refusedPerAddress: 2, bytesIn: 100,
            bytesOut: 200, extra: [.init("workers", "4"), .init("queue_depth", "0")],
            detail: [
                .init("refused_server_full", "3"), .init("refused_out_of_descriptors", "1"), .init("emfile_events", "5"),
                .init("slow_consumers", "1"), .init("idle_timeouts", "2"), .init("line_timeouts", "0"),
                .init("close_timeouts", "1"),
            ])
        let stats = ServerStats(mode: .chat, clients: 3, rooms: 2, messagesIn: 40, messagesOut: 50, transport: transport)
        return stats.pairs + transport.detail
    }()

    @Test func everyStatsCounterIsAFamilyWithHelpAndType() throws {
        let text = PrometheusText.render(Self.stats, version: "9.9.9")
        let exposition = try Exposition(parsing: text)
        #expect(exposition.value("echochat_info", ["mode": "chat", "strategy": "pool", "version": "9.9.9"]) == 1)
        #expect(exposition.value("echochat_clients") == 3)
        #expect(exposition.family("echochat_clients")?.type == "gauge")
        #expect(exposition.value("echochat_rooms") == 2)
        #expect(exposition.value("echochat_uptime_seconds") == 7)
        #expect(exposition.value("echochat_connections_total") == 9)
        #expect(exposition.family("echochat_connections_total")?.type == "counter")
        #expect(exposition.value("echochat_refused_total") == 6)
        #expect(exposition.value("echochat_messages_in_total") == 40)
        #expect(exposition.value("echochat_messages_out_total") == 50)
        #expect(exposition.value("echochat_bytes_in_total") == 100)
        #expect(exposition.value("echochat_bytes_out_total") == 200)
        #expect(exposition.value("echochat_workers") == 4)
        #expect(exposition.value("echochat_queue_depth") == 0)
        #expect(exposition.value("echochat_emfile_events_total") == 5)
        #expect(exposition.value("echochat_slow_consumers_total") == 1)
        // Refusals by reason add up to the total.
        let reasons = ["server_full": 3.0, "per_address": 2, "out_of_descriptors": 1]
        for (reason, value) in reasons { #expect(exposition.value("echochat_refusals_total", ["reason": reason]) == value) }
        #expect(exposition.family("echochat_refusals_total")?.samples.count == 3)
        #expect(reasons.values.reduce(0, +) == exposition.value("echochat_refused_total"))
        for (kind, value) in ["idle": 2.0, "line": 0, "close": 1] {
            #expect(exposition.value("echochat_timeouts_total", ["kind": kind]) == value)
        }
        // A family member is not also a metric of its own.
        #expect(exposition.family("echochat_refused_per_address_total") == nil)
        #expect(exposition.family("echochat_idle_timeouts_total") == nil)
        #expect(!text.contains("The /stats value"), "every key here has its own help")
    }

    /// A key nobody told the renderer about still shows up: a gauge named
    /// after it; the lead's future counters land in their families.
    @Test func unknownKeysAreGaugesAndFutureTimeoutsJoinTheirFamily() throws {
        let pairs: [TransportStats.Pair] = [
            .init("mode", "echo"), .init("brand_new", "12"), .init("weird-key.x", "1.5"), .init("send_timeouts", "4"),
            .init("rate_limited", "8"), .init("9lives", "9"), .init("notes", "a \"quoted\" \\ word"),
        ]
        let exposition = try Exposition(parsing: PrometheusText.render(pairs, version: "1"))
        #expect(exposition.value("echochat_brand_new") == 12)
        #expect(exposition.family("echochat_brand_new")?.type == "gauge")
        #expect(exposition.value("echochat_weird_key_x") == 1.5)
        #expect(exposition.value("echochat__9lives") == 9)
        #expect(exposition.value("echochat_timeouts_total", ["kind": "send"]) == 4)
        #expect(exposition.value("echochat_rate_limited_total") == 8)
        #expect(exposition.value("echochat_info", ["mode": "echo", "notes": "a \"quoted\" \\ word", "version": "1"]) == 1)
    }

    @Test func aKeyGivenTwiceKeepsItsFirstValue() throws {
        let pairs: [TransportStats.Pair] = [.init("clients", "1"), .init("line_timeouts", "2"), .init("clients", "5"),
                                            .init("line_timeouts", "7")]
        let exposition = try Exposition(parsing: PrometheusText.render(pairs, version: "1"))
        #expect(exposition.value("echochat_clients") == 1)
        #expect(exposition.value("echochat_timeouts_total", ["kind": "line"]) == 2)
    }

    // MARK: - HTTP requests

    static let scrape = Array("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9107\r\nUser-Agent: Prometheus/2.53\r\nAccept: text/plain\r\n\r\n".utf8)

    func read(_ bytes: [UInt8], chunks: [Int]? = nil) -> HTTP.RequestReader.Outcome {
        var reader = HTTP.RequestReader()
        var outcome = HTTP.RequestReader.Outcome.needMore
        var start = 0
        for size in chunks ?? [bytes.count] where start < bytes.count {
            outcome = reader.read(bytes[start..<min(bytes.count, start + size)])
            start += size
        }
        if start < bytes.count { outcome = reader.read(bytes[start...]) }
        return outcome
    }

    @Test func aScrapeIsReadWholeByteByByteAndInRandomChunks() {
        guard case .head(let head) = read(Self.scrape) else {
            Issue.record("not read: \(read(Self.scrape))")
            return
        }
        #expect(head.method == "GET" && head.path == "/metrics" && head.version == "HTTP/1.1")
        #expect(head.field("host") == "127.0.0.1:9107")
        #expect(head.field("USER-AGENT") == "Prometheus/2.53")
        #expect(read(Self.scrape, chunks: Array(repeating: 1, count: Self.scrape.count)) == .head(head))
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let chunks = (0..<Self.scrape.count).map { _ in Int.random(in: 1...9, using: &generator) }
            #expect(read(Self.scrape, chunks: chunks) == .head(head))
        }
        // Not complete until the blank line.
        #expect(read(Array(Self.scrape.dropLast(2))) == .needMore)
        #expect(read(Array(Self.scrape.dropLast(1))) == .needMore)
    }

    @Test(arguments: [
        ("GET /metrics HTTP/1.0\r\n\r\n", "/metrics"),
        ("GET /metrics?name[]=x HTTP/1.1\r\nHost: h\r\n\r\n", "/metrics"),
        ("GET http://example.test:9107/metrics HTTP/1.1\r\nHost: h\r\n\r\n", "/metrics"),
        ("GET /metrics HTTP/1.1\nHost: h\n\n", "/metrics"),  // bare LF, as RFC 9112 §2.2 allows
        ("\r\n\r\nGET /x HTTP/1.1\r\nHost: h\r\n\r\n", "/x"),  // blank lines before the request line
        ("GET /metrics HTTP/1.1\r\nHost: h\r\nX-Empty:\r\nX-Spaces:   a b   \r\n\r\nbody", "/metrics"),
    ])
    func acceptsWhatRFC9112Allows(request: String, path: String) {
        guard case .head(let head) = read(Array(request.utf8)) else {
            Issue.record("not read: \(read(Array(request.utf8)))")
            return
        }
        #expect(head.path == path)
        if request.contains("X-Spaces") {
            #expect(head.field("x-spaces") == "a b")
            #expect(head.field("x-empty") == "")
        }
    }

    @Test(arguments: [
        ("garbage\r\n\r\n", 400),
        ("\u{16}\u{03}\u{01}\u{02}\u{00}\u{01}\u{00}\u{01}\u{fc}\u{03}\u{03}\n\n", 400),  // a TLS hello, more or less
        ("GET /metrics\r\n\r\n", 400),  // HTTP/0.9
        ("GET  /metrics HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET /metrics HTTP/1.1 extra\r\nHost: h\r\n\r\n", 400),
        ("GET metrics HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("G(T /metrics HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET /metrics HTTP/1.1\r\n\r\n", 400),  // no Host
        ("GET /metrics HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("GET /metrics HTTP/1.1\r\nHost : h\r\n\r\n", 400),  // blank before the colon
        ("GET /metrics HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400),
        ("GET /metrics HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", 400),
        ("GET /metrics HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400),  // a bare CR
        ("GET /metrics HTTP/1.1\r\nHost: a\u{01}b\r\n\r\n", 400),
        ("GET /metrics HTTP/1.x\r\nHost: h\r\n\r\n", 400),
        ("GET /metrics HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    ])
    func rejectsMalformedRequests(request: String, status: Int) {
        guard case .failed(let got) = read(Array(request.utf8)) else {
            Issue.record("accepted: \(read(Array(request.utf8)))")
            return
        }
        #expect(got.code == status)
    }

    @Test func boundsTheHeadsSizeAndFieldCount() {
        let big = "GET /metrics HTTP/1.1\r\nHost: h\r\nX: " + String(repeating: "a", count: 9000) + "\r\n\r\n"
        #expect(read(Array(big.utf8)) == .failed(.fieldsTooLarge))
        // Decided as soon as the bound is passed, without the rest.
        #expect(read(Array(big.utf8.prefix(8300))) == .failed(.fieldsTooLarge))
        #expect(read(Array(big.utf8.prefix(8300)), chunks: Array(repeating: 7, count: 2000)) == .failed(.fieldsTooLarge))
        let many = "GET /metrics HTTP/1.1\r\nHost: h\r\n" + String(repeating: "X: y\r\n", count: 64) + "\r\n"
        #expect(read(Array(many.utf8)) == .failed(.fieldsTooLarge))
        let enough = "GET /metrics HTTP/1.1\r\nHost: h\r\n" + String(repeating: "X: y\r\n", count: 63) + "\r\n"
        if case .head(let head) = read(Array(enough.utf8)) { #expect(head.fields.count == 64) } else { Issue.record("refused 64 fields") }
        // Exactly at the size bound is still fine.
        let head = "GET /metrics HTTP/1.1\r\nHost: h\r\nX: "
        let exact = head + String(repeating: "a", count: HTTP.RequestReader.maxHeadBytes - head.utf8.count - 4) + "\r\n\r\n"
        #expect(exact.utf8.count == HTTP.RequestReader.maxHeadBytes)
        if case .head = read(Array(exact.utf8)) {} else { Issue.record("refused a head of exactly the bound") }
        #expect(read(Array(exact.utf8.dropLast(4)) + Array("a\r\n\r\n".utf8)) == .failed(.fieldsTooLarge))
    }

    @Test func theOutcomeStaysOnceDecided() {
        var reader = HTTP.RequestReader()
        #expect(reader.read(Array("nonsense\n\n".utf8)) == .failed(.badRequest))
        #expect(reader.read(Self.scrape) == .failed(.badRequest))
    }

    // MARK: - Answers

    func answer(_ request: String) -> String {
        guard case .head(let head) = read(Array(request.utf8)) else { return "unreadable" }
        return String(decoding: MetricsServer.answer(head, metrics: { "echochat_up 1\n" }), as: UTF8.self)
    }

    @Test func answersGetAndHeadOfMetricsAndNothingElse() {
        #expect(answer("GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n") == "HTTP/1.1 200 OK\r\n"
            + "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 14\r\nConnection: close\r\n\r\n"
            + "echochat_up 1\n")
        #expect(answer("HEAD /metrics HTTP/1.1\r\nHost: h\r\n\r\n") == "HTTP/1.1 200 OK\r\n"
            + "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 14\r\nConnection: close\r\n\r\n")
        #expect(answer("GET / HTTP/1.1\r\nHost: h\r\n\r\n").hasPrefix("HTTP/1.1 404 Not Found\r\n"))
        #expect(answer("GET /metrics/ HTTP/1.1\r\nHost: h\r\n\r\n").hasPrefix("HTTP/1.1 404 Not Found\r\n"))
        let post = answer("POST /metrics HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
        #expect(post.hasPrefix("HTTP/1.1 405 Method Not Allowed\r\n"))
        #expect(post.contains("\r\nAllow: GET, HEAD\r\n"))
        #expect(answer("get /metrics HTTP/1.1\r\nHost: h\r\n\r\n").hasPrefix("HTTP/1.1 405 "))  // methods are case-sensitive
    }

    // MARK: - The --metrics value

    @Test(arguments: [
        ("127.0.0.1:9107", "127.0.0.1", 9107), ("[::1]:9107", "::1", 9107), ("localhost:0", "localhost", 0),
        ("0.0.0.0:65535", "0.0.0.0", 65535), ("[::]:80", "::", 80),
    ])
    func endpointsParse(text: String, host: String, port: Int) throws {
        let parsed = try #require(try Value.endpoint(text, "--metrics"))
        #expect(parsed.host == host && parsed.port == port)
        #expect(Endpoint(host: host, port: port).description == text)
    }

    @Test(arguments: ["9107", "::1:9107", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", ":9107", "[::1]9107",
                      "127.0.0.1:9x", "a b:9107", "[]:1"])
    func badEndpointsAreUsageErrors(text: String) {
        #expect(throws: UsageError.self) { try Value.endpoint(text, "--metrics") }
    }

    @Test func metricsAndMaxPerAddressAreSettings() throws {
        let command = try ServerOptions.parse(
            ["--metrics", "[::1]:9107"], environment: { $0 == "ECHOCHAT_MAX_PER_ADDRESS" ? "20" : nil }, readFile: { _ in "" })
        guard case .run(let configuration) = command else {
            Issue.record("\(command)")
            return
        }
        #expect(configuration.metrics == Endpoint(host: "::1", port: 9107))
        #expect(configuration.maxPerAddress == 20)
        #expect(configuration.limits.maxPerAddress == 20)
        #expect(ServerConfiguration().metrics == nil)
        #expect(ServerConfiguration().maxPerAddress == 0)
        guard case .run(let off) = try ServerOptions.parse(
            ["--metrics", "off"], environment: { $0 == "ECHOCHAT_METRICS" ? "127.0.0.1:1" : nil }, readFile: { _ in "" })
        else { return }
        #expect(off.metrics == nil)
        #expect(RuntimeSettings.reloadable.contains("max-per-address"))
        #expect(!RuntimeSettings.reloadable.contains("metrics"))
    }
}
