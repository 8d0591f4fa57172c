//! Formatting of nanosecond durations the way Go prints a `time.Duration`.

/// Formats a duration in nanoseconds like Go's `time.Duration.String`:
/// `0s`, `250ms`, `1.5s`, `15s`, `1m30s`, `30m0s`, `24h0m0s`.
pub fn format_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".to_owned();
    }
    let magnitude = nanos.unsigned_abs();
    let text = if magnitude < 1_000 {
        format!("{magnitude}ns")
    } else if magnitude < 1_000_000 {
        with_fraction(magnitude, 1_000, "µs")
    } else if magnitude < 1_000_000_000 {
        with_fraction(magnitude, 1_000_000, "ms")
    } else {
        const SECOND: u64 = 1_000_000_000;
        let hours = magnitude / (3_600 * SECOND);
        let minutes = magnitude / (60 * SECOND) % 60;
        let seconds = with_fraction(magnitude % (60 * SECOND), SECOND, "s");
        if hours > 0 {
            format!("{hours}h{minutes}m{seconds}")
        } else if minutes > 0 {
            format!("{minutes}m{seconds}")
        } else {
            seconds
        }
    };
    if nanos < 0 {
        format!("-{text}")
    } else {
        text
    }
}

/// `value / unit` with its decimal fraction, trailing zeros removed.
fn with_fraction(value: u64, unit: u64, suffix: &str) -> String {
    let whole = value / unit;
    let rest = value % unit;
    if rest == 0 {
        return format!("{whole}{suffix}");
    }
    let width = unit.ilog10() as usize;
    let fraction = format!("{rest:0width$}");
    format!("{whole}.{}{suffix}", fraction.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::format_duration;

    #[test]
    fn formats_like_go() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(999), "999ns");
        assert_eq!(format_duration(1_500), "1.5µs");
        assert_eq!(format_duration(250_000_000), "250ms");
        assert_eq!(format_duration(1_500_000_000), "1.5s");
        assert_eq!(format_duration(15_000_000_000), "15s");
        assert_eq!(format_duration(90_000_000_000), "1m30s");
        assert_eq!(format_duration(1_800_000_000_000), "30m0s");
        assert_eq!(format_duration(86_400_000_000_000), "24h0m0s");
        assert_eq!(format_duration(-5_000_000_000), "-5s");
        assert_eq!(format_duration(i64::MIN), "-2562047h47m16.854775808s");
    }
}
