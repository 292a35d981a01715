/// A latency histogram with bounded relative error, after HdrHistogram: values
/// below 128 have a bucket each; above that, every power of two is split into
/// 128 buckets of equal width, so a bucket is never wider than 1/128 of the
/// values in it, and reporting its midpoint is off by at most 1/256 (0.4%).
/// 7,296 buckets cover every non-negative Int64 (nanoseconds: 292 years).
///
/// A worker thread owns one and records into it with no lock and no
/// allocation (`record` touches only the bucket array and four counters held
/// in raw memory, so no exclusivity check runs per message); at the end the
/// workers' histograms are merged.
public final class Histogram {
    public static let subBucketBits = 7
    public static let subBucketCount = 1 << subBucketBits
    public static let bucketCount = (63 - subBucketBits) * subBucketCount + subBucketCount

    private let counts: UnsafeMutablePointer<UInt64>
    /// count, min, max, sum (sum as UInt64 nanoseconds: overflows after 584 years of latency).
    private let totals: UnsafeMutablePointer<UInt64>

    public init() {
        counts = .allocate(capacity: Self.bucketCount)
        counts.initialize(repeating: 0, count: Self.bucketCount)
        totals = .allocate(capacity: 4)
        totals.initialize(repeating: 0, count: 4)
        totals[1] = UInt64.max
    }

    deinit {
        counts.deallocate()
        totals.deallocate()
    }

    /// The bucket of `value` (>= 0).
    @inline(__always)
    public static func bucket(of value: UInt64) -> Int {
        if value < UInt64(subBucketCount) { return Int(value) }
        let magnitude = 63 - value.leadingZeroBitCount  // >= subBucketBits
        let shift = magnitude - subBucketBits
        return shift * subBucketCount + Int(value >> UInt64(shift))
    }

    /// The lowest value in `bucket` and the bucket's width.
    public static func range(of bucket: Int) -> (lowest: UInt64, width: UInt64) {
        if bucket < 2 * subBucketCount { return (UInt64(bucket), 1) }
        let shift = bucket / subBucketCount - 1
        let sub = UInt64(bucket - shift * subBucketCount)  // in [128, 256)
        return (sub << UInt64(shift), 1 << UInt64(shift))
    }

    /// The value a bucket stands for: its midpoint (exact below 256).
    public static func representative(of bucket: Int) -> UInt64 {
        let (lowest, width) = range(of: bucket)
        return lowest + (width - 1) / 2
    }

    @inline(__always)
    public func record(_ value: Int64) {
        let value = UInt64(Swift.max(0, value))
        counts[Self.bucket(of: value)] &+= 1
        totals[0] &+= 1
        if value < totals[1] { totals[1] = value }
        if value > totals[2] { totals[2] = value }
        totals[3] &+= value
    }

    public var count: UInt64 { totals[0] }
    public var min: UInt64 { totals[0] == 0 ? 0 : totals[1] }
    public var max: UInt64 { totals[2] }
    public var mean: Double { totals[0] == 0 ? 0 : Double(totals[3]) / Double(totals[0]) }

    /// Adds every value recorded in `other`.
    public func merge(_ other: Histogram) {
        for index in 0..<Self.bucketCount { counts[index] &+= other.counts[index] }
        if other.count > 0 {
            totals[0] &+= other.totals[0]
            totals[1] = Swift.min(totals[1], other.totals[1])
            totals[2] = Swift.max(totals[2], other.totals[2])
            totals[3] &+= other.totals[3]
        }
    }

    public func reset() {
        counts.update(repeating: 0, count: Self.bucketCount)
        totals.update(repeating: 0, count: 4)
        totals[1] = UInt64.max
    }

    /// The value below or at which `percentile` % of the recorded values lie
    /// (nearest rank), as its bucket's midpoint clamped to [min, max]; 0 when empty.
    public func value(atPercentile percentile: Double) -> UInt64 {
        let total = count
        guard total > 0 else { return 0 }
        var rank = UInt64((percentile / 100 * Double(total)).rounded(.up))
        rank = Swift.min(Swift.max(rank, 1), total)
        var seen: UInt64 = 0
        for index in 0..<Self.bucketCount {
            seen &+= counts[index]
            if seen >= rank { return Swift.min(Swift.max(Self.representative(of: index), min), max) }
        }
        return max
    }

    /// min, p50, p90, p99, p99.9 and max in microseconds (values recorded in nanoseconds).
    public var summaryMicroseconds: LatencySummary {
        LatencySummary(
            min: Double(min) / 1000, p50: Double(value(atPercentile: 50)) / 1000,
            p90: Double(value(atPercentile: 90)) / 1000, p99: Double(value(atPercentile: 99)) / 1000,
            p999: Double(value(atPercentile: 99.9)) / 1000, max: Double(max) / 1000, mean: mean / 1000,
            count: count)
    }
}

/// Latency percentiles in microseconds.
public struct LatencySummary: Sendable, Equatable {
    public var min: Double
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var p999: Double
    public var max: Double
    public var mean: Double
    public var count: UInt64

    public static let empty = LatencySummary(min: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0, mean: 0, count: 0)
}
