import EchoChatOptions
import EchoChatPOSIX

/// The outcome of one load run: parameters, totals, rates, percentiles and
/// error counts. Rendered as a human summary (stdout) and as one JSON object.
public struct LoadReport: Sendable {
    public enum Kind: String, Sendable { case echo, chat, hold, upload }

    public var kind: Kind = .echo
    public var host = ""
    /// `--hosts`: every server, as given (empty with one).
    public var hosts: [String] = []
    public var port = 0
    public var threads = 0
    public var connectionsRequested = 0
    /// Connections that were established.
    public var connections = 0
    public var connectFailed = 0
    public var connectSeconds = 0.0
    public var connectLatency = LatencySummary.empty
    public var sourceAddresses = 1
    public var durationSeconds = 0.0
    public var warmupSeconds = 0.0
    public var size = 0
    public var pipeline = 1
    /// Open loop: messages/s per connection (per sender in chat); nil = closed loop.
    public var rate: Double?
    public var messagesPerConnection: Int?
    /// Echo: messages completed in the measured window. Chat: lines sent in it.
    public var messages = 0
    /// Every message completed, warmup and drain included.
    public var messagesTotal = 0
    public var msgsPerSecond = 0.0
    public var mbPerSecond = 0.0
    public var latency = LatencySummary.empty
    /// Chat with `--hosts`: `latency` split by whether the line crossed servers.
    public var sameServerLatency: LatencySummary?
    public var crossServerLatency: LatencySummary?
    /// Unexpected closes, connect failures, read/write errors, error lines from the server.
    public var errors = 0
    public var unexpectedCloses = 0
    /// Messages (or lines) whose bytes differed from what was sent, plus bytes nobody sent.
    public var mismatches = 0
    /// Messages sent and never (completely) answered or delivered.
    public var lost = 0
    public var loadCPUPercent = 0.0
    /// CPU seconds this process used from the start of the load to its end.
    public var loadCPUSeconds = 0.0

    // Chat
    public var senders = 0
    public var expected = 0
    public var deliveries = 0
    public var deliveriesPerSecond = 0.0
    public var duplicated = 0
    public var reordered = 0
    /// Lines due while the sender's own queue was full (not sent, not expected).
    public var sendSkipped = 0
    public var maxSendLagMicros = 0.0
    public var notices = 0

    // Hold
    public var heldSeconds = 0.0
    public var aliveAfterConnect = 0
    public var droppedDuringHold = 0
    public var aliveAtEnd = 0

    // Upload
    /// Files stored (and checked) and downloaded back.
    public var uploads = 0
    public var uploadBytes = 0
    public var downloads = 0
    public var downloadBytes = 0
    /// Each over its own phase: all uploads, then all downloads.
    public var uploadSeconds = 0.0
    public var downloadSeconds = 0.0
    public var uploadMBPerSecond = 0.0
    public var downloadMBPerSecond = 0.0
    /// Upload: first byte of `/upload` sent to `* stored` read; download:
    /// `/download` sent to the last byte read.
    public var uploadLatency = LatencySummary.empty
    public var downloadLatency = LatencySummary.empty
    /// A `* stored` or `* sending` SHA-256 that is not the client's own.
    public var hashMismatches = 0
    /// Downloads with any byte (or the size) not as uploaded.
    public var byteMismatches = 0
    /// Answers out of §5's order or shape.
    public var protocolErrors = 0
    /// `! ` answers to `/upload` or `/download` (refusals, failures).
    public var refused = 0
    /// Transfers without progress for `--timeout` seconds.
    public var stalls = 0
    public var seed: UInt64 = 0
    /// How this run's file names begin (`PREFIX-CLIENT-INDEX.bin`).
    public var namePrefix = ""

    /// The signal (SIGINT, SIGTERM) that ended the run early; its figures
    /// cover the run until then.
    public var interruption: Signal?

    public init() {}

    /// Nothing mismatched, nothing lost, no connection failed or closed early.
    public var passed: Bool {
        mismatches == 0 && lost == 0 && errors == 0 && duplicated == 0 && connections > 0
            && (kind != .hold || aliveAtEnd == connectionsRequested)
            && (kind != .upload || (uploads > 0 && downloads == uploads && connections == connectionsRequested))
    }

