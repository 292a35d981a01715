@testable import EchoChatLoad
import Foundation
import Testing

@Suite("Reports")
struct ReportTests {
    func decode(_ json: JSONValue) throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(json.text.utf8))
        return try #require(object as? [String: Any])
    }

    static let documentedKeys = ["connections", "threads", "duration_s", "messages", "msgs_per_s", "mb_per_s", "latency_us", "errors", "mismatches"]

    @Test func echoJSONHasTheDocumentedKeys() throws {
        var report = LoadReport()
        report.connections = 100
        report.connectionsRequested = 100
        report.threads = 2
        report.messages = 5
        report.latency = LatencySummary(min: 1, p50: 2, p90: 3, p99: 4, p999: 5, max: 6, mean: 2.5, count: 5)
        let object = try decode(report.json)
        for key in Self.documentedKeys { #expect(object[key] != nil, "missing \(key)") }
        let latency = try #require(object["latency_us"] as? [String: Any])
        for key in ["min", "p50", "p90", "p99", "p999", "max"] { #expect(latency[key] != nil, "missing latency_us.\(key)") }
        #expect(latency["p999"] as? Double == 5)
        #expect(object["deliveries_per_s"] == nil)
        #expect(object["passed"] as? Bool == true)
    }

    @Test func chatAndHoldJSONAddTheirKeys() throws {
        var chat = LoadReport()
        chat.kind = .chat
        chat.connections = 2
        chat.lost = 3
        let object = try decode(chat.json)
        for key in Self.documentedKeys + ["deliveries_per_s", "lost", "duplicated", "reordered"] {
            #expect(object[key] != nil, "missing \(key)")
        }
        #expect(object["passed"] as? Bool == false)
        var hold = LoadReport()
        hold.kind = .hold
        hold.connections = 10
        hold.connectionsRequested = 10
        hold.aliveAtEnd = 9
        let holdObject = try decode(hold.json)
        #expect(holdObject["alive_at_end"] as? Int == 9)
        #expect(!hold.passed && hold.exitStatus == 1)
    }

    @Test func anyProblemFailsTheRun() {
        var report = LoadReport()
        report.connections = 1
        report.connectionsRequested = 1
        #expect(report.passed && report.exitStatus == 0)
        for change in [{ (r: inout LoadReport) in r.mismatches = 1 }, { $0.lost = 1 }, { $0.errors = 1 }, { $0.duplicated = 1 }, { $0.connections = 0 }] {
            var broken = report
            change(&broken)
            #expect(broken.exitStatus == 1)
        }
    }

    @Test func summaryNamesTheFigures() {
        var report = LoadReport()
        report.connections = 100
        report.connectionsRequested = 100
        report.messages = 1_234_567
        report.msgsPerSecond = 246_913.4
        report.durationSeconds = 5
        let text = report.summary
        #expect(text.contains("1,234,567 (246,913 msgs/s"))
        #expect(text.contains("OK: every byte came back as sent"))
        report.mismatches = 2
        #expect(report.summary.contains("2 mismatched"))
        #expect(report.summary.contains("FAILED"))
    }

    @Test func formatting() {
        #expect(Format.fixed(3.14159, decimals: 2) == "3.14")
        #expect(Format.fixed(-0.5, decimals: 0) == "-1")
        #expect(Format.fixed(2, decimals: 3) == "2.000")
        #expect(Format.compact(1_234_567) == "1.23M")
        #expect(Format.compact(98_765) == "98.8k")
        #expect(Format.compact(512) == "512")
        #expect(Format.grouped(10_000) == "10,000")
        #expect(Format.micros(1250) == "1.25 ms")
        #expect(Format.bytes(14_131) == "13.8 KiB")
        #expect(JSONValue.string("a\"b\\\n\u{1}").text == "\"a\\\"b\\\\\\n\\u0001\"")
        #expect(JSONValue.number(forKey: "msgs_per_s", in: "{\"a\":1,\"msgs_per_s\":130401.3,\"b\":2}") == 130401.3)
        #expect(JSONValue.number(forKey: "nope", in: "{}") == nil)
        #expect(median([3, 1, 2]) == 2 && median([4, 1, 3, 2]) == 2.5 && median([]) == 0)
    }

    @Test func procFacts() {
        let status = "Name:\techochat-server\nVmRSS:\t   10944 kB\nThreads:\t2\n"
        #expect(ProcFacts.status(status) == (rss: 10944 * 1024, threads: 2) as (rss: Int, threads: Int))
        let stat = "4242 (echochat server) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 2 0 1234"
        #expect(ProcFacts.cpuTicks(stat) == 287)
    }

    @Test func benchTableAndChart() {
        var measurements: [BenchMeasurement] = []
        for (strategy, rates) in [("epoll", [140_000.0, 150_000, 145_000]), ("thread", [80_000.0, 82_000, 81_000])] {
            for rate in rates {
                var m = BenchMeasurement(workload: "pp100", strategy: strategy)
                m.rate = rate
                m.p99Micros = rate / 1000
                measurements.append(m)
            }
            var hold = BenchMeasurement(workload: "hold10k", strategy: strategy)
            hold.rssBefore = 10 << 20
            hold.rssHolding = (10 << 20) + (strategy == "epoll" ? 1_210_000 : 138_000_000)
            hold.connections = 10_000
            hold.threadsHolding = strategy == "epoll" ? 2 : 10_002
            hold.passed = strategy == "epoll"
            measurements.append(hold)
        }
        let workloads = BenchWorkload.all.filter { ["pp100", "hold10k"].contains($0.name) }
        let summary = BenchSummary(
            strategies: ["epoll", "thread"], workloads: workloads, measurements: measurements, machine: "2 x Test CPU",
            pinning: "pinned", runs: 3, duration: 5, date: "2026-01-01")
        let markdown = summary.markdown
        #expect(markdown.contains("| workload | epoll | thread |"))
        #expect(markdown.contains("| ping-pong 64 B, 100 connections (msgs/s) | 145k | 81.0k |"))
        #expect(markdown.contains("| epoll | 10.0 MiB | 11.2 MiB | 121 B | 2 |"))
        #expect(markdown.contains("13.5 KiB ✗"))
        #expect(markdown.contains("2 x Test CPU"))
        let svg = summary.svg
        #expect(svg.hasPrefix("<svg xmlns=\"http://www.w3.org/2000/svg\""))
        #expect(svg.hasSuffix("</svg>\n"))
        // Two legend squares and one bar per workload and strategy.
        #expect(svg.components(separatedBy: "<rect").count - 1 == 1 + 2 + 4)
        // The best of each workload gets the full 640-pixel bar: epoll's throughput and epoll's memory.
        #expect(svg.components(separatedBy: "width=\"640\"").count - 1 == 2)
        #expect(svg.contains("145k") && svg.contains("121 B"))
    }

    @Test func benchFileSharingRows() {
        var measurements: [BenchMeasurement] = []
        for (strategy, during) in [("epoll", 1_500.0), ("thread", 3_000.0)] {
            var upload = BenchMeasurement(workload: "upload", strategy: strategy)
            upload.uploadMBPerSecond = 150
            upload.downloadMBPerSecond = 120
            upload.rate = 150
            upload.p99Micros = 170_000
            upload.downloadP99Micros = 190_000
            measurements.append(upload)
            var chat = BenchMeasurement(workload: "chat-uploads", strategy: strategy)
            chat.chatP99BaselineMicros = 1_000
            chat.p99Micros = during
            chat.uploadMBPerSecond = 100
            chat.rate = 100
            measurements.append(chat)
        }
        let workloads = BenchWorkload.all.filter { ["upload", "chat-uploads"].contains($0.name) }
        let summary = BenchSummary(
            strategies: ["epoll", "thread"], workloads: workloads, measurements: measurements, machine: "2 x Test CPU",
            pinning: "pinned", runs: 1, duration: 5, date: "2026-01-01")
        let markdown = summary.markdown
        #expect(markdown.contains("**File sharing**"))
        #expect(markdown.contains("| file sharing, 4 clients, 4 MiB files: upload MB/s | 150.0 | 150.0 |"))
        #expect(markdown.contains("| file sharing, 4 clients, 4 MiB files: download MB/s | 120.0 | 120.0 |"))
        #expect(markdown.contains("| chat p99 without uploads | 1.00 ms | 1.00 ms |"))
        #expect(markdown.contains("(goal: within 2x) | 1.50 ms (1.50x) | 3.00 ms (3.00x) |"))
        // Not in the echo and chat tables.
        #expect(!markdown.contains("| file sharing, 4 clients, 4 MiB files (msgs/s)"))
        let svg = summary.svg
        // The smaller growth gets the full bar, as memory does; the higher upload rate too (a tie: both).
        #expect(svg.contains("1.50x (1.50 ms)") && svg.contains("3.00x (3.00 ms)"))
        #expect(svg.components(separatedBy: "width=\"640\"").count - 1 == 3)
        let cells = summary.json.text
        #expect(cells.contains("\"chat_p99_alone_us\":1000.0") && cells.contains("\"download_mb_per_s\":120.0"))
    }
}
