import EchoChatOptions
import EchoChatPOSIX

/// What one chaos run saw: the well-behaved clients' verification, what each
/// kind of hostile client met, and the server's RSS, descriptors and CPU.
/// Rendered as a summary and as one JSON object; `failures` is the verdict.
struct ChaosResult: Sendable {
    var mode: LoadWorkload = .echo
    var host = ""
    var port = 0
    var durationSeconds = 0.0
    var stormSeconds = 0.0
    var serverPID: Int32?
    var lineTimeout: Double?
    var maxSaturatedCPU = 15.0

    var wellBehaved: LoadReport?
    var wellBehavedError: String?
    var flood = FloodResult()
    var resets = ResetResult()
    var slowloris = SlowlorisResult()
    var garbage = GarbageResult()
    var exhaustion: ExhaustionResult?

    // The server (with its pid).
    var rssBaseline = 0
    var rssPeak = 0
    var threadsPeak = 0
    var descriptorsBaseline = 0
    var descriptorsPeak = 0
    var descriptorsEnd = 0
    /// Seconds after the last client closed until the server was back to its
    /// baseline; nil when it was not within `settleSeconds`.
    var descriptorsBackAfter: Double?
    var settleSeconds = 0.0
    /// The server's CPU time while the hostile clients stormed, % of one core.
    var cpuStormPercent = 0.0
    var serverExited = false

    var interruption: Signal?

    var chat: Bool { mode == .chat }

    // MARK: - The well-behaved clients

    /// Echo: messages sent. Chat: deliveries owed (each line a sender wrote,
    /// once for every other client in the room).
    var sent: Int {
        guard let report = wellBehaved else { return 0 }
        return chat ? report.expected : report.messagesTotal + report.lost
    }

    /// What came back or arrived intact, once, in order.
    var verified: Int {
        guard let report = wellBehaved else { return 0 }
        return chat ? max(0, report.deliveries - report.reordered) : max(0, report.messagesTotal - report.mismatches)
    }

    // MARK: - Verdict

    /// Why the run failed; empty when it passed.
    var failures: [String] {
        var list: [String] = []
        if let error = wellBehavedError {
            list.append("the well-behaved clients could not run: \(error)")
        } else if let report = wellBehaved {
            if sent == 0 { list.append("the well-behaved clients sent nothing") }
            if verified != sent { list.append("well-behaved: \(Format.grouped(sent)) sent, \(Format.grouped(verified)) verified") }
            let problems = [
                (report.lost, "lost"), (report.mismatches, "mismatched"), (report.duplicated, "duplicated"),
                (report.reordered, "reordered"), (report.unexpectedCloses, "closed early"),
                (report.connectFailed, "failed to connect"), (report.errors, "errors in all"),
            ].filter { $0.0 > 0 }.map { "\(Format.grouped($0.0)) \($0.1)" }
            if !problems.isEmpty { list.append("well-behaved: " + problems.joined(separator: ", ")) }
        }
        if serverPID != nil {
            if serverExited {
                list.append("the server exited during the run")
            } else if descriptorsBackAfter == nil {
                list.append(
                    "descriptors: the server holds \(descriptorsEnd), its baseline is \(descriptorsBaseline) (waited \(Format.fixed(settleSeconds, decimals: 0)) s)")
            }
        }
        if chat && flood.slowDropped < flood.slowConsumers {
            list.append("slow consumers: the server dropped \(flood.slowDropped) of \(flood.slowConsumers)")
        }
        if !chat && flood.slowBackpressured < flood.slowConsumers {
            list.append("slow consumers: the server stopped reading \(flood.slowBackpressured) of \(flood.slowConsumers)")
        }
        if chat, let lineTimeout, slowloris.closedByServer < slowloris.clients {
            list.append(
                "slowloris: the server closed \(slowloris.closedByServer) of \(slowloris.clients) (line-timeout \(Format.compact(lineTimeout)) s)")
        }
        if garbage.controlsRelayed > 0 {
            list.append("garbage: \(Format.grouped(garbage.controlsRelayed)) control characters reached other clients")
        }
        if garbage.echoMismatched > 0 { list.append("garbage: \(garbage.echoMismatched) sessions did not get their bytes back") }
        if garbage.unfinished > 0 { list.append("garbage: the server did not close \(garbage.unfinished) finished sessions") }
        if garbage.closedEarly > 0 { list.append("garbage: the server closed \(garbage.closedEarly) sessions before they had sent everything") }
        if let exhaustion {
            if let error = exhaustion.error {
                list.append("exhaustion: \(error)")
            } else {
                if !exhaustion.saturated { list.append("exhaustion: the server never ran out of descriptors") }
                if exhaustion.stillServed < exhaustion.served {
                    list.append("exhaustion: \(exhaustion.served - exhaustion.stillServed) of the clients it had stopped being served")
                }
                if exhaustion.cpuExtraPercent > maxSaturatedCPU {
                    list.append(
                        "exhaustion: server CPU \(Format.fixed(exhaustion.cpuPercent, decimals: 1))% while saturated, \(Format.fixed(exhaustion.cpuUnsaturatedPercent, decimals: 1))% before (at most \(Format.compact(maxSaturatedCPU)) points more allowed)")
                }
                if !exhaustion.acceptsAgain && interruption == nil { list.append("exhaustion: no new client was served after the others left") }
            }
            if !exhaustion.restored {
                list.append("exhaustion: could not restore the server's open-file limit (soft \(exhaustion.originalSoft))")
            }
        }
        return list
    }

