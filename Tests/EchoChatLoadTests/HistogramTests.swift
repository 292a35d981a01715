import EchoChatLoad
import Testing

@Suite("Histogram")
struct HistogramTests {
    /// Every value is reported within 1/256 of itself (HDR-style bounded relative error).
    @Test func relativeErrorIsBounded() {
        var value: UInt64 = 1
        var checked = 0
        while value < 1 << 50 {
            for candidate in [value, value + 1, value * 3 / 2, value * 2 - 1] {
                let reported = Histogram.representative(of: Histogram.bucket(of: candidate))
                let error = reported > candidate ? reported - candidate : candidate - reported
                #expect(Double(error) <= Double(candidate) / 256, "value \(candidate) reported as \(reported)")
                let (lowest, width) = Histogram.range(of: Histogram.bucket(of: candidate))
                #expect(candidate >= lowest && candidate < lowest + width)
                checked += 1
            }
            value = value * 5 / 4 + 1
        }
        #expect(checked > 100)
    }

    @Test func bucketsAreMonotonicAndContiguous() {
        var previous = Histogram.bucket(of: 0)
        for value in UInt64(1)...70_000 {
            let bucket = Histogram.bucket(of: value)
            #expect(bucket == previous || bucket == previous + 1)
            previous = bucket
        }
        #expect(Histogram.bucket(of: UInt64(Int64.max)) < Histogram.bucketCount)
    }

    @Test func percentilesOfKnownData() {
        let histogram = Histogram()
        for value in 1...10_000 { histogram.record(Int64(value) * 1000) }  // 1 µs ... 10 ms
        let summary = histogram.summaryMicroseconds
        #expect(summary.count == 10_000)
        #expect(summary.min == 1)
        #expect(summary.max == 10_000)
        for (reported, exact) in [(summary.p50, 5000.0), (summary.p90, 9000.0), (summary.p99, 9900.0), (summary.p999, 9990.0)] {
            #expect(abs(reported - exact) <= exact / 256 + 0.001, "reported \(reported), exact \(exact)")
        }
        #expect(abs(summary.mean - 5000.5) < 0.01)
    }

    @Test func percentilesAreClampedToMinAndMax() {
        let histogram = Histogram()
        histogram.record(1_000_003)
        #expect(histogram.value(atPercentile: 50) == 1_000_003)
        #expect(histogram.value(atPercentile: 100) == 1_000_003)
        #expect(Histogram().value(atPercentile: 99) == 0)
        histogram.record(-5)  // a clock step backwards counts as 0
        #expect(histogram.min == 0)
    }

    @Test func mergeEqualsRecordingEverythingInOne() {
        let all = Histogram()
        let parts = [Histogram(), Histogram(), Histogram()]
        for value in 0..<3000 {
            let sample = Int64(value * value % 977 + value * 13)
            all.record(sample)
            parts[value % 3].record(sample)
        }
        let merged = Histogram()
        for part in parts { merged.merge(part) }
        #expect(merged.summaryMicroseconds == all.summaryMicroseconds)
        for percentile in [1.0, 25, 50, 75, 99, 99.99] {
            #expect(merged.value(atPercentile: percentile) == all.value(atPercentile: percentile))
        }
        merged.reset()
        #expect(merged.count == 0 && merged.max == 0)
    }
}
