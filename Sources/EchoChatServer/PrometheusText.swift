import EchoChatCore

/// The server's counters in the Prometheus text exposition format, version
/// 0.0.4: for each family a `# HELP` and a `# TYPE` line, then its samples,
/// `name{label="value"} number`. Pure: key-value pairs in, text out.
///
/// It is generic on purpose: every numeric pair becomes `echochat_<key>`
/// (`_total` added to a counter's name), so a counter added to `/stats` or to
/// `TransportStats.detail` later shows up with no change here. The tables
/// below only add what a key alone cannot say: whether it is a counter (an
/// unknown key is a gauge), its help text, a better name, or a labelled
/// family it belongs to. The words (`mode`, `strategy`) become labels of
/// `echochat_info`.
public enum PrometheusText {
    /// What the HTTP response's Content-Type says.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public enum MetricType: String, Sendable {
        case counter, gauge
    }

    struct Known {
        var type: MetricType
        var help: String
        /// The name without `echochat_`, when not the key (plus `_total`).
        var name: String?
    }

    /// Counters and gauges whose key alone does not say enough.
    static let known: [String: Known] = [
        "clients": Known(type: .gauge, help: "Clients connected now (admitted, session not over)."),
        "rooms": Known(type: .gauge, help: "Chat rooms that exist now."),
        "uptime_s": Known(type: .gauge, help: "Seconds since the server started.", name: "uptime_seconds"),
        "connections_total": Known(type: .counter, help: "Connections admitted since the start."),
        "refused": Known(type: .counter, help: "Connections refused since the start, for any reason (see echochat_refusals_total)."),
        "messages_in": Known(type: .counter, help: "Lines received (echo: LF bytes)."),
        "messages_out": Known(type: .counter, help: "Lines sent, one per recipient (echo: LF bytes)."),
        "bytes_in": Known(type: .counter, help: "Bytes received from clients."),
        "bytes_out": Known(type: .counter, help: "Bytes sent to clients."),
        "rate_limited": Known(type: .counter, help: "Times a chat client was read more slowly for sending too fast (rate-limit)."),
        "emfile_events": Known(type: .counter, help: "accept(2) failures for lack of file descriptors (EMFILE, ENFILE)."),
        "slow_consumers": Known(type: .counter, help: "Chat clients dropped because their queued output passed max-output."),
        "files": Known(type: .gauge, help: "Chat: shared files stored now (upload-dir)."),
        "files_bytes": Known(type: .gauge, help: "Chat: bytes of shared files stored now (upload-quota bounds it)."),
        "threads": Known(type: .gauge, help: "Thread strategy: client threads running."),
        "workers": Known(type: .gauge, help: "Pool strategy: worker threads."),
        "queue_depth": Known(type: .gauge, help: "Pool strategy: connections waiting for a worker."),
        "loops": Known(type: .gauge, help: "Reactors strategy: event loops."),
        "nodes": Known(type: .gauge, help: "Cluster: servers alive (1 while the link to Redis is down)."),
        "cluster_link_up": Known(type: .gauge, help: "Cluster: 1 while the link to Redis is up."),
        "cluster_link_losses": Known(type: .counter, help: "Cluster: times the link to Redis was lost."),
        "cluster_round_trip_us": Known(type: .gauge, help: "Cluster: Redis's last heartbeat round trip, in microseconds."),
        "cluster_events_published": Known(type: .counter, help: "Cluster: chat events this server published (joins, lines, leaves...)."),
        "cluster_publishes": Known(type: .counter, help: "Cluster: PUBLISH commands that carried them (events coalesce)."),
        "cluster_events_received": Known(type: .counter, help: "Cluster: chat events heard from the other servers."),
        "cluster_room_channels": Known(type: .gauge, help: "Cluster: room channels this server hears (its rooms with members, and #lobby)."),
    ]

    /// Reactors: `loopN_connections` keys are one gauge labelled by loop.
    static let loopConnections = (name: "loop_connections", help: "Reactors strategy: connections each loop holds open.")

    /// N when `key` is `loopN_connections`.
    static func loopNumber(_ key: String) -> Substring? {
        guard key.hasPrefix("loop"), key.hasSuffix("_connections") else { return nil }
        let number = key.dropFirst(4).dropLast(12)
        return !number.isEmpty && number.allSatisfy(\.isASCII) && number.allSatisfy(\.isNumber) ? number : nil
    }

    /// A counter split by one label: each member key is one sample.
    struct Family {
        var name: String
        var help: String
        var label: String
        /// Key -> label value.
        var members: [(key: String, value: String)]
    }

    static let families: [Family] = [
        Family(
            name: "refusals_total", help: "Connections refused since the start, by reason.", label: "reason",
            members: [
                ("refused_server_full", "server_full"), ("refused_per_address", "per_address"),
                ("refused_out_of_descriptors", "out_of_descriptors"),
            ]),
        Family(
            name: "timeouts_total", help: "Connections closed by a timeout since the start, by kind.", label: "kind",
            members: [
                ("idle_timeouts", "idle"), ("line_timeouts", "line"), ("send_timeouts", "send"), ("close_timeouts", "close"),
            ]),
    ]

    /// The exposition of `pairs` (in the order given; a key seen twice keeps
    /// its first value). Words go into `echochat_info` with `version`.
    public static func render(_ pairs: [TransportStats.Pair], version: String) -> String {
        var seen = Set<String>()
        var info: [(String, String)] = []
        var numbers: [(key: String, value: String)] = []
        for pair in pairs where seen.insert(pair.key).inserted {
            if Int(pair.value) != nil || (Double(pair.value)?.isFinite ?? false) {
                numbers.append((pair.key, pair.value))
            } else {
                info.append((pair.key, pair.value))
            }
        }
        info.append(("version", version))

        var text = ""
        func family(_ name: String, _ type: MetricType, _ help: String, _ samples: [(labels: String, value: String)]) {
            text += "# HELP echochat_\(name) \(escapeHelp(help))\n# TYPE echochat_\(name) \(type.rawValue)\n"
            for sample in samples { text += "echochat_\(name)\(sample.labels) \(sample.value)\n" }
        }
        family("info", .gauge, "The server's settings that are words; always 1.", [(labels(info), "1")])

        let values = Dictionary(numbers, uniquingKeysWith: { first, _ in first })
        var inFamily = Set<String>()
        var emitted = Set<String>()
        for entry in families {
            for member in entry.members { inFamily.insert(member.key) }
        }
        for (key, value) in numbers {
            if inFamily.contains(key) {
                // The whole family, where its first member comes.
                guard let entry = families.first(where: { $0.members.contains { $0.key == key } }),
                    emitted.insert(entry.name).inserted
                else { continue }
                let samples = entry.members.compactMap { member in
                    values[member.key].map { (labels([(entry.label, member.value)]), $0) }
                }
                family(entry.name, .counter, entry.help, samples)
                continue
            }
            if loopNumber(key) != nil {
                guard emitted.insert(loopConnections.name).inserted else { continue }
                let samples = numbers.compactMap { pair in
                    loopNumber(pair.key).map { (labels([("loop", String($0))]), pair.value) }
                }
                family(loopConnections.name, .gauge, loopConnections.help, samples)
                continue
            }
            let known = self.known[key]
            let type = known?.type ?? .gauge
            var name = known?.name ?? metricName(key)
            if known?.name == nil && type == .counter && !name.hasSuffix("_total") { name += "_total" }
            guard emitted.insert(name).inserted else { continue }
            family(name, type, known?.help ?? "The /stats value \(key).", [("", value)])
        }
        return text
    }

    /// `{a="1",b="2"}`, values escaped.
    static func labels(_ pairs: [(String, String)]) -> String {
        guard !pairs.isEmpty else { return "" }
        return "{" + pairs.map { "\(metricName($0.0))=\"\(escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
    }

    /// A key as a metric or label name: `[a-zA-Z0-9_]`, anything else as `_`,
    /// never starting with a digit.
    static func metricName(_ key: String) -> String {
        var name = String(key.unicodeScalars.map { scalar -> Character in
            let ok = scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || scalar == "_")
            return ok ? Character(scalar) : "_"
        })
        if name.first.map({ $0.isNumber }) ?? true { name = "_" + name }
        return name
    }

    /// A label value: backslash, double quote and line feed escaped.
    static func escapeLabel(_ value: String) -> String {
        value.replacingAll([("\\", "\\\\"), ("\"", "\\\""), ("\n", "\\n")])
    }

    /// HELP text: backslash and line feed escaped.
    static func escapeHelp(_ value: String) -> String {
        value.replacingAll([("\\", "\\\\"), ("\n", "\\n")])
    }
}

extension String {
    fileprivate func replacingAll(_ replacements: [(Character, String)]) -> String {
        var result = ""
        for character in self {
            if let replacement = replacements.first(where: { $0.0 == character }) {
                result += replacement.1
            } else {
                result.append(character)
            }
        }
        return result
    }
}
