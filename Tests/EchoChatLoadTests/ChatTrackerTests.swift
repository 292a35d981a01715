import EchoChatLoad
import Testing

@Suite("Chat tracker")
struct ChatTrackerTests {
    @Test func countsDeliveredDuplicatedReorderedAndLost() {
        // Receivers 0 and 5; senders 0, 1, 2; up to 10 lines each.
        var tracker = ChatTracker(receivers: [0, 5], senders: 3, perSender: 10)
        // Receiver 5 gets sender 1's lines 0..4 in order, 2 twice, 6 before 5.
        for sequence in [0, 1, 2, 2, 3, 4, 6, 5] { tracker.record(receiver: 5, sender: 1, sequence: sequence) }
        #expect(tracker.delivered == 7)
        #expect(tracker.duplicated == 1)
        #expect(tracker.reordered == 1)
        // Receiver 0 is sender 0: its own line back is not a delivery.
        #expect(tracker.record(receiver: 0, sender: 0, sequence: 0) == .ignored)
        #expect(tracker.selfReceived == 1)
        #expect(tracker.record(receiver: 0, sender: 2, sequence: 0) == .delivered)
        #expect(tracker.record(receiver: 0, sender: 2, sequence: 0) == .duplicated)
        #expect(tracker.record(receiver: 0, sender: 3, sequence: 0) == .ignored)  // no such sender
        #expect(tracker.record(receiver: 0, sender: 1, sequence: 10) == .ignored)  // past what was sent
        #expect(tracker.outOfRange == 2)

        // Sender 0 sent 4, sender 1 sent 8, sender 2 sent 1.
        let sent = [4, 8, 1]
        // Receiver 0 (a sender) is owed 8 + 1; receiver 5 is owed 4 + 8 + 1.
        #expect(tracker.expected(sent: sent) == 9 + 13)
        // Receiver 0 got 1 of 9; receiver 5 got 7 of sender 1's 8 and none of the others' 5.
        #expect(tracker.lost(sent: sent) == 8 + (1 + 4 + 1))
    }

    @Test func aLateLineIsReorderedNotLostOrDuplicated() {
        var tracker = ChatTracker(receivers: [1], senders: 1, perSender: 200)
        for sequence in (0..<200).reversed() { tracker.record(receiver: 1, sender: 0, sequence: sequence) }
        #expect(tracker.delivered == 200)
        #expect(tracker.reordered == 199)
        #expect(tracker.duplicated == 0)
        #expect(tracker.lost(sent: [200]) == 0)
    }

    @Test func memoryEstimateCoversTheBitmaps() {
        #expect(ChatTracker.memoryNeeded(receivers: 100, senders: 10, perSender: 64) == 100 * 10 * 8 + 100 * 10 * 8)
        #expect(ChatTracker.memoryNeeded(receivers: 100, senders: 10, perSender: 65) == 100 * 10 * 16 + 100 * 10 * 8)
    }
}
