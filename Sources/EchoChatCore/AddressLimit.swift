/// A client's source address as `max-per-address` counts it
/// (docs/PROTOCOL.md §3.6): 128 bits, an IPv4 address held in its
/// IPv4-mapped form (`::ffff:a.b.c.d`), so that a client reaching an IPv6
/// listener over IPv4 is the same address as one reaching an IPv4 listener.
public struct AddressKey: Hashable, Sendable, CustomStringConvertible {
    /// The address in network order: `high` holds the first eight bytes.
    public let high: UInt64
    public let low: UInt64

    private static let mappedPrefix: UInt64 = 0xFFFF << 32

    /// An IPv6 address, first eight bytes in `high`. An IPv4-mapped one is
    /// the IPv4 address.
    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// An IPv4 address in host order (127.0.0.1 is 0x7F00_0001).
    public init(ipv4 address: UInt32) {
        self.init(high: 0, low: Self.mappedPrefix | UInt64(address))
    }

    /// An IPv6 address from its 16 bytes in network order; nil for any other length.
    public init?(ipv6 bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        var high: UInt64 = 0
        var low: UInt64 = 0
        for (index, byte) in bytes.enumerated() {
            if index < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
        }
        self.init(high: high, low: low)
    }

    /// An IPv4 address, given directly or IPv4-mapped.
    public var isIPv4: Bool { high == 0 && low >> 32 == 0xFFFF }

    /// `127.0.0.1` for IPv4 (mapped or not); IPv6 as RFC 5952 writes it
    /// (lower-case hex, no leading zeros, the longest run of two or more
    /// zero groups, the first if tied, as `::`).
    public var description: String {
        if isIPv4 {
            return [24, 16, 8, 0].map { String(low >> UInt64($0) & 0xFF) }.joined(separator: ".")
        }
        let groups = (0..<8).map { index -> UInt16 in
            let word = index < 4 ? high : low
            return UInt16(truncatingIfNeeded: word >> UInt64(48 - 16 * (index % 4)))
        }
        var best = (start: -1, length: 1)
        var index = 0
        while index < 8 {
            guard groups[index] == 0 else {
                index += 1
                continue
            }
            var end = index
            while end < 8 && groups[end] == 0 { end += 1 }
            if end - index > best.length { best = (index, end - index) }
            index = end
        }
        func hex(_ range: Range<Int>) -> String { groups[range].map { String($0, radix: 16) }.joined(separator: ":") }
        guard best.start >= 0 else { return hex(0..<8) }
        return hex(0..<best.start) + "::" + hex((best.start + best.length)..<8)
    }
}

/// How many connections each source address holds, for `max-per-address`.
/// A connection is known by a slot number that no other open connection
/// has (the server uses its descriptor number), so letting one go needs only
/// that number. Each slot costs 4 bytes (an index into the table of
/// addresses that hold connections), each address one entry. Pure: the
/// server keeps it behind a lock.
public struct ConnectionsByAddress: Sendable {
    private struct Entry {
        var address: AddressKey
        var count: Int
    }

    private var entries: [Entry] = []
    /// Entries whose count fell to 0, for reuse.
    private var freeEntries: [UInt32] = []
    private var entryOf: [AddressKey: UInt32] = [:]
    /// Slot -> its entry + 1 (0: nothing counted there).
    private var slots: [UInt32] = []

    public init() {}

    /// Counts a new connection from `address` in `slot`, unless the address
    /// already holds `limit` connections (0: no limit), in which case nothing
    /// changes and the answer is false: refuse it.
    public mutating func admit(_ address: AddressKey, slot: Int, limit: Int) -> Bool {
        let existing = entryOf[address]
        let held = existing.map { entries[Int($0)].count } ?? 0
        guard limit == 0 || held < limit else { return false }
        if slot >= slots.count {
            slots.append(contentsOf: repeatElement(0, count: max(slot + 1, slots.count * 2) - slots.count))
        }
        // A slot still counted is a connection whose end was never reported:
        // a bug, but one that must not leave its address over-counted for ever.
        assert(slots[slot] == 0, "slot \(slot) admitted twice")
        release(slot: slot)
        let entry: UInt32
        if let existing = entryOf[address] {  // looked up again: the release may have freed it
            entry = existing
        } else if let reused = freeEntries.popLast() {
            entry = reused
            entries[Int(entry)] = Entry(address: address, count: 0)
            entryOf[address] = entry
        } else {
            entry = UInt32(entries.count)
            entries.append(Entry(address: address, count: 0))
            entryOf[address] = entry
        }
        entries[Int(entry)].count += 1
        slots[slot] = entry + 1
        return true
    }

    /// The connection in `slot` has ended; nothing happens if none is counted there.
    public mutating func release(slot: Int) {
        guard slot >= 0, slot < slots.count, slots[slot] != 0 else { return }
        let entry = Int(slots[slot] - 1)
        slots[slot] = 0
        entries[entry].count -= 1
        if entries[entry].count == 0 {
            entryOf[entries[entry].address] = nil
            freeEntries.append(UInt32(entry))
        }
    }

    /// Connections `address` holds now.
    public func count(of address: AddressKey) -> Int { entryOf[address].map { entries[Int($0)].count } ?? 0 }

    /// Addresses holding at least one connection.
    public var addressCount: Int { entryOf.count }
}
