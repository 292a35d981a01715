import Glibc

public enum Clock {
    /// CLOCK_MONOTONIC in nanoseconds: for deadlines and latencies, immune to
    /// wall-clock steps.
    @inline(__always)
    public static func monotonicNanoseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
    }

    /// The wall clock as an RFC 3339 UTC timestamp with milliseconds, for logs:
    /// `2026-11-22T01:58:35.123Z`.
    /// CLOCK_REALTIME in milliseconds since the epoch (comparable across machines, roughly).
    public static func wallMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    public static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        let millis = Int32(now.tv_nsec / 1_000_000)
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(millis, 3))Z"
    }

    /// Sleeps until the monotonic clock reads `deadline` (clock_nanosleep(2),
    /// TIMER_ABSTIME: no drift from being interrupted and restarted).
    public static func sleep(untilMonotonicNanoseconds deadline: Int64) {
        var target = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &target, nil) == EINTR {}
    }

    public static func sleep(nanoseconds: Int64) {
        sleep(untilMonotonicNanoseconds: monotonicNanoseconds() + nanoseconds)
    }
}
