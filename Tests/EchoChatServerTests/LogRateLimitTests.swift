import EchoChatPOSIX
import EchoChatServer
import EchoChatTestSupport
import Foundation
import Testing

/// Rate-limited log lines: the decision in memory with a clock the test
/// turns, and the logger around it, also from many threads at once.
@Suite("Log rate limiting")
struct LogRateLimitTests {
    static let second: Int64 = 1_000_000_000

    @Test func theFirstLineOfAKindIsWrittenTheRestOfTheSecondCounted() {
        var limiter = LogRateLimiter()
        #expect(limiter.admit("emfile", now: 10 * Self.second) == .write(suppressed: 0, over: 0))
        for step in 1..<1000 {
            #expect(limiter.admit("emfile", now: 10 * Self.second + Int64(step) * 999_999) == .suppress)
        }
        // One second after the last line written: written, with the count.
        #expect(limiter.admit("emfile", now: 11 * Self.second) == .write(suppressed: 999, over: Self.second))
        #expect(limiter.admit("emfile", now: 11 * Self.second + 1) == .suppress)
    }

    @Test func kindsAreLimitedApart() {
        var limiter = LogRateLimiter()
        #expect(limiter.admit("a", now: 0) == .write(suppressed: 0, over: 0))
        #expect(limiter.admit("b", now: 1) == .write(suppressed: 0, over: 0))
        #expect(limiter.admit("a", now: 2) == .suppress)
        #expect(limiter.admit("b", now: 3) == .suppress)
        #expect(limiter.admit("b", now: 4) == .suppress)
        #expect(limiter.admit("a", now: Self.second) == .write(suppressed: 1, over: Self.second))
        #expect(limiter.admit("b", now: Self.second + 1) == .write(suppressed: 2, over: Self.second))
    }

    @Test func aQuietKindStartsAfresh() {
        var limiter = LogRateLimiter()
        _ = limiter.admit("k", now: 0)
        #expect(limiter.admit("k", now: 3600 * Self.second) == .write(suppressed: 0, over: 3600 * Self.second))
        #expect(limiter.admit("k", now: 3600 * Self.second + 5) == .suppress)
    }

    @Test func theNoteSaysHowManyAndOverHowLong() {
        #expect(LogRateLimiter.note(suppressed: 0, over: 5 * Self.second) == "")
        #expect(LogRateLimiter.note(suppressed: 1, over: Self.second) == " (suppressed 1 similar line in the last 1 s)")
        #expect(LogRateLimiter.note(suppressed: 31245, over: Self.second + 2_000_000)
            == " (suppressed 31245 similar lines in the last 1 s)")
        #expect(LogRateLimiter.note(suppressed: 7, over: 90 * Self.second + 600_000_000)
            == " (suppressed 7 similar lines in the last 91 s)")
    }

    /// The logger with an injected clock and output: lines of a kind are
    /// limited, lines without a kind never, and a level that is off costs
    /// the kind nothing.
    @Test func theLoggerLimitsOnlyLinesWithAKind() {
        let clock = Lock<Int64>(0)
        let lines = Lock<[String]>([])
        let logger = Logger(level: .info, clock: { clock.withLock { $0 } }, output: { line in lines.withLock { $0.append(line) } })
        for index in 0..<50 {
            logger.warn("refused \(index)", limitedAs: "refusal")
            logger.info("plain \(index)")
            logger.debug("hidden \(index)")
        }
        clock.withLock { $0 = Self.second }
        logger.warn("refused again", limitedAs: "refusal")
        let written = lines.withLock { $0 }
        #expect(written.filter { $0.contains("plain ") }.count == 50)
        #expect(!written.contains { $0.contains("hidden") })
        let refusals = written.filter { $0.contains("refused") }
        #expect(refusals.count == 2)
        #expect(refusals.first?.hasSuffix(" WARN  refused 0\n") == true)
        #expect(refusals.last?.hasSuffix(" WARN  refused again (suppressed 49 similar lines in the last 1 s)\n") == true)

        // Below the level: not written, not counted as suppressed either.
        logger.level = .error
        for _ in 0..<10 { logger.warn("quiet", limitedAs: "refusal") }
        logger.level = .info
        clock.withLock { $0 = 2 * Self.second }
        logger.warn("after", limitedAs: "refusal")
        #expect(lines.withLock { $0.last }?.hasSuffix(" WARN  after\n") == true)
    }

    /// Eight threads log 20,000 lines of one kind as fast as they can while
    /// the test moves the clock on: every line is either written or counted
    /// in a later note, exactly once (TSan sees the lock).
    @Test func manyThreadsLoseNoCount() throws {
        let clock = Lock<Int64>(0)
        let lines = Lock<[String]>([])
        let logger = Logger(level: .info, clock: { clock.withLock { $0 } }, output: { line in lines.withLock { $0.append(line) } })
        let perThread = 20_000
        let threads = try (0..<8).map { _ in
            try Threads.spawn(name: "test-logger") {
                for index in 0..<perThread {
                    logger.warn("flood", limitedAs: "flood")
                    if index % 1000 == 0 { clock.withLock { $0 += 100_000_000 } }
                }
            }
        }
        for thread in threads { thread.join() }
        clock.withLock { $0 += 10 * Self.second }
        logger.warn("flood", limitedAs: "flood")  // carries the last count
        let written = lines.withLock { $0 }
        let suppressed = written.compactMap { line -> Int? in
            guard let range = line.range(of: "(suppressed ") else { return 0 }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }
        #expect(written.count + suppressed.reduce(0, +) == 8 * perThread + 1)
        #expect(written.count < 100, "about one line per simulated second, not \(written.count)")
    }
}
