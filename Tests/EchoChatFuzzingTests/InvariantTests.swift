import EchoChatCore
import Testing

@testable import EchoChatFuzzing

/// A check that cannot fail proves nothing: each invariant the fuzz harness
/// relies on is fed broken data here and must complain, and each fault the
/// simulation can inject must be caught end to end.
@Suite("Fuzz invariants can fail")
struct InvariantTests {
    // MARK: - Lines

    @Test func everyCharacterOfTheHygieneSetIsForbiddenAndNothingElse() {
        let forbidden: [UInt32] = [
            0x00, 0x0A, 0x0D, 0x1B, 0x1F, 0x7F, 0x80, 0x85, 0x9F, 0x2028, 0x2029, 0x061C, 0x200E, 0x200F,
            0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069,
        ]
        let allowed: [UInt32] = [0x09, 0x20, 0x7E, 0xA0, 0xE9, 0x2027, 0x202F, 0x2065, 0x206A, 0x200D, 0xFEFF, 0xFFFD, 0x1F600]
        for value in forbidden { #expect(Invariants.isForbidden(value), "U+\(String(value, radix: 16))") }
        for value in allowed { #expect(!Invariants.isForbidden(value), "U+\(String(value, radix: 16))") }
        // The harness's set is the core's: whatever it forbids, the core removes.
        for value in forbidden where value != 0x0A && value != 0x0D {
            let bytes = Array(String(Unicode.Scalar(value)!).utf8)
            #expect(bytes.withUnsafeBytes { LineHygiene.clean($0).isEmpty }, "U+\(String(value, radix: 16))")
        }
    }

    @Test func goodLinesPass() {
        for line in ["<alice> hi\tthere", "[pm from bob-2] x", "* welcome guest1", "! nick taken: a", "<a_b> é 😀 \u{FFFD}"] {
            #expect(Invariants.lineProblems(ArraySlice(line.utf8)) == [], "\(line)")
        }
    }

    @Test func aControlCharacterIsCaught() {
        #expect(Invariants.lineProblems(ArraySlice("<alice> a\u{1B}[31mb".utf8)).first?.hasPrefix("forbidden character U+001B") == true)
        #expect(Invariants.lineProblems(ArraySlice("* a\u{85}b".utf8)).first?.hasPrefix("forbidden character U+0085") == true)
    }

    @Test func bidiAndSeparatorsAreCaught() {
        for scalar in ["\u{202E}", "\u{2028}", "\u{2066}", "\u{061C}"] {
            let line = ArraySlice("<alice> a\(scalar)b".utf8)
            #expect(Invariants.lineProblems(line).count == 1, "\(scalar.unicodeScalars.first!.value)")
        }
    }

    @Test func aMissingOrForgedMarkerIsCaught() {
        for line in ["hello", "<alice>hi", "<al ice> hi", "<> hi", "[pm from alice]x", "*notice", "!error", " * x", "<alice"] {
            #expect(Invariants.lineProblems(ArraySlice(line.utf8)).first?.hasPrefix("no marker") == true, "\(line)")
        }
    }

    @Test func invalidUTF8IsCaught() {
        #expect(Invariants.lineProblems([0x2A, 0x20, 0xFF, 0x41][...]).first?.hasPrefix("invalid UTF-8") == true)
    }

    // MARK: - Transcripts

    static let welcome = "* welcome guest1, you are in #lobby (1 here); /help lists commands\n"

    @Test func transcriptRules() {
        func problems(_ text: String, admitted: Bool = true, cutOff: Bool = false) -> [String] {
            Invariants.transcriptProblems(Array(text.utf8), admitted: admitted, cutOff: cutOff)
        }
        #expect(problems(Self.welcome + "<bob> hi\n* bye\n") == [])
        #expect(problems(Self.welcome + "<bob> unfinish").count == 1)
        #expect(problems(Self.welcome + "<bob> unfinish", cutOff: true) == [])
        #expect(problems("* you are now x\n").count == 1, "the first line must be the welcome")
        #expect(problems(Self.welcome + "* bye\n<bob> late\n").count == 1)
        #expect(problems(Self.welcome + "* idle timeout\n* server shutting down\n").count == 1)
        #expect(problems("! server full, try again later\n", admitted: false) == [])
        #expect(problems("! server full, try", admitted: false, cutOff: true) == [])
        #expect(problems("! server full, try again later\n* more\n", admitted: false).count == 1)
        #expect(problems("! server full", admitted: false).count >= 1)
    }

    // MARK: - The registry

    /// A real registry, from a real core.
    static func registry() -> (RegistrySnapshot, LineCollector) {
        let core = ChatCore(maxLine: 16)
        let output = LineCollector()
        for id in 1...4 { core.connect(ConnectionID(id), output: output) }
        for (id, text) in [(1, "/nick Zed\n/join dev\n"), (2, "/nick alice\n/join DEV\n"), (3, "/nick bob\npartial")] {
            _ = Array(text.utf8).withUnsafeBytes { core.receive($0, from: ConnectionID(id), output: output) }
        }
        _ = Array("/who\n/rooms\n".utf8).withUnsafeBytes { core.receive($0, from: ConnectionID(1), output: output) }
        return (core.registrySnapshot(), output)
    }

    @Test func aRealRegistryIsConsistentAndMatchesItsReplies() {
        let (registry, output) = Self.registry()
        #expect(Invariants.registryProblems(registry, maxLine: 16) == [])
        #expect(registry.clients.first { $0.id == ConnectionID(3) }?.bufferedBytes == 7)
        #expect(output.lines[ConnectionID(1)]?.suffix(2) == [
            Invariants.expectedWho(for: ConnectionID(1), in: registry)!, Invariants.expectedRooms(in: registry),
        ])
        #expect(Invariants.expectedWho(for: ConnectionID(1), in: registry) == "* #dev: alice, Zed (2)")
        #expect(Invariants.expectedRooms(in: registry) == "* rooms: #dev (2), #lobby (2)")
    }

