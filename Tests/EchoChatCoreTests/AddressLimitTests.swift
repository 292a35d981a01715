import Testing

@testable import EchoChatCore

/// `max-per-address` (PROTOCOL.md §3.6): the address key and the count per address.
@Suite("Address key and connections per address")
struct AddressLimitTests {
    /// `table.admit(...)`, checked (a mutating call cannot sit inside `#expect`).
    func admit(
        _ table: inout ConnectionsByAddress, _ address: AddressKey, slot: Int, limit: Int, expect expected: Bool,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let admitted = table.admit(address, slot: slot, limit: limit)
        #expect(admitted == expected, sourceLocation: sourceLocation)
    }

    static let loopback = AddressKey(ipv4: 0x7F00_0001)
    static let mappedLoopback = AddressKey(ipv6: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 127, 0, 0, 1])!
    static let ipv6Loopback = AddressKey(ipv6: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])!

    @Test func anIPv4MappedAddressIsItsIPv4Address() {
        #expect(Self.mappedLoopback == Self.loopback)
        #expect(Self.mappedLoopback.hashValue == Self.loopback.hashValue)
        #expect(Self.mappedLoopback.isIPv4)
        #expect(Self.mappedLoopback.description == "127.0.0.1")
        #expect(Self.ipv6Loopback != Self.loopback)
        #expect(!Self.ipv6Loopback.isIPv4)
        // Other embeddings of an IPv4 address are other addresses.
        let compatible = AddressKey(ipv6: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 127, 0, 0, 1])!
        #expect(compatible != Self.loopback)
        let translated = AddressKey(ipv6: [0, 0x64, 0xFF, 0x9B, 0, 0, 0, 0, 0, 0, 0, 0, 127, 0, 0, 1])!
        #expect(translated != Self.loopback)
    }

    @Test func onlySixteenBytesMakeAnIPv6Address() {
        #expect(AddressKey(ipv6: [UInt8](repeating: 0, count: 15)) == nil)
        #expect(AddressKey(ipv6: [UInt8](repeating: 0, count: 17)) == nil)
        #expect(AddressKey(ipv6: [UInt8](repeating: 0, count: 4)) == nil)
    }

    @Test(arguments: [
        ([0x2001_0db8_0000_0000, 0x0000_0000_0000_0001] as [UInt64], "2001:db8::1"),
        ([0, 1], "::1"),
        ([0, 0], "::"),
        ([0x2001_0db8_0000_0001, 0x0000_0000_0000_0001], "2001:db8:0:1::1"),  // the longest run
        ([0x2001_0db8_0000_0000, 0x0001_0000_0000_0001], "2001:db8::1:0:0:1"),  // the first of two equal runs
        ([0x2001_0db8_0001_0001, 0x0001_0001_0000_0001], "2001:db8:1:1:1:1:0:1"),  // one zero group stays
        ([0xFE80_0000_0000_0000, 0x0202_B3FF_FE1E_8329], "fe80::202:b3ff:fe1e:8329"),
        ([0x2001_0DB8_AAAA_BBBB, 0xCCCC_DDDD_EEEE_0000], "2001:db8:aaaa:bbbb:cccc:dddd:eeee:0"),
        ([0, 0xFFFF_C0A8_0001], "192.168.0.1"),
    ])
    func descriptionIsRFC5952(words: [UInt64], text: String) {
        #expect(AddressKey(high: words[0], low: words[1]).description == text)
    }

    @Test func ipv4DescriptionIsDottedQuad() {
        #expect(AddressKey(ipv4: 0xC0A8_0001).description == "192.168.0.1")
        #expect(AddressKey(ipv4: 0).description == "0.0.0.0")
        #expect(AddressKey(ipv4: 0xFFFF_FFFF).description == "255.255.255.255")
    }

    @Test func refusesOnceAnAddressHoldsTheLimit() {
        var table = ConnectionsByAddress()
        admit(&table, Self.loopback, slot: 5, limit: 2, expect: true)
        admit(&table, Self.mappedLoopback, slot: 6, limit: 2, expect: true)  // the same address
        admit(&table, Self.loopback, slot: 7, limit: 2, expect: false)
        admit(&table, Self.mappedLoopback, slot: 7, limit: 2, expect: false)
        admit(&table, Self.ipv6Loopback, slot: 7, limit: 2, expect: true)  // another address
        #expect(table.count(of: Self.loopback) == 2)
        #expect(table.count(of: Self.ipv6Loopback) == 1)
        #expect(table.addressCount == 2)
    }

    @Test func aRefusalCountsNothingAndReleasingMakesRoom() {
        var table = ConnectionsByAddress()
        admit(&table, Self.loopback, slot: 3, limit: 1, expect: true)
        for _ in 0..<100 { admit(&table, Self.loopback, slot: 4, limit: 1, expect: false) }
        table.release(slot: 4)  // the refused slot was never counted: nothing changes
        #expect(table.count(of: Self.loopback) == 1)
        table.release(slot: 3)
        #expect(table.count(of: Self.loopback) == 0)
        #expect(table.addressCount == 0)
        admit(&table, Self.loopback, slot: 4, limit: 1, expect: true)
    }

    @Test func releasingTwiceOrAnUnknownSlotChangesNothing() {
        var table = ConnectionsByAddress()
        admit(&table, Self.loopback, slot: 0, limit: 0, expect: true)
        admit(&table, Self.loopback, slot: 1, limit: 0, expect: true)
        table.release(slot: 1)
        table.release(slot: 1)
        table.release(slot: 99_999)
        table.release(slot: -1)
        #expect(table.count(of: Self.loopback) == 1)
    }

    @Test func limitZeroCountsButNeverRefuses() {
        var table = ConnectionsByAddress()
        for slot in 0..<1000 { admit(&table, Self.loopback, slot: slot, limit: 0, expect: true) }
        #expect(table.count(of: Self.loopback) == 1000)
        // Turned on later (a reload), the limit applies to what is already counted.
        admit(&table, Self.loopback, slot: 1000, limit: 999, expect: false)
        for slot in 0..<2 { table.release(slot: slot) }
        admit(&table, Self.loopback, slot: 1000, limit: 999, expect: true)
    }

    /// Random admits and releases against a plain model: the counts always
    /// equal the connections held, and no address ever passes the limit.
    @Test func randomChurnMatchesAModel() {
        var generator = SeededGenerator(seed: 11)
        var table = ConnectionsByAddress()
        var held: [Int: AddressKey] = [:]
        let addresses = (0..<5).map { AddressKey(ipv4: 0x0A00_0000 + UInt32($0)) }
        for _ in 0..<20_000 {
            let slot = Int.random(in: 0..<64, using: &generator)
            if let address = held[slot] {
                table.release(slot: slot)
                held[slot] = nil
                #expect(table.count(of: address) == held.values.filter { $0 == address }.count)
            } else {
                let address = addresses.randomElement(using: &generator)!
                let before = held.values.filter { $0 == address }.count
                let admitted = table.admit(address, slot: slot, limit: 7)
                #expect(admitted == (before < 7))
                if admitted { held[slot] = address }
            }
        }
        for address in addresses {
            #expect(table.count(of: address) == held.values.filter { $0 == address }.count)
        }
    }
}
