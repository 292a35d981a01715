import CEchoChatShim
import Glibc

/// A TCP socket descriptor: a plain value, not an owner. The object that holds
/// it (a connection, a listener) decides when to close it, exactly once.
/// Every socket is created close-on-exec; every send uses MSG_NOSIGNAL, and
/// `Signals.ignoreBrokenPipe()` covers any other write.
public struct Socket: Hashable, Sendable, CustomStringConvertible {
    public let descriptor: Int32

    public init(descriptor: Int32) { self.descriptor = descriptor }

    public var description: String { "fd \(descriptor)" }

    // MARK: - Creating sockets

    /// A listening TCP socket bound to the first address of `host` that works:
    /// socket(2) + SO_REUSEADDR + bind(2) + listen(2).
    public static func listen(
        host: String, port: Int, backlog: Int32 = 4096, nonBlocking: Bool = true
    ) throws(SystemError) -> Socket {
        let addresses = try SocketAddress.resolve(host: host, port: port, passive: true)
        var lastError = SystemError("bind \(host):\(port)", .invalidArgument)
        for address in addresses {
            let family = Int32(address.storage.ss_family)
            let fd = try syscallNoWait("socket") {
                cechochat_socket(family, Int32(SOCK_STREAM.rawValue), 0, nonBlocking ? 1 : 0)
            }
            let socket = Socket(descriptor: fd)
            do {
                try socket.setOption(SOL_SOCKET, SO_REUSEADDR, 1, "setsockopt SO_REUSEADDR")
                _ = try syscallNoWait("bind \(address)") { address.withSockaddr { Glibc.bind(fd, $0, $1) } }
                _ = try syscallNoWait("listen \(address)") { Glibc.listen(fd, backlog) }
                return socket
            } catch {
                socket.close()
                lastError = error
            }
        }
        throw lastError
    }

    /// A connected TCP socket, blocking, with TCP_NODELAY; tries every address
    /// of `host` in turn. `timeout` bounds each connect attempt (seconds).
    /// `receiveBuffer`/`sendBuffer` (SO_RCVBUF/SO_SNDBUF) are set before the
    /// connection exists: set later, a smaller receive buffer is smaller than
    /// the window already offered (Linux never shrinks it), so the peer's
    /// segments that fit the window but not the buffer are dropped, and the
    /// retransmissions back off for seconds.
    public static func connect(
        host: String, port: Int, timeout: Double = 10, receiveBuffer: Int? = nil, sendBuffer: Int? = nil
    ) throws(SystemError) -> Socket {
        let addresses = try SocketAddress.resolve(host: host, port: port, passive: false)
        var lastError = SystemError("connect \(host):\(port)", .invalidArgument)
        for address in addresses {
            let family = Int32(address.storage.ss_family)
            let fd = try syscallNoWait("socket") { cechochat_socket(family, Int32(SOCK_STREAM.rawValue), 0, 1) }
            let socket = Socket(descriptor: fd)
            do {
                if let receiveBuffer { try socket.setReceiveBufferSize(receiveBuffer) }
                if let sendBuffer { try socket.setSendBufferSize(sendBuffer) }
                try socket.connect(to: address, timeout: timeout)
                try socket.setNonBlocking(false)
                try socket.setNoDelay()
                return socket
            } catch {
                socket.close()
                lastError = error
            }
        }
        throw lastError
    }

    /// Non-blocking connect(2) bounded by poll(2), so a black-holed address
    /// cannot hang the caller.
    private func connect(to address: SocketAddress, timeout: Double) throws(SystemError) {
        let fd = descriptor
        let status = address.withSockaddr { Glibc.connect(fd, $0, $1) }
        if status == 0 { return }
        let errno = Errno.current
        guard errno == .inProgress || errno == .interrupted else {
            throw SystemError("connect \(address)", errno)
        }
        guard try Poll.waitUntilWritable(fd, timeoutMilliseconds: Int32(timeout * 1000)) else {
            throw SystemError("connect \(address)", .timedOut)
        }
        let pending = try getIntOption(SOL_SOCKET, SO_ERROR, "getsockopt SO_ERROR")
        if pending != 0 { throw SystemError("connect \(address)", Errno(rawValue: pending)) }
    }

    // MARK: - Accepting

    /// accept4(2), close-on-exec, non-blocking if asked. `.wouldBlock` when no
    /// connection is waiting; EMFILE/ENFILE surface as `SystemError` so the
    /// caller can apply its descriptor-exhaustion policy.
    public func accept(nonBlocking: Bool) throws(SystemError) -> IOResult<Socket> {
        let fd = descriptor
        switch try syscall("accept", { cechochat_accept4(fd, nil, nil, nonBlocking ? 1 : 0) }) {
        case .done(let client): return .done(Socket(descriptor: client))
        case .wouldBlock: return .wouldBlock
        }
    }

    // MARK: - I/O

    /// recv(2) into `buffer`.
    @inline(__always)
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(SystemError) -> ReadResult {
        let fd = descriptor
        switch try syscall("read", { Glibc.recv(fd, buffer.baseAddress, buffer.count, 0) }) {
        case .done(0): return .endOfFile
        case .done(let count): return .bytes(count)
        case .wouldBlock: return .wouldBlock
        }
    }