    var passed: Bool { failures.isEmpty }

    var exitStatus: Int32 {
        if let interruption { return 128 + interruption.rawValue }
        return passed ? 0 : 1
    }

    // MARK: - Summary

    static func mib(_ bytes: Int) -> String { Format.fixed(Double(bytes) / 1_048_576, decimals: 1) + " MiB" }

    var summary: String {
        var rows: [(String, String)] = []
        if let report = wellBehaved {
            let what = chat
                ? "\(report.connections) clients in #chaos-verify, \(report.senders) senders: \(Format.grouped(report.messages)) lines, \(Format.grouped(sent)) deliveries owed, \(Format.grouped(verified)) verified"
                : "\(report.connections) connections: \(Format.grouped(sent)) messages sent, \(Format.grouped(verified)) verified"
            var problems = "\(Format.grouped(report.lost)) lost, \(Format.grouped(report.mismatches)) mismatched"
            if chat { problems += ", \(Format.grouped(report.duplicated)) duplicated, \(Format.grouped(report.reordered)) reordered" }
            rows.append(("well-behaved", "\(what) (\(problems), \(Format.grouped(report.errors)) errors)"))
        } else if let error = wellBehavedError {
            rows.append(("well-behaved", "did not run: \(error)"))
        }
        var slow = "\(flood.slowBackpressured) of \(flood.slowConsumers) slow consumers backpressured (\(flood.slowClosed) closed)"
        if chat {
            slow = "\(flood.slowDropped) of \(flood.slowConsumers) slow consumers dropped by the server"
            if let first = flood.firstDrop, let last = flood.lastDrop {
                slow += " \(Format.fixed(first, decimals: 1))-\(Format.fixed(last, decimals: 1)) s into the flood"
            }
        }
        rows.append(("flood", "\(flood.flooders) flooders sent \(Format.bytes(Double(flood.bytesSent)))\(flood.flooderDrops > 0 ? " (\(flood.flooderDrops) dropped and replaced)" : ""); \(slow)"))
        rows.append(("resets", "\(Format.grouped(resets.handled)) clients vanished with RST: \(Format.grouped(resets.midLine)) mid-line, \(Format.grouped(resets.midOutput)) mid-output (\(Format.grouped(resets.outputSeen)) with output arriving)"))
        var loris = "\(slowloris.clients) clients, one byte every \(SlowlorisChaos.interval / 1_000_000_000) s: \(slowloris.closedByServer) closed by the server"
        if let first = slowloris.firstClose, let last = slowloris.lastClose {
            loris += " after \(Format.fixed(first, decimals: 1))-\(Format.fixed(last, decimals: 1)) s"
        }
        rows.append(("slowloris", loris))
        let sessions = GarbageKind.allCases.map { "\($0.title) \(garbage.sessions[$0.rawValue] ?? 0)" }.joined(separator: ", ")
        rows.append(("garbage", "\(Format.grouped(garbage.handled)) sessions (\(sessions))"
            + (chat ? "; \(garbage.lineTimeouts) ended by line-timeout; \(garbage.controlsRelayed) control characters relayed" : "; \(garbage.echoMismatched) echoes short")))
        if let e = exhaustion {
            if let error = e.error {
                rows.append(("exhaustion", "not run: \(error)"))
            } else {
                rows.append(("exhaustion", "limit \(e.limit) descriptors (was \(e.originalSoft)): of \(e.extraClients) clients \(e.served) served, \(e.refused) refused, \(e.unanswered) unanswered; \(e.trickle) more while saturated (\(e.trickleRefused) refused); server CPU \(Format.fixed(e.cpuPercent, decimals: 1))% over \(Format.fixed(e.saturatedSeconds, decimals: 1)) s saturated (\(Format.fixed(e.cpuUnsaturatedPercent, decimals: 1))% before); \(e.stillServed) of \(e.served) still served; accepts again: \(e.acceptsAgain ? "yes" : "no"); limit restored: \(e.restored ? "yes" : "no")"))
            }
        } else if serverPID == nil {
            rows.append(("exhaustion", "not run (needs --server-pid)"))
        }
        if serverPID != nil {
            let back = descriptorsBackAfter.map { "back to baseline \(Format.fixed($0, decimals: 1)) s after the last client" }
                ?? "NOT back to baseline after \(Format.fixed(settleSeconds, decimals: 0)) s"
            rows.append(("server", "RSS \(Self.mib(rssBaseline)) at the start, peak \(Self.mib(rssPeak)); descriptors \(descriptorsBaseline) at the start, peak \(descriptorsPeak), \(descriptorsEnd) at the end (\(back)); CPU \(Format.fixed(cpuStormPercent, decimals: 0))% during the storm; peak threads \(threadsPeak)" + (serverExited ? "; the server EXITED" : "")))
        } else {
            rows.append(("server", "RSS, descriptors and CPU unavailable (give --server-pid)"))
        }
        let verdict = passed
            ? "OK: the well-behaved clients lost nothing" + (serverPID != nil ? "; descriptors back to baseline" : "")
            : "FAILED: " + failures.joined(separator: "; ")
        rows.append(("result", interruption.map { "INTERRUPTED by \($0): the figures cover the run until then; " + verdict } ?? verdict))
        let header = "echochat-load \(Release.version) chaos: \(mode.rawValue), \(Format.compact(durationSeconds)) s against \(host):\(port)"
            + (serverPID.map { " (server pid \($0))" } ?? "") + (interruption.map { " (interrupted by \($0))" } ?? "")
        let width = rows.map(\.0.count).max()! + 2
        return header + "\n" + rows.map { "  " + Format.pad($0.0, width) + $0.1 }.joined(separator: "\n") + "\n"
    }

