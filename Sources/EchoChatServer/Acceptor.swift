import EchoChatCore
import EchoChatPOSIX

/// Accepting, as every strategy does it: a bounded batch per readiness event,
/// and a policy for running out of descriptors that neither spins nor leaves
/// clients hanging in the backlog.
///
/// On EMFILE/ENFILE the reserve descriptor (held open on /dev/null) is
/// released, the waiting client is accepted, told `! server full, try again
/// later` and closed, and the reserve is taken back: the trick libev and
/// nginx describe. If the reserve cannot be had, accepting pauses for a
/// moment (the listener stays in the backlog's hands meanwhile): a strategy
/// that watches the listener with a poller gives it here, and the pause
/// takes the listener out of it and puts it back.
///
/// While descriptors are short every waiting client means a refusal, tens of
/// thousands a second in a connect storm: each is counted (`refused`, EMFILE
/// events), and the log gets one line a second that says how many it stands for.
struct Acceptor: ~Copyable {
    let listener: Socket
    private let layer: ConnectionLayer
    private let poller: Poller?
    private var reserve = ReserveDescriptor()
    /// Accepting is paused until then.
    private(set) var pausedUntil: Int64?

    /// How many connections one call accepts at most, so a connect storm
    /// cannot starve the clients already connected.
    static let batch = 64
    /// How long accepting pauses when even the reserve descriptor is gone.
    static let pause: Int64 = 100_000_000
    /// How often strategies that sweep look at their connections' timers.
    static let sweepInterval: Int64 = 100_000_000

    /// What the poller watches the listener for: level-triggered, or one
    /// shot (`oneShot`) where several threads wait on one poller and only
    /// the one that gets the event may accept, until it calls `rearm()`.
    private let listening: Poller.Events

    init(listener: Socket, layer: ConnectionLayer, poller: Poller? = nil, oneShot: Bool = false) throws(SystemError) {
        self.listener = listener
        self.layer = layer
        self.poller = poller
        listening = oneShot ? [.readable, .oneShot] : .readable
        try poller?.register(listener.descriptor, for: listening, data: PollTokens.listener)
    }

    /// One shot: watches the listener again after a batch (unless paused).
    func rearm() {
        guard pausedUntil == nil else { return }
        try? poller?.modify(listener.descriptor, for: listening, data: PollTokens.listener)
    }

    /// Accepts up to `limit` waiting connections and hands each socket to
    /// `admit`; a client turned away for lack of descriptors is counted in
    /// the layer. Pauses accepting for `pause` when it must.
    mutating func accept(now: Int64, limit: Int = Acceptor.batch, admit: (Socket) -> Void) {
        guard pausedUntil == nil, !acceptPending(limit: limit, admit: admit) else { return }
        pausedUntil = now + Self.pause
        try? poller?.modify(listener.descriptor, for: [], data: PollTokens.listener)
    }

    /// Ends a pause that is due; true while still paused.
    mutating func resumeIfDue(now: Int64) -> Bool {
        guard let until = pausedUntil else { return false }
        guard now >= until else { return true }
        pausedUntil = nil
        try? poller?.modify(listener.descriptor, for: listening, data: PollTokens.listener)
        return false
    }

    /// False when accepting should pause.
    private mutating func acceptPending(limit: Int, admit: (Socket) -> Void) -> Bool {
        for _ in 0..<limit {
            do {
                switch try listener.accept(nonBlocking: true) {
                case .wouldBlock: return true
                case .done(let socket): admit(socket)
                }
            } catch {
                if error.errno.isDescriptorExhaustion {
                    layer.counters.add(layer.counters.descriptorExhaustion, 1)
                    switch refuseWithReserve() {
                    case .refused: continue
                    case .nothingWaiting: return true
                    case .noReserve: return false
                    }
                } else if error.errno != .connectionAborted {
                    layer.logger.warn(
                        "accept failed: \(error); pausing accepts for \(Self.pause / 1_000_000) ms", limitedAs: "accept-failed")
                    return false
                }
            }
        }
        return true
    }

    private enum Refusal { case refused, nothingWaiting, noReserve }

    /// accept(2) reports EMFILE before it looks at the backlog, so an empty
    /// backlog fails like one more client to refuse; the accept the freed
    /// reserve allows tells them apart. Going on after `nothingWaiting`
    /// would spin through the whole batch (accept, close, accept, open)
    /// for every connection that arrives while descriptors are out.
    private mutating func refuseWithReserve() -> Refusal {
        guard reserve.isHeld else {
            layer.logger.warn(
                "out of file descriptors, and the reserve descriptor is gone: pausing accepts for \(Self.pause / 1_000_000) ms",
                limitedAs: "out-of-descriptors-paused")
            return .noReserve
        }
        reserve.release()
        var outcome = Refusal.nothingWaiting
        if case .done(let socket)? = try? listener.accept(nonBlocking: true) {
            outcome = .refused
            layer.refusedWithoutDescriptor()
            Replies.serverFull.withUnsafeBytes { _ = try? socket.write($0) }
            socket.shutdownWrite()
            socket.close()
            layer.logger.warn("out of file descriptors: refused a client (server full)", limitedAs: "out-of-descriptors")
        }
        return reserve.reacquire() ? outcome : .noReserve
    }
}
