/// What the receivers of a chat run saw, per (receiver, sender) pair: which
/// sequence numbers arrived (a bitmap), how many, and the highest so far.
///
/// - delivered: first arrival of a sequence number;
/// - duplicated: a sequence number that had already arrived;
/// - reordered: a first arrival below the highest already seen from that
///   sender (per-sender order broken);
/// - lost: what the senders sent that never arrived (`lost(sent:)`).
///
/// One tracker per worker thread, for that worker's receivers; no locks.
public struct ChatTracker {
    public let receivers: [Int]
    public let senders: Int
    public let perSender: Int
    private let words: Int
    private var seen: [UInt64]
    private var counts: [Int32]
    private var highest: [Int32]
    private var slotOfReceiver: [Int: Int]

    public private(set) var delivered = 0
    public private(set) var duplicated = 0
    public private(set) var reordered = 0
    /// Sender or sequence number outside what the run can send.
    public private(set) var outOfRange = 0
    /// A receiver got its own line back.
    public private(set) var selfReceived = 0

    /// `receivers`: global ids of the connections this tracker follows;
    /// senders are the global ids `0..<senders`, each sending at most `perSender` lines.
    public init(receivers: [Int], senders: Int, perSender: Int) {
        self.receivers = receivers
        self.senders = senders
        self.perSender = perSender
        words = (perSender + 63) / 64
        seen = [UInt64](repeating: 0, count: receivers.count * senders * words)
        counts = [Int32](repeating: 0, count: receivers.count * senders)
        highest = [Int32](repeating: -1, count: receivers.count * senders)
        slotOfReceiver = Dictionary(uniqueKeysWithValues: receivers.enumerated().map { ($1, $0) })
    }

    /// Bytes the bitmaps take for a run of this shape.
    public static func memoryNeeded(receivers: Int, senders: Int, perSender: Int) -> Int {
        receivers * senders * ((perSender + 63) / 64) * 8 + receivers * senders * 8
    }

    public enum Outcome: Equatable { case delivered, reordered, duplicated, ignored }

    /// One line from `sender` with `sequence` reached the receiver in local slot `slot`.
    @discardableResult
    public mutating func record(slot: Int, sender: Int, sequence: Int) -> Outcome {
        guard sender >= 0, sender < senders, sequence >= 0, sequence < perSender else {
            outOfRange += 1
            return .ignored
        }
        if receivers[slot] == sender {
            selfReceived += 1
            return .ignored
        }
        let pair = slot * senders + sender
        let word = pair * words + sequence / 64
        let bit = UInt64(1) << UInt64(sequence % 64)
        if seen[word] & bit != 0 {
            duplicated += 1
            return .duplicated
        }
        seen[word] |= bit
        delivered += 1
        counts[pair] += 1
        if Int32(sequence) < highest[pair] {
            reordered += 1
            return .reordered
        }
        highest[pair] = Int32(sequence)
        return .delivered
    }

    /// `record` by the receiver's global id.
    @discardableResult
    public mutating func record(receiver: Int, sender: Int, sequence: Int) -> Outcome {
        guard let slot = slotOfReceiver[receiver] else {
            outOfRange += 1
            return .ignored
        }
        return record(slot: slot, sender: sender, sequence: sequence)
    }

    /// Deliveries these receivers are owed: every line each *other* sender sent.
    public func expected(sent: [Int]) -> Int {
        let total = sent.reduce(0, +)
        return receivers.reduce(0) { sum, receiver in sum + total - (receiver < sent.count ? sent[receiver] : 0) }
    }

    /// Lines sent (per sender, `sent[s]`) that some receiver here never got.
    public func lost(sent: [Int]) -> Int {
        var lost = 0
        for slot in 0..<receivers.count {
            for sender in 0..<min(senders, sent.count) where sender != receivers[slot] {
                lost += max(0, sent[sender] - Int(counts[slot * senders + sender]))
            }
        }
        return lost
    }
}