    @Test func everyKindOfInconsistencyIsCaught() {
        let (good, _) = Self.registry()
        func problems(_ change: (inout RegistrySnapshot) -> Void) -> [String] {
            var registry = good
            change(&registry)
            return Invariants.registryProblems(registry, maxLine: 16)
        }
        // Two nicks equal ignoring case.
        #expect(!problems { $0.clients[1].nick = "zed"; $0.nickIndex["zed"] = $0.clients[1].id }.isEmpty)
        // A client in two rooms.
        #expect(!problems { $0.rooms[1].members.append($0.rooms[0].members[0]) }.isEmpty)
        // An empty room listed.
        #expect(!problems { $0.rooms.append(RegistrySnapshot.Room(key: "ghost", name: "#ghost", members: [])) }.isEmpty)
        // A client in no room.
        #expect(!problems { $0.rooms[0].members.removeLast() }.isEmpty)
        // A client whose room is not the one listing it.
        #expect(!problems { $0.clients[0].roomKey = "lobby" }.isEmpty)
        // The nick index out of step.
        #expect(!problems { $0.nickIndex["bob"] = nil }.isEmpty)
        #expect(!problems { $0.nickIndex["nobody"] = ConnectionID(9) }.isEmpty)
        // A framer holding more than max-line + 1.
        #expect(!problems { $0.clients[2].bufferedBytes = 18 }.isEmpty)
        // A room whose name and key disagree.
        #expect(!problems { $0.rooms[0].name = "#other" }.isEmpty)
    }

    // MARK: - Faults, end to end

    static func seed(_ name: String) -> FuzzScript { FuzzSeeds.seeds.first { $0.name == name }!.script }

    @Test(arguments: [
        (ChatSimulation.Fault.ignoreMaxOutput, "slow-consumer", "max-output is"),
        (.forgetFailedSessions, "write-failures", "closed while the core still has it"),
        (.injectEscape, "commands", "forbidden character U+001B"),
        (.loseByteBetweenPieces, "long-lines", "runs differ"),
    ])
    func anInjectedFaultIsReported(fault: ChatSimulation.Fault, seedName: String, expected: String) {
        let script = Self.seed(seedName)
        #expect(ChatFuzzer.problems(in: script, seed: 1) == [], "the seed alone must be clean")
        let problems = ChatFuzzer.problems(in: script, seed: 1, faults: [fault])
        #expect(problems.contains { $0.contains(expected) }, "\(fault) not reported as \(expected):\n\(problems.joined(separator: "\n"))")
    }

    /// The seed full of separators and bidi controls: the core removes
    /// them all, so the harness, which checks the whole §3.1 step 3 set,
    /// finds nothing; with an escape injected it does.
    @Test func theHarnessChecksTheWholeControlSet() {
        #expect(ChatFuzzer.problems(in: Self.seed("controls-and-bidi"), seed: 1) == [])
        let injected = ChatFuzzer.problems(in: Self.seed("controls-and-bidi"), seed: 1, faults: [.injectEscape])
        #expect(injected.contains { $0.contains("forbidden character U+001B") }, "\(injected)")
    }
}

/// A `ChatOutput` that keeps each connection's lines, without their LF.
final class LineCollector: ChatOutput {
    var lines: [ConnectionID: [String]] = [:]
    func send(_ line: [UInt8], to id: ConnectionID) {
        lines[id, default: []].append(String(decoding: line.dropLast(), as: UTF8.self))
    }
    func close(_ id: ConnectionID) {}
    func transportStats() -> TransportStats { TransportStats(strategy: "test") }
}
