import EchoChatOptions

/// Where the cluster's Redis is: `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`,
/// as redis-cli spells it (port 6379 and database 0 when left out; an IPv6
/// host in brackets).
public struct RedisURL: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var database: Int
    public var user: String?
    public var password: String?

    public init(host: String, port: Int = 6379, database: Int = 0, user: String? = nil, password: String? = nil) {
        self.host = host
        self.port = port
        self.database = database
        self.user = user
        self.password = password
    }

    /// The URL without its password (what logs and `--check-config` show).
    public var description: String {
        let credentials = password == nil ? "" : "\(user ?? ""):***@"
        let host = host.contains(":") ? "[\(host)]" : host
        return "redis://\(credentials)\(host):\(port)" + (database == 0 ? "" : "/\(database)")
    }

    /// The URL with its password, for the config file `--check-config` prints.
    var spelled: String {
        let credentials = password.map { "\(user ?? ""):\($0)@" } ?? ""
        let host = host.contains(":") ? "[\(host)]" : host
        return "redis://\(credentials)\(host):\(port)" + (database == 0 ? "" : "/\(database)")
    }

    public static func parse(_ text: String, _ name: String) throws(UsageError) -> RedisURL {
        let invalid = UsageError(
            "invalid value '\(text)' for \(name): expected redis://HOST:PORT[/DB] (an IPv6 host in brackets)")
        guard text.hasPrefix("redis://") else { throw invalid }
        var rest = Substring(text.dropFirst("redis://".count))
        var url = RedisURL(host: "")
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            guard let colon = credentials.firstIndex(of: ":") else { throw invalid }
            let user = credentials[..<colon]
            url.user = user.isEmpty ? nil : String(user)
            url.password = String(credentials[credentials.index(after: colon)...])
        }
        if let slash = rest.firstIndex(of: "/") {
            let digits = rest[rest.index(after: slash)...]
            guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let database = Int(digits), database <= 1_000_000
            else { throw invalid }
            url.database = database
            rest = rest[..<slash]
        }
        var host = rest
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw invalid }
            host = rest[rest.index(after: rest.startIndex)..<close]
            rest = rest[rest.index(after: close)...]
            guard rest.isEmpty || rest.hasPrefix(":") else { throw invalid }
        } else if let colon = rest.firstIndex(of: ":") {
            host = rest[..<colon]
            rest = rest[colon...]
        } else {
            rest = ""
        }
        if rest.hasPrefix(":") {
            let digits = rest.dropFirst()
            guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let port = Int(digits), (1...65535).contains(port)
            else { throw invalid }
            url.port = port
        }
        guard !host.isEmpty, (try? Value.host(String(host), name)) != nil else { throw invalid }
        url.host = String(host)
        return url
    }
}

/// A node id: what `/stats` shows as `node` and the cluster's keys name
/// this server by. 1 to 64 printable ASCII characters, no blanks.
enum NodeID {
    static func parse(_ text: String, _ name: String) throws(UsageError) -> String {
        guard (1...64).contains(text.utf8.count), text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw UsageError("invalid value '\(text)' for \(name): expected 1 to 64 printable characters without blanks")
        }
        return text
    }
}
