import EchoChatCore

/// The fuzz harness: decodes an input as a `FuzzScript`, runs it twice in
/// lock step, once reading everything a client sent in one read and once in
/// pieces of random length (seeded from the input, so a run repeats
/// exactly), and returns every broken invariant:
///
/// - each run's own checks (`ChatSimulation`, `Invariants`): every line
///   clean and marked, the registry consistent with itself, with `/who` and
///   `/rooms` and with the open sessions, queues within `max-output`,
///   framers within `max-line` + 1;
/// - the two runs agree byte for byte on what every connection received,
///   how and when it was closed, the core's counters and its registry.
///
/// One exception to agreement, which the server allows: when the chunked
/// run ends a session as a slow consumer between two pieces of one burst,
/// the whole-input run has already handled the rest of that burst; from then
/// on only each run's own checks apply, and the outputs are compared as they
/// were before that burst.
public enum ChatFuzzer {
    /// Problems found running `input` (empty: none).
    public static func problems(in input: UnsafeRawBufferPointer) -> [String] {
        problems(in: FuzzScript(decoding: input), seed: seed(of: input))
    }

    public static func problems(in input: [UInt8]) -> [String] {
        input.withUnsafeBytes { problems(in: $0) }
    }

    static func problems(
        in script: FuzzScript, seed: UInt64, faults: Set<ChatSimulation.Fault> = []
    ) -> [String] {
        let whole = ChatSimulation(script, cutter: .whole, name: "whole", faults: faults)
        let chunked = ChatSimulation(
            script, cutter: .random(seed: seed, maxPiece: script.config.maxPiece), name: "chunked",
            faults: faults)
        var differences: [String] = []
        var comparing = true
        for (index, operation) in script.operations.enumerated() {
            if comparing {
                whole.mark()
                chunked.mark()
            }
            whole.perform(operation)
            chunked.perform(operation)
            if comparing && (chunked.burstCutShort || whole.burstCutShort) {
                comparing = false
                differences += compare(whole, chunked, at: "before step \(index + 1)")
            }
        }
        whole.finish()
        chunked.finish()
        // A pause while finishing (a queue past half of max-output) makes
        // what a slow consumer got before it was dropped depend on timing too.
        if comparing && !chunked.burstCutShort && !whole.burstCutShort {
            whole.mark()
            chunked.mark()
            differences += compare(whole, chunked, at: "at the end")
            if whole.core.messagesIn != chunked.core.messagesIn || whole.core.messagesOut != chunked.core.messagesOut {
                differences.append(
                    "counters differ: messages in \(whole.core.messagesIn) vs \(chunked.core.messagesIn), "
                        + "out \(whole.core.messagesOut) vs \(chunked.core.messagesOut)")
            }
            if whole.core.registrySnapshot() != chunked.core.registrySnapshot() {
                differences.append("registries differ:\n  whole   \(whole.core.registrySnapshot())\n  chunked \(chunked.core.registrySnapshot())")
            }
        }
        return whole.problems.map { "whole run, \($0)" } + chunked.problems.map { "chunked run (pieces of 1...\(script.config.maxPiece)), \($0)" }
            + differences.map { "whole and chunked runs differ \($0)" }
    }

    /// What each connection received, how it was closed, and how often its
    /// sending side was shut, as of both runs' last `mark()`.
    static func compare(_ a: ChatSimulation, _ b: ChatSimulation, at moment: String) -> [String] {
        let markedA = a.connections.compactMap { a.marked($0) }
        let markedB = b.connections.compactMap { b.marked($0) }
        guard markedA.count == markedB.count else {
            return ["\(moment): \(markedA.count) vs \(markedB.count) connections"]
        }
        var differences: [String] = []
        for index in markedA.indices {
            let (markA, markB) = (markedA[index], markedB[index])
            let gotA = a.connections[index].received.prefix(markA.received)
            let gotB = b.connections[index].received.prefix(markB.received)
            if gotA != gotB {
                differences.append(
                    "\(moment): connection \(index + 1) received\n  whole   \(String(reflecting: String(decoding: gotA, as: UTF8.self)))\n"
                        + "  chunked \(String(reflecting: String(decoding: gotB, as: UTF8.self)))")
            }
            if markA.close != markB.close {
                differences.append(
                    "\(moment): connection \(index + 1) closed \(String(describing: markA.close)) vs \(String(describing: markB.close))")
            }
            if markA.shutdowns != markB.shutdowns {
                differences.append("\(moment): connection \(index + 1) shut its sending side \(markA.shutdowns) vs \(markB.shutdowns) times")
            }
        }
        return differences
    }

    /// FNV-1a of the input: the chunked run's cuts come from the input itself.
    static func seed(of input: UnsafeRawBufferPointer) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in input {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01B3
        }
        return hash
    }
}
