/// Big test payloads, made quickly.
///
/// `(0..<count).map { … }` in a debug build runs unspecialized generic code
/// for every byte (the range's iterator and `map` look their type metadata
/// up each time): 44 MiB took over half a minute of a ThreadSanitizer run,
/// more than the server took to echo it. This fills the array through a
/// pointer with a plain counter instead; the closure says what byte `index` is.
public enum TestBytes {
    public static func make(_ count: Int, _ byte: (Int) -> UInt8) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            guard let base = buffer.baseAddress else { return }
            var index = 0
            while index < count {
                (base + index).pointee = byte(index)
                index += 1
            }
            initialized = count
        }
    }
}
