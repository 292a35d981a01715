import EchoChatOptions
import EchoChatPOSIX

/// `echochat`: parse options, connect, then run as an interactive terminal
/// client or, when standard input or output is not a terminal, as a pipe
/// (like `nc -N`). Returns the exit status.
public enum ClientMain {
    /// `environment` looks a variable up (`NO_COLOR`, `TERM`); a parameter so
    /// tests can pass their own.
    public static func run(
        _ arguments: [String], environment: (String) -> String? = System.environmentVariable
    ) -> Int32 {
        let configuration: ClientConfiguration
        do {
            switch try ClientOptions.parse(arguments) {
            case .help:
                System.writeToStandardOutput(ClientOptions.helpText)
                return 0
            case .version:
                System.writeToStandardOutput(ClientOptions.parser.versionText)
                return 0
            case .run(let settings):
                configuration = settings
            }
        } catch {
            System.writeToStandardError(ClientOptions.errorText(error))
            return usageExitStatus
        }

        Signals.ignoreBrokenPipe()
        let peer = "\(configuration.host):\(configuration.port)"
        let socket: Socket
        do {
            socket = try Socket.connect(host: configuration.host, port: configuration.port)
            try socket.setNonBlocking(true)
        } catch {
            System.writeToStandardError("Error: cannot connect to \(peer): \(reason(error, host: configuration.host))\n")
            return 1
        }

        var greeting = ""
        if let nick = configuration.nick { greeting += "/nick \(nick)\n" }
        if let room = configuration.room { greeting += "/join \(room)\n" }
        if let transfer = configuration.transfer {
            let scripted = ScriptedTransfer(
                socket: socket, peer: peer, greeting: Array(greeting.utf8),
                showProgress: Terminal.isTerminal(FileDescriptor.standardError.rawValue))
            switch transfer {
            case .upload(let path, let name): return scripted.upload(path: path, name: name)
            case .download(let name): return scripted.download(name: name, directory: configuration.downloadDirectory)
            }
        }
        let session = ClientSession(
            socket: socket, peer: peer, greeting: Array(greeting.utf8), downloadDirectory: configuration.downloadDirectory)

        let dumb = environment("TERM") == "dumb"
        let interactive = !dumb && Terminal.isTerminal(FileDescriptor.standardInput.rawValue)
            && Terminal.isTerminal(FileDescriptor.standardOutput.rawValue)
        let end: ClientSession.End
        if interactive {
            // https://no-color.org: set and not empty turns colours off.
            let colors = configuration.colorAllowed && (environment("NO_COLOR") ?? "").isEmpty
            end = session.runTerminal(colors: colors)
        } else {
            end = session.runPipe()
        }
        if case .failed(let message) = end { System.writeToStandardError(message + "\n") }
        return end.status
    }

    /// Why a connect failed: `Connection refused`, or the resolver's words
    /// (`Name or service not known`) when the host did not resolve.
    static func reason(_ error: SystemError, host: String) -> String {
        if error.errno.rawValue != 0 { return error.errno.description }
        let prefix = "resolve \(host): "
        let text = error.description
        return text.hasPrefix(prefix) ? String(text.dropFirst(prefix.count)) : text
    }
}
