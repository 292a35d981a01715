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
