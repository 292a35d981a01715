import EchoChatCore
import EchoChatPOSIX

/// One connection, from connect to exit, on one thread: a poll(2) loop over
/// standard input, the socket and (on a terminal) a doorbell rung by the
/// signal watcher thread, so keys and server lines are handled as they come.
///
/// Who owns what: the session owns the socket (non-blocking) and closes it
/// when the process exits. Standard input and output belong to the shell as
/// much as to us, so they stay blocking (O_NONBLOCK would be shared with the
/// shell) and are only read when poll(2) says so. Bytes for the server that
/// the kernel did not take wait in `outgoing`; while it holds more than
/// `maxQueued`, standard input is not read. The server is read all the
/// time, even while our sends wait: a client that blocked in send(2) would
/// deadlock with an echo server that stopped reading it until it reads
/// (docs/PROTOCOL.md §2, backpressure).
final class ClientSession {
    /// How a session ended, and the exit status that goes with it.
    enum End: Equatable {
        case serverClosed
        /// Ctrl-C on a terminal.
        case interrupted
        case signal(Signal)
        /// The terminal went away (EIO or end of file from a terminal).
        case terminalGone
        /// Whoever reads our standard output stopped (EPIPE): like `head`.
        case outputClosed
        case failed(String)

        var status: Int32 {
            switch self {
            case .serverClosed, .outputClosed: 0
            case .interrupted: 128 + Signal.interrupt.rawValue
            case .signal(let signal): 128 + signal.rawValue
            case .terminalGone: 128 + Signal.hangup.rawValue
            case .failed: 1
            }
        }
    }

    /// The client's own line when the server closes: one line, and not one
    /// a server could send in chat mode (those start with `<`, `[pm from `,
    /// `* ` or `! `). In pipe mode it goes to stderr, so stdout stays
    /// exactly what the server sent.
    static let closedByServer = "echochat: connection closed by server"
    static let maxQueued = 256 * 1024

    private let socket: Socket
    private let peer: String
    private let input = FileDescriptor.standardInput
    private let output = FileDescriptor.standardOutput
    private var outgoing = ByteQueue()
    /// Set once a send failed: the server is gone for writing; what it still
    /// sends is read until it closes.
    private var sendFailed = false
    private var halfClosed = false
    private var buffer = [UInt8](repeating: 0, count: 64 * 1024)
    /// `/upload` and `/download` on a terminal (pipe mode passes bytes through).
    private let transfers: InteractiveTransfers

    init(socket: Socket, peer: String, greeting: [UInt8], downloadDirectory: String = ".") {
        self.socket = socket
        self.peer = peer
        transfers = InteractiveTransfers(downloadDirectory: downloadDirectory)
        outgoing.append(greeting)
    }

    // MARK: - Pipe mode

    /// Like `nc -N`: standard input to the server, the server to standard
    /// output byte for byte; at the end of input, a half-close; done when
    /// the server closes.
    func runPipe() -> End {
        var inputOpen = true
        do {
            try flush()
            while true {
                let readingInput = inputOpen && outgoing.count < Self.maxQueued
                var interests = [Poll.Interest(socket.descriptor, readable: true, writable: !outgoing.isEmpty)]
                if readingInput { interests.append(Poll.Interest(input.rawValue)) }
                let ready = try Poll.wait(interests, timeoutMilliseconds: -1)
                if ready.isEmpty { continue }

                if ready[0].readable || ready[0].failed {
                    switch try readSocket() {
                    case .bytes(let count):
                        let output = output
                        do {
                            try withBuffer { raw throws(SystemError) in
                                try output.writeAll(UnsafeRawBufferPointer(rebasing: raw[0..<count]))
                            }
                        } catch {
                            return error.errno == .brokenPipe ? .outputClosed : .failed("Error: \(error)")
                        }
                    case .endOfFile:
                        System.writeToStandardError(Self.closedByServer + "\n")
                        return .serverClosed
                    case .wouldBlock:
                        break
                    }
                }
                if ready[0].writable || ready[0].failed { try flush() }
                if readingInput && (ready[1].readable || ready[1].failed) {
                    // A read error on standard input (EIO from a terminal
                    // that went away) ends input like end of file does.
                    let input = input
                    switch (try? withBuffer { raw throws(SystemError) in try input.read(into: raw) }) ?? .endOfFile {
                    case .bytes(let count):
                        if !sendFailed {
                            outgoing.append(Array(buffer[0..<count]))
                            try flush()
                        }
                    case .endOfFile:
                        inputOpen = false
                    case .wouldBlock:
                        break
                    }
                }
                if sendFailed { inputOpen = false }
                if !inputOpen { halfCloseWhenSent() }
            }
        } catch {
            return .failed(lostText(error))
        }
    }

    // MARK: - Terminal mode

