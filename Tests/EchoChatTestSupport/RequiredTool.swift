import Foundation
import Glibc
import Testing

/// An optional program a test runs for real (netcat as a client, logrotate
/// on a live daemon, ...), with the Debian package that provides it.
///
/// `swift test` on a machine with only Swift skips such a test, giving the
/// tool and the package as the reason: `@Test(.requires(.nc))`. Under
/// `CI=true` the test runs instead and fails at `try RequiredTool.nc.path()`
/// with "missing tool nc (apt-get install netcat-openbsd)", so CI can never
/// pass by skipping.
public struct RequiredTool: Sendable, CustomStringConvertible {
    public let name: String
    public let package: String

    public init(_ name: String, package: String) {
        self.name = name
        self.package = package
    }

    public static let nc = RequiredTool("nc", package: "netcat-openbsd")
    public static let ncat = RequiredTool("ncat", package: "ncat")
    public static let logrotate = RequiredTool("logrotate", package: "logrotate")
    public static let systemdAnalyze = RequiredTool("systemd-analyze", package: "systemd")
    public static let curl = RequiredTool("curl", package: "curl")
    public static let redisServer = RequiredTool("redis-server", package: "redis-server")

    /// `CI=true` (or 1/yes) in the environment: missing tools are failures.
    public static var isCI: Bool {
        ["true", "1", "yes"].contains(ProcessInfo.processInfo.environment["CI"]?.lowercased() ?? "")
    }

    /// Where the tool is in PATH (as `command -v` in .ci/run finds it; so a
    /// PATH without it also shows the skip path); nil when not found.
    public var location: String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").lazy.map { "\($0)/\(name)" }.first { access($0, X_OK) == 0 }
    }

    public var isInstalled: Bool { location != nil }

    /// "missing tool nc (apt-get install netcat-openbsd)".
    public var missingMessage: String { "missing tool \(name) (apt-get install \(package))" }

    /// The tool's path, or a thrown failure naming the package to install.
    public func path() throws -> String {
        guard let location else { throw TestFailure(missingMessage) }
        return location
    }

    public var description: String { name }
}

extension Trait where Self == ConditionTrait {
    /// Skips the test when one of `tools` is not installed (the skip names
    /// the tools and their packages), except under `CI=true`, where the test
    /// runs and fails on the missing tool.
    public static func requires(_ tools: RequiredTool..., sourceLocation: SourceLocation = #_sourceLocation) -> Self {
        let missing = tools.filter { !$0.isInstalled }
        let reason = missing.map(\.missingMessage).joined(separator: "; ")
        return .enabled(
            if: missing.isEmpty || RequiredTool.isCI,
            Comment(rawValue: reason.isEmpty ? "needs \(tools.map(\.name).joined(separator: ", "))" : reason),
            sourceLocation: sourceLocation)
    }
}
