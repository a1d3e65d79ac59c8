//! Wall-clock helpers: unix nanoseconds and the RFC 3339 form the CRI log format uses.

/// Now, in nanoseconds since the unix epoch (CLOCK_REALTIME).
pub fn now_unix_ns() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_nanos()).unwrap_or(i64::MAX)
}

/// Length of [`format_rfc3339_nano`]'s output: `2016-10-06T00:17:09.669794202Z`.
pub const RFC3339_NANO_LEN: usize = 30;

/// UTC time with exactly nine fractional digits, as containerd writes CRI logs
/// (Go layout `2006-01-02T15:04:05.000000000Z07:00`), without allocating.
pub fn format_rfc3339_nano(unix_ns: i64) -> [u8; RFC3339_NANO_LEN] {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let nanos = unix_ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let second_of_day = secs.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);

    let mut out = [0u8; RFC3339_NANO_LEN];
    let mut put = |at: usize, value: u64, digits: usize| {
        let mut v = value;
        for i in (0..digits).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year.clamp(0, 9999) as u64, 4);
    put(5, u64::from(month), 2);
    put(8, u64::from(day), 2);
    put(11, u64::from(second_of_day / 3600), 2);
    put(14, u64::from(second_of_day / 60 % 60), 2);
    put(17, u64::from(second_of_day % 60), 2);
    put(20, u64::from(nanos), 9);
    out[4] = b'-';
    out[7] = b'-';
    out[10] = b'T';
    out[13] = b':';
    out[16] = b':';
    out[19] = b'.';
    out[29] = b'Z';
    out
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's well-known civil_from_days algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(ns: i64) -> String {
        String::from_utf8(format_rfc3339_nano(ns).to_vec()).unwrap()
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(fmt(0), "1970-01-01T00:00:00.000000000Z");
        // The example from the CRI logging design.
        assert_eq!(
            fmt(1_475_713_029_669_794_202),
            "2016-10-06T00:17:09.669794202Z"
        );
        // Leap day and end of a century leap year.
        assert_eq!(
            fmt(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
        assert_eq!(
            fmt(1_704_164_645_123_456_789),
            "2024-01-02T03:04:05.123456789Z"
        );
        assert_eq!(
            fmt(4_102_444_799_999_999_999),
            "2099-12-31T23:59:59.999999999Z"
        );
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_unix_ns() > 1_577_836_800_000_000_000);
    }
}