    /// The interactive client: raw mode, a line editor on the bottom row,
    /// server lines printed above it as they arrive. Raw mode is turned off
    /// again on every way out (`defer`): server close, Ctrl-C, a signal
    /// (handled on this thread through the doorbell), an error.
    func runTerminal(colors: Bool) -> End {
        let doorbell: Wakeup
        let caught = Lock<[Signal]>([])
        do {
            // Before raw mode: from here on these signals wait for the loop
            // instead of killing the process with the terminal still raw.
            doorbell = try Wakeup()
            try Signals.watch([.interrupt, .terminate, .hangup, .windowChange]) { signal in
                caught.withLock { $0.append(signal) }
                doorbell.ring()
            }
        } catch {
            return .failed("Error: \(error)")
        }
        let settings: TerminalSettings
        do {
            settings = try Terminal.enterRawMode(input.rawValue)
        } catch {
            return .failed("Error: cannot set up the terminal: \(error)")
        }
        defer { Terminal.restore(settings, on: input.rawValue) }
        defer { transfers.abandon() }

        var screen = TerminalScreen(width: currentWidth(), colors: colors)
        var inputEnded = false
        let output = output
        func draw(_ text: String) throws {
            guard !text.isEmpty else { return }
            do { try output.writeAll(Array(text.utf8)) } catch { throw TerminalGone() }
        }
        func finish(_ end: End, message: String? = nil) -> End {
            try? draw(screen.finish(message))
            return end
        }
        do {
            try draw(screen.start())
        } catch {
            return .terminalGone
        }
        do {
            try flush()
            while true {
                // An upload keeps `outgoing` full; lines typed meanwhile wait
                // in `transfers`, so typing goes on, up to the same limit.
                if !sendFailed {
                    do {
                        try draw(transfers.fill(&outgoing, limit: Self.maxQueued, screen: &screen))
                    } catch let error as TransferError {
                        return finish(.failed("Error: \(error)"))
                    }
                    try flush()
                }
                let queued = transfers.isUploading ? transfers.heldBack : outgoing.count
                let readingInput = screen.inputOpen && queued < Self.maxQueued
                let writable = !outgoing.isEmpty || (transfers.isUploading && !sendFailed)
                var interests = [
                    Poll.Interest(socket.descriptor, readable: true, writable: writable),
                    Poll.Interest(doorbell.descriptor),
                ]
                if readingInput { interests.append(Poll.Interest(input.rawValue)) }
                let ready = try Poll.wait(interests, timeoutMilliseconds: -1)
                if ready.isEmpty { continue }

                if ready[1].readable {
                    doorbell.drain()
                    for signal in caught.withLock({ signals in defer { signals = [] }; return signals }) {
                        if signal == .windowChange {
                            screen.width = currentWidth()
                            try draw(screen.redraw())
                        } else {
                            return finish(.signal(signal))
                        }
                    }
                }
                if ready[0].readable || ready[0].failed {
                    switch try readSocket() {
                    case .bytes(let count):
                        screen.width = currentWidth()
                        let transfers = transfers
                        let text = buffer.withUnsafeBytes { raw in
                            transfers.received(UnsafeRawBufferPointer(rebasing: raw[..<count]), screen: &screen)
                        }
                        try draw(text)
                    case .endOfFile:
                        return finish(.serverClosed, message: Self.closedByServer)
                    case .wouldBlock:
                        break
                    }
                }
                if ready[0].writable || ready[0].failed { try flush() }
                if readingInput && (ready[2].readable || ready[2].failed) {
                    let input = input
                    let result = try? withBuffer { raw throws(SystemError) in try input.read(into: raw) }
                    guard case .bytes(let count) = result else {
                        if case .wouldBlock = result { continue }
                        return finish(.terminalGone)
                    }
                    screen.width = currentWidth()
                    let (text, actions) = screen.typed(buffer[0..<count])
                    try draw(text)
                    for action in actions {
                        switch action {
                        case .send(let line):
                            if !sendFailed { try draw(transfers.typed(line, screen: &screen, outgoing: &outgoing)) }
                        case .endInput:
                            inputEnded = true
                        case .interrupt:
                            return finish(.interrupted)
                        case .suspend:
                            try draw(screen.clearInput())
                            Terminal.restore(settings, on: input.rawValue)
                            Terminal.suspendProcess()
                            _ = try? Terminal.enterRawMode(input.rawValue)
                            screen.width = currentWidth()
                            try draw(screen.redraw())
                        }
                    }
                    try flush()
                }
                if inputEnded && !transfers.isUploading { halfCloseWhenSent() }
            }
        } catch is TerminalGone {
            return .terminalGone
        } catch let error as SystemError {
            return finish(.failed(lostText(error)))
        } catch {
            return finish(.failed("Error: \(error)"))
        }
    }

    private func currentWidth() -> Int {
        Terminal.columns(of: output.rawValue) ?? 80
    }

    // MARK: - The socket

    private func readSocket() throws(SystemError) -> ReadResult {
        let socket = socket
        return try withBuffer { raw throws(SystemError) in try socket.read(into: raw) }
    }

    /// The read buffer, for a body that throws `SystemError` (the standard
    /// library's `withUnsafeMutableBytes` only rethrows untyped errors).
    private func withBuffer<R>(
        _ body: (UnsafeMutableRawBufferPointer) throws(SystemError) -> R
    ) throws(SystemError) -> R {
        try buffer.withUnsafeMutableBytes { raw in Result { () throws(SystemError) in try body(raw) } }.get()
    }

    /// Sends what the kernel takes now. A failed send (the server reset the
    /// connection, or shut down its reading side) is not the end: the server
    /// may still have lines for us, so reading goes on until it closes.
    private func flush() throws(SystemError) {
        if !sendFailed && !outgoing.send(to: socket) { sendFailed = true }
    }

    /// shutdown(2) of our sending side once everything queued has gone: the
    /// server then answers what it has, and closes.
    private func halfCloseWhenSent() {
        guard outgoing.isEmpty, !halfClosed else { return }
        halfClosed = true
        socket.shutdownWrite()
    }

    private func lostText(_ error: SystemError) -> String {
        "Error: connection to \(peer) lost: \(error.errno)"
    }
}

/// Writing to the terminal failed: it is gone, and so is anyone to tell.
private struct TerminalGone: Error {}
