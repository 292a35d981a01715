import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// `--hosts`: the chat load spread over a cluster of three real servers (on
/// three strategies) and a real Redis, its checks holding across them.
@Suite("echochat-load --hosts against a cluster", .ownThreads, .requires(.redisServer))
struct ClusterLoadTests {
    @Test func chatAcrossThreeServersIsVerifiedAndSplitBySameAndCrossServer() throws {
        let redis = try RedisProcess()
        var servers: [ServerProcess] = []
        for (name, strategy) in [("a", Strategy.epoll), ("b", .thread), ("c", .reactors)] {
            servers.append(try ServerProcess(
                ["--mode", "chat", "--cluster", redis.url, "--node-id", name, "--cluster-timeout", "5"], strategy: strategy))
        }
        for server in servers {
            guard server.log.waitFor({ $0.hasSuffix("cluster: 3 nodes: a, b, c") }, timeout: 10) != nil else {
                throw TestFailure("the cluster did not form:\n\(server.log.text)")
            }
        }
        let hosts = servers.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
        let result = try runProgram(
            EndToEndTests.binary, ["--mode", "chat", "--hosts", hosts, "-c", "12", "--senders", "4", "-m", "30", "--json", "-"],
            timeout: 60)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("OK: every line reached every other client once, in order, intact"), "\(result.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        #expect(json["hosts"] as? [String] == servers.map { "127.0.0.1:\($0.port)" })
        // 4 senders x 30 lines, each to the 11 other clients; 4 of 12 share each sender's server.
        let same = try #require(json["same_server_latency_us"] as? [String: Any])
        let cross = try #require(json["cross_server_latency_us"] as? [String: Any])
        #expect((same["count"] as? NSNumber)?.intValue == 4 * 30 * 3)
        #expect((cross["count"] as? NSNumber)?.intValue == 4 * 30 * 8)
        #expect(result.stderr.contains("across servers"))
        for server in servers { #expect(try server.stop() == 0) }
    }

    /// The bench's cluster rows start their own Redis and servers, and stop them.
    @Test func benchRunsAClusterRow() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("echochat-bench-cluster-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let result = try runProgram(EndToEndTests.binary, [
            "bench", "--quick", "--strategies", "epoll", "--workloads", "cluster2", "--duration", "0.5",
            "--out", directory, "--server", ServerProcess.binary,
        ], timeout: 90)
        #expect(result.status == 0, "\(result.stderr)")
        let markdown = try String(contentsOfFile: directory + "/strategies.md", encoding: .utf8)
        #expect(markdown.contains("| chat across 2 servers (Redis), 100 clients, 10 senders x 100 lines/s (deliveries/s) |"))
        #expect(markdown.contains("across servers p99 +"), "\(markdown)")
        #expect(!markdown.contains("✗"), "\(markdown)\n\(result.stderr)")
    }

    @Test func aBadHostsListIsAUsageError() throws {
        let result = try runProgram(EndToEndTests.binary, ["--mode", "chat", "--hosts", "127.0.0.1:7007,nope"], timeout: 10)
        #expect(result.status == 64)
        #expect(result.stderr.contains("--hosts"), "\(result.stderr)")
    }
}
