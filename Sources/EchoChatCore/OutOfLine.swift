/// An optional value kept out of line, with value semantics (copy on
/// write): one reference inline, nothing allocated while it is absent. For
/// state most values never use (a connection's file transfer), so it costs
/// the many nothing but a pointer.
struct OutOfLine<Value> {
    private final class Box {
        var value: Value
        init(_ value: Value) { self.value = value }
    }

    private var box: Box?

    init() {}

    var value: Value? { box?.value }

    /// Changes the value in place, creating it first from `initial` when absent.
    mutating func update<Result>(creating initial: @autoclosure () -> Value, _ body: (inout Value) -> Result) -> Result {
        if box == nil {
            box = Box(initial())
        } else if !isKnownUniquelyReferenced(&box!) {
            box = Box(box!.value)
        }
        return body(&box!.value)
    }

    /// Drops the value (and its allocation).
    mutating func clear() { box = nil }
}

/// An optional clock reading in 8 bytes (`Int64.min` stands for nil; the
/// clock never reads that) instead of an `Int64?`'s 9, padded to 16.
@propertyWrapper
struct PackedTime: Sendable, Equatable {
    private var raw: Int64

    init(wrappedValue: Int64?) { raw = wrappedValue ?? .min }

    var wrappedValue: Int64? {
        get { raw == .min ? nil : raw }
        set { raw = newValue ?? .min }
    }
}
