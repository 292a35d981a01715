/// Counters a strategy keeps about the wire (bytes, connections) and reports
/// for `/stats`, the SIGUSR1 line and the final log line.
public struct TransportStats: Sendable, Equatable {
    public var strategy: String
    public var uptimeSeconds: Int
    public var connectionsTotal: Int
    public var refused: Int
    /// Of `refused`: those refused by `max-per-address` (§3.6).
    public var refusedPerAddress: Int
    public var bytesIn: Int
    public var bytesOut: Int
    /// Echo mode only: LF bytes received / sent (chat lines are counted by the core).
    public var messagesIn: Int
    public var messagesOut: Int
    /// Strategy-specific pairs appended after the standard keys (e.g. `workers`).
    public var extra: [Pair]
    /// Counters that are not `/stats` keys, for metrics: refusals, drops and
    /// timeouts by cause, descriptor exhaustion.
    public var detail: [Pair]

    public struct Pair: Sendable, Equatable {
        public var key: String
        public var value: String
        public init(_ key: String, _ value: String) {
            self.key = key
            self.value = value
        }
    }

    public init(
        strategy: String, uptimeSeconds: Int = 0, connectionsTotal: Int = 0, refused: Int = 0, refusedPerAddress: Int = 0,
        bytesIn: Int = 0, bytesOut: Int = 0, messagesIn: Int = 0, messagesOut: Int = 0, extra: [Pair] = [],
        detail: [Pair] = []
    ) {
        self.strategy = strategy
        self.uptimeSeconds = uptimeSeconds
        self.connectionsTotal = connectionsTotal
        self.refused = refused
        self.refusedPerAddress = refusedPerAddress
        self.bytesIn = bytesIn
        self.bytesOut = bytesOut
        self.messagesIn = messagesIn
        self.messagesOut = messagesOut
        self.extra = extra
        self.detail = detail
    }
}

/// Everything `/stats` reports, in the order docs/PROTOCOL.md §3.4 lists the keys.
public struct ServerStats: Sendable, Equatable {
    public var mode: ServerMode
    public var clients: Int
    public var rooms: Int
    public var messagesIn: Int
    public var messagesOut: Int
    public var transport: TransportStats
    /// Chat: the stored files (§5); nil in echo mode.
    public var files: FileTotals?

    public init(
        mode: ServerMode, clients: Int, rooms: Int, messagesIn: Int, messagesOut: Int, transport: TransportStats,
        files: FileTotals? = nil
    ) {
        self.mode = mode
        self.clients = clients
        self.rooms = rooms
        self.messagesIn = messagesIn
        self.messagesOut = messagesOut
        self.transport = transport
        self.files = files
    }

    /// Echo mode's counters: no rooms; messages are the transport's LF counts.
    public static func echo(clients: Int, transport: TransportStats) -> ServerStats {
        ServerStats(
            mode: .echo, clients: clients, rooms: 0,
            messagesIn: transport.messagesIn, messagesOut: transport.messagesOut, transport: transport)
    }

    /// The `/stats` pairs in order: the standard keys, the abuse-limit
    /// counters (§3.6), then the strategy's extras.
    public var pairs: [TransportStats.Pair] {
        let standard: [(String, String)] = [
            ("mode", mode.rawValue), ("strategy", transport.strategy),
            ("clients", String(clients)), ("rooms", String(rooms)),
            ("uptime_s", String(transport.uptimeSeconds)),
            ("connections_total", String(transport.connectionsTotal)), ("refused", String(transport.refused)),
            ("messages_in", String(messagesIn)), ("messages_out", String(messagesOut)),
            ("bytes_in", String(transport.bytesIn)), ("bytes_out", String(transport.bytesOut)),
            ("refused_per_address", String(transport.refusedPerAddress)),
        ]
        let files = files.map { [TransportStats.Pair("files", String($0.count)), TransportStats.Pair("files_bytes", String($0.bytes))] } ?? []
        return standard.map { TransportStats.Pair($0.0, $0.1) } + transport.extra + files
    }

    /// `mode=chat strategy=epoll clients=2 …`: single spaces, plain integers or words.
    public var keyValues: String {
        pairs.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
    }
}

public enum ServerMode: String, Sendable, CaseIterable {
    case echo
    case chat
}

/// `/stats`' `files` and `files_bytes`.
public struct FileTotals: Sendable, Equatable {
    public var count: Int
    public var bytes: Int
    public init(count: Int, bytes: Int) {
        self.count = count
        self.bytes = bytes
    }
}