    /// 0 or 1 by `passed`; 128 + the signal number (130 for SIGINT, 143 for
    /// SIGTERM) for an interrupted run, as a shell reports a signalled process.
    public var exitStatus: Int32 {
        if let interruption { return 128 + interruption.rawValue }
        return passed ? 0 : 1
    }

    // MARK: - JSON

    public var json: JSONValue {
        func latencyObject(_ l: LatencySummary) -> JSONValue {
            .object([
                ("min", .number(l.min, decimals: 1)), ("p50", .number(l.p50, decimals: 1)),
                ("p90", .number(l.p90, decimals: 1)), ("p99", .number(l.p99, decimals: 1)),
                ("p999", .number(l.p999, decimals: 1)), ("max", .number(l.max, decimals: 1)),
                ("mean", .number(l.mean, decimals: 1)), ("count", .int(Int(l.count))),
            ])
        }
        var pairs: [(String, JSONValue)] = [
            ("mode", .string(kind.rawValue)),
            ("host", .string(host)), ("port", .int(port)), ("hosts", .array(hosts.map { .string($0) })),
            ("threads", .int(threads)),
            ("connections", .int(connections)),
            ("connections_requested", .int(connectionsRequested)),
            ("connect_failed", .int(connectFailed)),
            ("connect_s", .number(connectSeconds, decimals: 3)),
            ("connect_latency_us", latencyObject(connectLatency)),
            ("source_addresses", .int(sourceAddresses)),
            ("duration_s", .number(durationSeconds, decimals: 3)),
            ("warmup_s", .number(warmupSeconds, decimals: 3)),
            ("size", .int(size)),
            ("pipeline", .int(pipeline)),
            ("rate", rate.map { .number($0, decimals: 1) } ?? .null),
            ("messages_per_connection", messagesPerConnection.map { .int($0) } ?? .null),
            ("messages", .int(messages)),
            ("messages_total", .int(messagesTotal)),
            ("msgs_per_s", .number(msgsPerSecond, decimals: 1)),
            ("mb_per_s", .number(mbPerSecond, decimals: 3)),
            ("latency_us", latencyObject(latency)),
            ("same_server_latency_us", sameServerLatency.map(latencyObject) ?? .null),
            ("cross_server_latency_us", crossServerLatency.map(latencyObject) ?? .null),
            ("errors", .int(errors)),
            ("unexpected_closes", .int(unexpectedCloses)),
            ("mismatches", .int(mismatches)),
            ("lost", .int(lost)),
            ("load_cpu_pct", .number(loadCPUPercent, decimals: 1)),
            ("load_cpu_s", .number(loadCPUSeconds, decimals: 3)),
        ]
        switch kind {
        case .chat:
            pairs += [
                ("senders", .int(senders)), ("expected", .int(expected)), ("deliveries", .int(deliveries)),
                ("deliveries_per_s", .number(deliveriesPerSecond, decimals: 1)),
                ("duplicated", .int(duplicated)), ("reordered", .int(reordered)),
                ("send_skipped", .int(sendSkipped)),
                ("max_send_lag_us", .number(maxSendLagMicros, decimals: 1)),
                ("notices", .int(notices)),
            ]
        case .hold:
            pairs += [
                ("held_s", .number(heldSeconds, decimals: 3)),
                ("alive_after_connect", .int(aliveAfterConnect)),
                ("dropped_during_hold", .int(droppedDuringHold)),
                ("alive_at_end", .int(aliveAtEnd)),
            ]
        case .upload:
            pairs += [
                ("name_prefix", .string(namePrefix)), ("seed", .string(String(seed, radix: 16))),
                ("uploads", .int(uploads)), ("upload_bytes", .int(uploadBytes)),
                ("upload_s", .number(uploadSeconds, decimals: 3)),
                ("upload_mb_per_s", .number(uploadMBPerSecond, decimals: 3)),
                ("upload_latency_us", latencyObject(uploadLatency)),
                ("downloads", .int(downloads)), ("download_bytes", .int(downloadBytes)),
                ("download_s", .number(downloadSeconds, decimals: 3)),
                ("download_mb_per_s", .number(downloadMBPerSecond, decimals: 3)),
                ("download_latency_us", latencyObject(downloadLatency)),
                ("hash_mismatches", .int(hashMismatches)), ("byte_mismatches", .int(byteMismatches)),
                ("protocol_errors", .int(protocolErrors)), ("refused", .int(refused)), ("stalls", .int(stalls)),
            ]
        case .echo: break
        }
        pairs.append(("interrupted", .bool(interruption != nil)))
        pairs.append(("signal", interruption.map { .string($0.description) } ?? .null))
        pairs.append(("passed", .bool(passed)))
        return .object(pairs)
    }

