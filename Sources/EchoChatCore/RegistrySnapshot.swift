/// A read-only copy of `ChatCore`'s registry, for checkers: the fuzzer's
/// invariants compare it with what `/who` and `/rooms` reply and with the
/// connections a server holds. The server never needs it.
public struct RegistrySnapshot: Sendable, Equatable {
    public struct Client: Sendable, Equatable {
        public var id: ConnectionID
        public var nick: String
        /// The key of the room the client is in (lower-cased, no `#`).
        public var roomKey: String
        /// Bytes of an unfinished line the client's framer holds.
        public var bufferedBytes: Int

        public init(id: ConnectionID, nick: String, roomKey: String, bufferedBytes: Int) {
            self.id = id
            self.nick = nick
            self.roomKey = roomKey
            self.bufferedBytes = bufferedBytes
        }
    }

    public struct Room: Sendable, Equatable {
        /// Lower-cased name without `#`.
        public var key: String
        /// As shown: `#` plus the creator's spelling.
        public var name: String
        public var members: [ConnectionID]

        public init(key: String, name: String, members: [ConnectionID]) {
            self.key = key
            self.name = name
            self.members = members
        }
    }

    /// Sorted by id.
    public var clients: [Client]
    /// Sorted by key.
    public var rooms: [Room]
    /// The nick index: lower-cased nick -> holder.
    public var nickIndex: [String: ConnectionID]

    public init(clients: [Client], rooms: [Room], nickIndex: [String: ConnectionID]) {
        self.clients = clients
        self.rooms = rooms
        self.nickIndex = nickIndex
    }
}