    /// send(2) with MSG_NOSIGNAL: a peer that went away is an EPIPE error, never
    /// a SIGPIPE. Returns how many bytes the kernel took.
    @inline(__always)
    public func write(_ bytes: UnsafeRawBufferPointer) throws(SystemError) -> IOResult<Int> {
        let fd = descriptor
        return try syscall("write", { Glibc.send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL)) })
    }

    /// Writes all of `bytes` on a blocking socket (or fails). Used by clients
    /// and by the blocking strategies.
    /// A would-block here means SO_SNDTIMEO ran out: `.timedOut`.
    public func writeAll(_ bytes: UnsafeRawBufferPointer) throws(SystemError) {
        try writeUntilDone(
            bytes,
            writeSome: { rest throws(SystemError) in try write(rest) },
            whenBlocked: { () throws(SystemError) in throw SystemError("write", .timedOut) })
    }

    public func writeAll(_ bytes: [UInt8]) throws(SystemError) {
        let failure: SystemError? = bytes.withUnsafeBytes { raw in
            do throws(SystemError) { try writeAll(raw) } catch { return error }
            return nil
        }
        if let failure { throw failure }
    }

    /// shutdown(2) of the sending side: the peer reads EOF once it has read
    /// everything already queued.
    public func shutdownWrite() {
        _ = Glibc.shutdown(descriptor, Int32(SHUT_WR))
    }

    /// shutdown(2) of the receiving side: a thread blocked in read(2) on this
    /// socket wakes up with end-of-file.
    public func shutdownRead() {
        _ = Glibc.shutdown(descriptor, Int32(SHUT_RD))
    }

    /// close(2), never retried; closing a socket twice traps in debug builds
    /// (see `closeDescriptor`).
    public func close() {
        closeDescriptor(descriptor)
    }

    // MARK: - Options

    /// TCP_NODELAY: a request/response protocol must not wait for Nagle plus
    /// delayed ACK (40 ms per small message otherwise).
    public func setNoDelay() throws(SystemError) {
        try setOption(Int32(IPPROTO_TCP), TCP_NODELAY, 1, "setsockopt TCP_NODELAY")
    }

    public func setNonBlocking(_ nonBlocking: Bool) throws(SystemError) {
        let fd = descriptor
        let flags = try syscallNoWait("fcntl F_GETFL") { fcntl(fd, F_GETFL) }
        let wanted = nonBlocking ? flags | O_NONBLOCK : flags & ~O_NONBLOCK
        if wanted != flags { _ = try syscallNoWait("fcntl F_SETFL") { fcntl(fd, F_SETFL, wanted) } }
    }

    /// SO_RCVTIMEO: a blocking read gives up after `seconds` (then `.wouldBlock`).
    public func setReceiveTimeout(seconds: Double) throws(SystemError) {
        try setTimeout(SO_RCVTIMEO, seconds, "setsockopt SO_RCVTIMEO")
    }

    /// SO_SNDTIMEO: a blocking write gives up after `seconds`.
    public func setSendTimeout(seconds: Double) throws(SystemError) {
        try setTimeout(SO_SNDTIMEO, seconds, "setsockopt SO_SNDTIMEO")
    }

    /// SO_RCVBUF (the kernel doubles it and stops auto-tuning this socket).
    public func setReceiveBufferSize(_ bytes: Int) throws(SystemError) {
        try setOption(SOL_SOCKET, SO_RCVBUF, Int32(bytes), "setsockopt SO_RCVBUF")
    }

    /// SO_SNDBUF (the kernel doubles it and stops auto-tuning this socket).
    public func setSendBufferSize(_ bytes: Int) throws(SystemError) {
        try setOption(SOL_SOCKET, SO_SNDBUF, Int32(bytes), "setsockopt SO_SNDBUF")
    }

    /// SO_LINGER with a zero timeout: close(2) resets the connection.
    public func setResetOnClose() throws(SystemError) {
        var value = linger(l_onoff: 1, l_linger: 0)
        let fd = descriptor
        _ = try syscallNoWait("setsockopt SO_LINGER") {
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &value, socklen_t(MemoryLayout<linger>.size))
        }
    }

    private func setTimeout(_ option: Int32, _ seconds: Double, _ name: String) throws(SystemError) {
        let whole = seconds.rounded(.down)
        var value = timeval(tv_sec: Int(whole), tv_usec: Int((seconds - whole) * 1_000_000))
        let fd = descriptor
        _ = try syscallNoWait(name) { setsockopt(fd, SOL_SOCKET, option, &value, socklen_t(MemoryLayout<timeval>.size)) }
    }

    func setOption(_ level: Int32, _ option: Int32, _ value: Int32, _ name: String) throws(SystemError) {
        var value = value
        let fd = descriptor
        _ = try syscallNoWait(name) { setsockopt(fd, level, option, &value, socklen_t(MemoryLayout<Int32>.size)) }
    }

    func getIntOption(_ level: Int32, _ option: Int32, _ name: String) throws(SystemError) -> Int32 {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        let fd = descriptor
        _ = try syscallNoWait(name) { getsockopt(fd, level, option, &value, &length) }
        return value
    }

    // MARK: - Addresses

    /// getsockname(2): for a listener bound to port 0, the port the kernel chose.
    public func localAddress() throws(SystemError) -> SocketAddress {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = descriptor
        _ = try syscallNoWait("getsockname") {
            withUnsafeMutableBytes(of: &storage) { raw in
                getsockname(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length)
            }
        }
        return SocketAddress(storage: storage, length: length)
    }

    /// getpeername(2): the address of the other end. ENOTCONN once the
    /// peer has reset the connection.
    public func peerAddress() throws(SystemError) -> SocketAddress {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = descriptor
        _ = try syscallNoWait("getpeername") {
            withUnsafeMutableBytes(of: &storage) { raw in
                getpeername(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), &length)
            }
        }
        return SocketAddress(storage: storage, length: length)
    }
}