    // MARK: - Summary

    /// The human summary printed on stdout.
    public var summary: String {
        var rows: [(String, String)] = []
        let connectLine = "\(Format.grouped(connections)) of \(Format.grouped(connectionsRequested)) connected, "
            + "\(Format.grouped(connectFailed)) failed, in \(Format.fixed(connectSeconds, decimals: 3)) s"
            + (connections > 0
                ? " (connect p50 \(Format.micros(connectLatency.p50)), p99 \(Format.micros(connectLatency.p99)), max \(Format.micros(connectLatency.max)))"
                : "")
            + (sourceAddresses > 1 ? ", from \(sourceAddresses) source addresses" : "")
        rows.append(("connections", connectLine))
        switch kind {
        case .hold:
            rows.append(("held", "\(Format.fixed(heldSeconds, decimals: 2)) s"))
            rows.append(("alive", "\(Format.grouped(aliveAfterConnect)) after connecting, \(Format.grouped(aliveAtEnd)) at the end, \(Format.grouped(droppedDuringHold)) dropped while held"))
        case .upload:
            func line(_ files: Int, _ bytes: Int, _ seconds: Double, _ rate: Double, _ l: LatencySummary) -> String {
                "\(Format.grouped(files)) files, \(Format.bytes(Double(bytes))) in \(Format.fixed(seconds, decimals: 2)) s (\(Format.fixed(rate, decimals: 1)) MB/s); "
                    + "per file p50 \(Format.micros(l.p50))  p90 \(Format.micros(l.p90))  p99 \(Format.micros(l.p99))  max \(Format.micros(l.max))"
            }
            rows.append(("uploads", line(uploads, uploadBytes, uploadSeconds, uploadMBPerSecond, uploadLatency)))
            rows.append(("downloads", line(downloads, downloadBytes, downloadSeconds, downloadMBPerSecond, downloadLatency)))
        case .echo, .chat:
            let window = messagesPerConnection != nil
                ? "\(Format.fixed(durationSeconds, decimals: 2)) s for \(Format.grouped(messagesPerConnection!)) messages per \(kind == .chat ? "sender" : "connection")"
                : "\(Format.fixed(durationSeconds, decimals: 2)) s measured" + (warmupSeconds > 0 ? " after \(Format.fixed(warmupSeconds, decimals: 2)) s warmup" : "")
            rows.append(("duration", window))
            if kind == .echo {
                rows.append(("messages", "\(Format.grouped(messages)) (\(Format.grouped(Int(msgsPerSecond.rounded()))) msgs/s, \(Format.fixed(mbPerSecond, decimals: 2)) MB/s)"))
            } else {
                rows.append(("sent", "\(Format.grouped(messages)) lines by \(senders) senders (\(Format.grouped(Int(msgsPerSecond.rounded())))/s)" + (sendSkipped > 0 ? ", \(Format.grouped(sendSkipped)) skipped (sender queue full)" : "")))
                rows.append(("deliveries", "\(Format.grouped(deliveries)) of \(Format.grouped(expected)) expected (\(Format.grouped(Int(deliveriesPerSecond.rounded())))/s, \(Format.fixed(mbPerSecond, decimals: 2)) MB/s)"))
            }
            let l = latency
            rows.append((kind == .chat ? "fan-out latency" : "latency", "min \(Format.micros(l.min))  p50 \(Format.micros(l.p50))  p90 \(Format.micros(l.p90))  p99 \(Format.micros(l.p99))  p99.9 \(Format.micros(l.p999))  max \(Format.micros(l.max))"
                + (rate != nil ? "  (from the scheduled send time)" : "")))
            if let same = sameServerLatency, let cross = crossServerLatency {
                rows.append(("same server", "p50 \(Format.micros(same.p50))  p99 \(Format.micros(same.p99))  (\(Format.grouped(Int(same.count))) deliveries)"))
                rows.append(("across servers", "p50 \(Format.micros(cross.p50))  p99 \(Format.micros(cross.p99))  (\(Format.grouped(Int(cross.count))) deliveries; p99 \(Format.micros(max(0, cross.p99 - same.p99))) more)"))
            }
        }
        var problems = "\(Format.grouped(unexpectedCloses)) unexpected closes, \(Format.grouped(mismatches)) mismatched, \(Format.grouped(lost)) lost"
        if kind == .chat { problems += ", \(Format.grouped(duplicated)) duplicated, \(Format.grouped(reordered)) reordered" }
        if kind == .upload {
            problems = "\(Format.grouped(hashMismatches)) wrong sha256, \(Format.grouped(byteMismatches)) files with a wrong byte, "
                + "\(Format.grouped(protocolErrors)) protocol errors, \(Format.grouped(refused)) refused, \(Format.grouped(stalls)) stalled, "
                + "\(Format.grouped(unexpectedCloses)) unexpected closes, \(Format.grouped(lost)) not downloaded"
        }
        problems += ", \(Format.grouped(errors)) errors in all"
        rows.append(("errors", problems))
        rows.append(("load client CPU", "\(Format.fixed(loadCPUPercent, decimals: 0))% of one core"))
        let verdict: String
        if passed {
            switch kind {
            case .hold: verdict = "OK: every connection stayed alive"
            case .chat: verdict = "OK: every line reached every other client once, in order, intact"
            case .echo: verdict = "OK: every byte came back as sent"
            case .upload: verdict = "OK: every file stored with our SHA-256 and downloaded back byte for byte"
            }
        } else {
            verdict = "FAILED"
        }
        if let interruption {
            rows.append(("result", "INTERRUPTED by \(interruption): the figures cover the run until then; " + verdict))
        } else {
            rows.append(("result", verdict))
        }
        let modeText: String
        switch kind {
        case .echo:
            modeText = "echo, \(Format.grouped(connectionsRequested)) connections, \(size) B messages, pipeline \(pipeline), "
                + (rate.map { "open loop at \(Format.compact($0)) msgs/s per connection" } ?? "closed loop")
        case .chat:
            modeText = "chat, \(Format.grouped(connectionsRequested)) clients in one room, \(senders) senders at \(Format.compact(rate ?? 0)) lines/s each, \(size) B lines"
        case .hold:
            modeText = "hold, \(Format.grouped(connectionsRequested)) idle connections"
        case .upload:
            modeText = "upload, \(Format.grouped(connectionsRequested)) clients, \(Format.bytes(Double(size))) files, "
                + (messagesPerConnection.map { "\(Format.grouped($0)) per client" } ?? "uploading for \(Format.fixed(durationSeconds, decimals: 1)) s")
        }
        let header = "echochat-load \(Release.version): \(modeText), \(threads) thread\(threads == 1 ? "" : "s"), \(hosts.isEmpty ? "\(host):\(port)" : hosts.joined(separator: ","))"
            + (interruption.map { " (interrupted by \($0))" } ?? "")
        let width = rows.map(\.0.count).max()! + 2
        return header + "\n" + rows.map { "  " + Format.pad($0.0, width) + $0.1 }.joined(separator: "\n") + "\n"
    }

    /// One live progress line (stderr, on a terminal).
    public static func progressLine(
        elapsed: Double, connections: Int, messagesPerSecond: Double, megabytesPerSecond: Double,
        p99Micros: Double, errors: Int, label: String = "msgs/s"
    ) -> String {
        "[\(Format.fixed(elapsed, decimals: 0))s] conns \(Format.grouped(connections))  \(label) \(Format.compact(messagesPerSecond))  MB/s \(Format.fixed(megabytesPerSecond, decimals: 1))  p99 \(p99Micros > 0 ? Format.micros(p99Micros) : "–")  errors \(errors)"
    }
}
