import EchoChatCore
import EchoChatPOSIX

extension ByteQueue {
    /// Writes to a non-blocking `socket` what the kernel takes now. Returns
    /// false if the send failed (the server closed or reset): the queue is
    /// then dropped, and the caller stops sending but may still read the
    /// server's last words.
    mutating func send(to socket: Socket) -> Bool {
        while !isEmpty {
            let attempt = withReadableBytes { raw in Result { () throws(SystemError) in try socket.write(raw) } }
            guard case .success(let result) = attempt else {
                removeAll()
                return false
            }
            switch result {
            case .done(let count): consume(count)
            case .wouldBlock: return true
            }
        }
        return true
    }
}
