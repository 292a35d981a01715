import Testing

@testable import EchoChatFuzzing

/// The harness in plain `swift test`: every byte string is a script, and a
/// few thousand generated ones (random, and seeds with bytes changed, which
/// is what libFuzzer does first) keep every invariant. A fixed generator, so
/// a failure here repeats; copy the input it prints to Tests/Fuzz/regressions.
@Suite("Fuzz harness")
struct ScriptTests {
    @Test func anyBytesDecode() {
        #expect(FuzzScript(decoding: []) == FuzzScript(operations: []))
        var generator = SplitMix64(seed: 11)
        for _ in 0..<2000 {
            let input = (0..<Int(generator.next() % 300)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            let script = FuzzScript(decoding: input)
            // Re-encoding what was decoded gives a script that decodes the same.
            #expect(FuzzScript(decoding: script.encoded).config == script.config)
        }
    }

    @Test func randomScriptsKeepEveryInvariant() {
        var generator = SplitMix64(seed: 5)
        for _ in 0..<1500 {
            let input = (0..<Int(generator.next() % 200)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            let problems = ChatFuzzer.problems(in: input)
            #expect(problems.isEmpty, "input \(input):\n\(problems.joined(separator: "\n"))")
        }
    }

    @Test func mutatedSeedsKeepEveryInvariant() {
        var generator = SplitMix64(seed: 9)
        for seed in FuzzSeeds.all {
            for _ in 0..<150 {
                var input = seed.bytes
                for _ in 0..<(1 + Int(generator.next() % 4)) where !input.isEmpty {
                    input[Int(generator.next() % UInt64(input.count))] = UInt8(truncatingIfNeeded: generator.next())
                }
                let problems = ChatFuzzer.problems(in: input)
                #expect(problems.isEmpty, "\(seed.name) mutated to \(input):\n\(problems.joined(separator: "\n"))")
            }
        }
    }
}