    // MARK: - JSON

    var json: JSONValue {
        var pairs: [(String, JSONValue)] = [
            ("mode", .string(mode.rawValue)),
            ("host", .string(host)), ("port", .int(port)),
            ("duration_s", .number(durationSeconds, decimals: 3)),
            ("storm_s", .number(stormSeconds, decimals: 3)),
            ("server_pid", serverPID.map { .int(Int($0)) } ?? .null),
            ("unavailable", .array(serverPID == nil ? ["rss", "descriptors", "cpu", "exhaustion"].map { .string($0) } : [])),
        ]
        var good: [(String, JSONValue)] = [("sent", .int(sent)), ("verified", .int(verified))]
        if let report = wellBehaved {
            good += [
                ("clients", .int(report.connections)),
                ("lines_sent", chat ? .int(report.messages) : .null),
                ("lost", .int(report.lost)), ("mismatches", .int(report.mismatches)),
                ("duplicated", .int(report.duplicated)), ("reordered", .int(report.reordered)),
                ("unexpected_closes", .int(report.unexpectedCloses)), ("connect_failed", .int(report.connectFailed)),
                ("errors", .int(report.errors)), ("send_skipped", .int(report.sendSkipped)),
                ("latency_us", .object([("p50", .number(report.latency.p50, decimals: 1)), ("p99", .number(report.latency.p99, decimals: 1)), ("max", .number(report.latency.max, decimals: 1))])),
            ]
        }
        good.append(("error", wellBehavedError.map { .string($0) } ?? .null))
        pairs.append(("well_behaved", .object(good)))

        var hostile: [(String, JSONValue)] = [
            ("flooders", .object([
                ("handled", .int(flood.flooders)), ("dropped", .int(flood.flooderDrops)),
                ("bytes_sent", .int(flood.bytesSent)), ("bytes_received", .int(flood.bytesReceived)),
                ("connect_failed", .int(flood.connectFailed)),
            ])),
            ("slow_consumers", .object([
                ("clients", .int(flood.slowConsumers)),
                ("handled", .int(chat ? flood.slowDropped : flood.slowBackpressured)),
                ("dropped", .int(flood.slowDropped)), ("backpressured", .int(flood.slowBackpressured)),
                ("closed", .int(flood.slowClosed)),
                ("first_drop_s", flood.firstDrop.map { .number($0, decimals: 2) } ?? .null),
                ("last_drop_s", flood.lastDrop.map { .number($0, decimals: 2) } ?? .null),
            ])),
            ("resets", .object([
                ("handled", .int(resets.handled)), ("mid_line", .int(resets.midLine)), ("mid_output", .int(resets.midOutput)),
                ("output_seen", .int(resets.outputSeen)), ("connect_failed", .int(resets.connectFailed)),
            ])),
            ("slowloris", .object([
                ("clients", .int(slowloris.clients)), ("handled", .int(slowloris.clients)),
                ("closed_by_server", .int(slowloris.closedByServer)),
                ("first_close_s", slowloris.firstClose.map { .number($0, decimals: 2) } ?? .null),
                ("last_close_s", slowloris.lastClose.map { .number($0, decimals: 2) } ?? .null),
                ("connect_failed", .int(slowloris.connectFailed)),
            ])),
            ("garbage", .object(
                [("handled", .int(garbage.handled))]
                    + GarbageKind.allCases.map { ($0.rawValue, .int(garbage.sessions[$0.rawValue] ?? 0)) }
                    + [
                        ("bytes_sent", .int(garbage.bytesSent)), ("bytes_received", .int(garbage.bytesReceived)),
                        ("controls_relayed", .int(garbage.controlsRelayed)), ("echo_mismatched", .int(garbage.echoMismatched)),
                        ("line_timeouts", .int(garbage.lineTimeouts)),
                        ("closed_early", .int(garbage.closedEarly)), ("unfinished", .int(garbage.unfinished)),
                        ("connect_failed", .int(garbage.connectFailed)),
                    ])),
        ]
        if let e = exhaustion {
            hostile.append(("exhaustion", .object([
                ("handled", .int(e.refused + e.unanswered + e.trickleRefused + e.trickleUnanswered)),
                ("limit", .int(e.limit)), ("original_soft_limit", .int(e.originalSoft)),
                ("descriptors_before", .int(e.descriptorsBefore)),
                ("clients", .int(e.extraClients)), ("served", .int(e.served)), ("refused", .int(e.refused)),
                ("unanswered", .int(e.unanswered)), ("still_served", .int(e.stillServed)),
                ("trickle", .int(e.trickle)), ("trickle_refused", .int(e.trickleRefused)),
                ("trickle_unanswered", .int(e.trickleUnanswered)),
                ("saturated_s", .number(e.saturatedSeconds, decimals: 3)),
                ("cpu_saturated_pct", .number(e.cpuPercent, decimals: 1)),
                ("cpu_unsaturated_pct", .number(e.cpuUnsaturatedPercent, decimals: 1)),
                ("accepts_again", .bool(e.acceptsAgain)), ("limit_restored", .bool(e.restored)),
                ("error", e.error.map { .string($0) } ?? .null),
            ])))
        } else {
            hostile.append(("exhaustion", .null))
        }
        pairs.append(("hostile", .object(hostile)))

        if serverPID != nil {
            pairs.append(("server", .object([
                ("rss_baseline_bytes", .int(rssBaseline)), ("rss_peak_bytes", .int(rssPeak)),
                ("rss_peak_mb", .number(Double(rssPeak) / 1_048_576, decimals: 1)),
                ("threads_peak", .int(threadsPeak)),
                ("fds_baseline", .int(descriptorsBaseline)), ("fds_peak", .int(descriptorsPeak)), ("fds_end", .int(descriptorsEnd)),
                ("fds_back_to_baseline", .bool(descriptorsBackAfter != nil)),
                ("fds_back_after_s", descriptorsBackAfter.map { .number($0, decimals: 2) } ?? .null),
                ("cpu_storm_pct", .number(cpuStormPercent, decimals: 1)),
                ("cpu_saturated_pct", exhaustion.map { .number($0.cpuPercent, decimals: 1) } ?? .null),
                ("cpu_unsaturated_pct", exhaustion.map { .number($0.cpuUnsaturatedPercent, decimals: 1) } ?? .null),
                ("exited", .bool(serverExited)),
            ])))
        } else {
            pairs.append(("server", .null))
        }
        pairs += [
            ("failures", .array(failures.map { .string($0) })),
            ("interrupted", .bool(interruption != nil)),
            ("signal", interruption.map { .string($0.description) } ?? .null),
            ("passed", .bool(passed)),
        ]
        return .object(pairs)
    }
}
