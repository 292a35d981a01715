import EchoChatOptions
import Testing

@testable import EchoChatServer

@Suite("Cluster settings")
struct ClusterOptionsTests {
    @Test("redis:// URLs as redis-cli spells them", arguments: [
        ("redis://127.0.0.1:6379", RedisURL(host: "127.0.0.1", port: 6379)),
        ("redis://localhost", RedisURL(host: "localhost", port: 6379)),
        ("redis://[::1]:7000/3", RedisURL(host: "::1", port: 7000, database: 3)),
        ("redis://[::1]", RedisURL(host: "::1")),
        ("redis://:s3cret@db.example:6380/1", RedisURL(host: "db.example", port: 6380, database: 1, password: "s3cret")),
        ("redis://chat:p@ss:w@10.0.0.5", RedisURL(host: "10.0.0.5", user: "chat", password: "p@ss:w")),
    ])
    func parses(text: String, url: RedisURL) throws {
        #expect(try RedisURL.parse(text, "--cluster") == url)
    }

    @Test("what is not a redis URL is refused, naming the flag", arguments: [
        "127.0.0.1:6379", "redis://", "redis://:6379", "redis://host:0", "redis://host:65536", "redis://host:x",
        "redis://host/", "redis://host/db", "redis://[::1", "redis://[::1]x", "redis://user@host", "http://host:6379",
        "redis://a b:6379",
    ])
    func refuses(text: String) {
        #expect(throws: UsageError(
            "invalid value '\(text)' for --cluster: expected redis://HOST:PORT[/DB] (an IPv6 host in brackets)")) {
            try RedisURL.parse(text, "--cluster")
        }
    }

    @Test("a password never reaches a log line")
    func passwordHidden() throws {
        let url = try RedisURL.parse("redis://:s3cret@127.0.0.1:6380/2", "--cluster")
        #expect(url.description == "redis://:***@127.0.0.1:6380/2")
        #expect(!"\(url)".contains("s3cret"))
    }

    @Test("flags, config keys and their defaults")
    func settings() throws {
        guard case .run(let defaults) = try ServerOptions.parse([], readFile: { _ in "" }) else {
            Issue.record("no configuration")
            return
        }
        #expect(defaults.cluster == nil && defaults.clusterTimeout == 10 && defaults.nodeID == nil)
        let file = "cluster = redis://[::1]:7001\ncluster-timeout = 2.5\nnode-id = east-1\n"
        guard case .run(let config) = try ServerOptions.parse(["--config", "c.conf"], readFile: { _ in file }) else {
            Issue.record("no configuration")
            return
        }
        #expect(config.cluster == RedisURL(host: "::1", port: 7001))
        #expect(config.clusterTimeout == 2.5)
        #expect(config.nodeID == "east-1")
        guard case .run(let off) = try ServerOptions.parse(["--config", "c.conf", "--cluster", "off", "--node-id", "auto"], readFile: { _ in file })
        else {
            Issue.record("no configuration")
            return
        }
        #expect(off.cluster == nil && off.nodeID == nil)
        #expect(throws: UsageError("invalid value 'a b' for --node-id: expected 1 to 64 printable characters without blanks")) {
            try ServerOptions.parse(["--node-id", "a b"], readFile: { _ in "" })
        }
        #expect(throws: UsageError("invalid value '0' for --cluster-timeout: expected a number of seconds (more than 0, at most 3600)")) {
            try ServerOptions.parse(["--cluster-timeout", "0"], readFile: { _ in "" })
        }
    }
}
