import Foundation
import Testing

@testable import EchoChatFuzzing

/// Tests/Fuzz, found from this file's path (the tests run from the source tree).
let fuzzDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fuzz")

/// The files in `Tests/Fuzz/<folder>`, hidden ones aside.
func inputs(in folder: String) throws -> [(name: String, bytes: [UInt8])] {
    let directory = fuzzDirectory.appendingPathComponent(folder)
    let names = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { !$0.hasPrefix(".") }.sorted()
    return try names.map { name in (name, Array(try Data(contentsOf: directory.appendingPathComponent(name)))) }
}

/// Every stored input goes through the fuzz harness in a plain `swift test`:
/// the seed corpus, and every crash the fuzzer found, kept in
/// `Tests/Fuzz/regressions` once fixed (docs/fuzzing.md).
@Suite("Fuzz corpus")
struct CorpusTests {
    @Test(arguments: ["corpus", "regressions"])
    func everyStoredInputKeepsEveryInvariant(folder: String) throws {
        let files = try inputs(in: folder)
        #expect(!files.isEmpty, "no inputs in Tests/Fuzz/\(folder)")
        for file in files {
            let problems = ChatFuzzer.problems(in: file.bytes)
            #expect(problems.isEmpty, "Tests/Fuzz/\(folder)/\(file.name):\n\(problems.joined(separator: "\n"))")
        }
    }

    /// The corpus files are the seeds `FuzzSeeds` writes, so they keep their
    /// meaning if the script format changes (then re-run `--write-seeds`).
    @Test func theCorpusHoldsTheSeedsAsWritten() throws {
        let files = Dictionary(uniqueKeysWithValues: try inputs(in: "corpus").map { ($0.name, $0.bytes) })
        for seed in FuzzSeeds.all {
            #expect(files[seed.name] == seed.bytes, "Tests/Fuzz/corpus/\(seed.name) differs from FuzzSeeds: run echochat-fuzz --write-seeds Tests/Fuzz/corpus")
        }
    }

    /// Each seed says what it covers; its bytes decode back to it, except that
    /// a long send is stored as several sends (pieces of 255 bytes, runs).
    @Test func seedsDecodeToTheScriptsTheyWereWrittenFrom() {
        func flattened(_ script: FuzzScript) -> (sent: [UInt8], others: [FuzzScript.Operation]) {
            var sent: [UInt8] = []
            var others: [FuzzScript.Operation] = []
            for operation in script.operations {
                if case .send(_, let bytes) = operation { sent += bytes } else { others.append(operation) }
            }
            return (sent, others)
        }
        for seed in FuzzSeeds.seeds {
            let decoded = FuzzScript(decoding: seed.script.encoded)
            #expect(decoded.config == seed.script.config, "\(seed.name)")
            #expect(decoded.encoded == seed.script.encoded, "\(seed.name)")
            #expect(flattened(decoded).sent == flattened(seed.script).sent, "\(seed.name)")
            #expect(flattened(decoded).others == flattened(seed.script).others, "\(seed.name)")
        }
        let short = FuzzScript(operations: [.connect, .send(connection: 3, bytes: Array("/who\n".utf8)), .tick(milliseconds: 300)])
        #expect(FuzzScript(decoding: short.encoded) == short)
    }
}
