import CEchoChatShim
import Glibc

/// Client-side socket recipes for load generation: many connects in flight on
/// one epoll instance, optionally from a chosen loopback source address.
extension Socket {
    /// Starts a non-blocking connect(2) to `address` on a new close-on-exec,
    /// non-blocking socket with TCP_NODELAY. With `source`, binds it first
    /// (port 0, IP_BIND_ADDRESS_NO_PORT), so each source address of
    /// 127.0.0.0/8 brings its own ephemeral port range.
    ///
    /// Returns the socket and whether the connection is already established
    /// (`.done`) or in progress (`.wouldBlock`: wait for writability, then
    /// ask `connectionError()`). On failure the socket is closed.
    public static func startConnect(
        to address: SocketAddress, from source: SocketAddress? = nil
    ) throws(SystemError) -> (socket: Socket, status: IOResult<Void>) {
        let family = Int32(address.storage.ss_family)
        let fd = try syscallNoWait("socket") { cechochat_socket(family, Int32(SOCK_STREAM.rawValue), 0, 1) }
        let socket = Socket(descriptor: fd)
        do throws(SystemError) {
            try socket.setNoDelay()
            if let source {
                // ip(7): defer the port choice to connect(2), which may then
                // reuse a port that another destination already uses.
                try socket.setOption(Int32(IPPROTO_IP), Self.ipBindAddressNoPort, 1, "setsockopt IP_BIND_ADDRESS_NO_PORT")
                _ = try syscallNoWait("bind \(source)") { source.withSockaddr { Glibc.bind(fd, $0, $1) } }
            }
            let status = address.withSockaddr { Glibc.connect(fd, $0, $1) }
            if status == 0 { return (socket, .done(())) }
            let errno = Errno.current
            // connect(2): EINPROGRESS on a non-blocking socket; EINTR means the
            // connect goes on asynchronously too.
            guard errno == .inProgress || errno == .interrupted else {
                throw SystemError("connect \(address)", errno)
            }
            return (socket, .wouldBlock)
        } catch {
            socket.close()
            throw error
        }
    }

    /// SO_ERROR after a non-blocking connect reported writability: nil when
    /// the connection is established, else why it failed (connect(2), EINPROGRESS).
    public func connectionError() -> Errno? {
        do {
            let pending = try getIntOption(SOL_SOCKET, SO_ERROR, "getsockopt SO_ERROR")
            return pending == 0 ? nil : Errno(rawValue: pending)
        } catch {
            return error.errno
        }
    }

    /// `IP_BIND_ADDRESS_NO_PORT` from <linux/in.h> (not in Glibc's module).
    static let ipBindAddressNoPort: Int32 = 24
}

extension SocketAddress {
    /// The IPv4 address `127.0.0.<last>` with port 0: an extra loopback source
    /// address (Linux routes all of 127.0.0.0/8 to lo).
    public static func loopbackSource(_ last: Int) -> SocketAddress {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = (UInt32(127) << 24 | UInt32(last & 0xFF)).bigEndian
        var storage = sockaddr_storage()
        withUnsafeMutableBytes(of: &storage) { raw in
            withUnsafeBytes(of: address) { raw.copyMemory(from: $0) }
        }
        return SocketAddress(storage: storage, length: socklen_t(MemoryLayout<sockaddr_in>.size))
    }

    /// True for an IPv4 address in 127.0.0.0/8.
    public var isIPv4Loopback: Bool {
        guard Int32(storage.ss_family) == AF_INET else { return false }
        return withUnsafeBytes(of: storage) { raw in
            UInt32(bigEndian: raw.load(as: sockaddr_in.self).sin_addr.s_addr) >> 24 == 127
        }
    }
}
