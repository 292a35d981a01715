import EchoChatServer
import Foundation

extension Strategy {
    /// The strategies the end-to-end tests run against: every case of
    /// `Strategy` (the one list), unless `ECHOCHAT_TEST_STRATEGIES` names a
    /// subset, comma-separated. CI's sanitizer runs use it to spend their
    /// time where each sanitizer has something to find (`.ci/run` says which
    /// and why); the plain `swift test` always runs all of them. A name that
    /// is not a strategy stops the run instead of testing nothing.
    public static var tested: [Strategy] {
        guard let names = ProcessInfo.processInfo.environment["ECHOCHAT_TEST_STRATEGIES"], !names.isEmpty else {
            return allCases
        }
        return names.split(separator: ",").map { name in
            guard let strategy = Strategy(rawValue: String(name)) else {
                preconditionFailure("ECHOCHAT_TEST_STRATEGIES: '\(name)' is not a strategy (\(allCases.map(\.rawValue)))")
            }
            return strategy
        }
    }
}
