//! The CRI log format the shim writes and kubelet reads, one record a line:
//! `2024-01-02T03:04:05.123456789Z stdout F text` (`P`: the line continues in the next
//! record of the same stream). Content is bytes: a program may print anything.

/// Which stream a record came from; berthctl writes it back to the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One record, borrowing the line it was parsed from.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The timestamp as written (printed as is by `--timestamps`).
    pub time: &'a str,
    /// The timestamp as nanoseconds since the epoch; `None` if it does not parse (the
    /// record is still shown, but `--since` cannot place it and keeps it).
    pub time_ns: Option<i128>,
    pub stream: Stream,
    /// True for `P`: the line goes on in the next record.
    pub partial: bool,
    pub content: &'a [u8],
}

/// Parses one line (without its newline); `None` when it is not a CRI record.
pub fn parse(line: &[u8]) -> Option<Record<'_>> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?;
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match fields.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    // An empty line is written as "... stdout F" with no fourth field.
    let content = fields.next().unwrap_or(b"");
    Some(Record { time, time_ns: parse_rfc3339_ns(time), stream, partial, content })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` as nanoseconds since the Unix epoch.
pub fn parse_rfc3339_ns(text: &str) -> Option<i128> {
    let bytes = text.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[7] != b'-' || !matches!(bytes[10], b'T' | b't' | b' ') {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = text.get(range)?;
        digits.bytes().all(|b| b.is_ascii_digit()).then(|| digits.parse().ok())?
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos: i128 = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Nanosecond precision: extra digits are dropped, missing ones are zeros.
        let kept = &fraction[..digits.min(9)];
        nanos = kept.parse::<i128>().ok()? * 10i128.pow(9 - kept.len() as u32);
        rest = &fraction[digits..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let zone = &rest[1..];
            if zone.len() != 5 || zone.as_bytes()[2] != b':' {
                return None;
            }
            let hours: i64 = zone[0..2].parse().ok()?;
            let minutes: i64 = zone[3..5].parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(seconds as i128 * 1_000_000_000 + nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12; // March is 0
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse() {
        let record = parse(b"2024-01-02T03:04:05.123456789Z stdout F hello world").unwrap();
        assert_eq!(record.stream, Stream::Stdout);
        assert!(!record.partial);
        assert_eq!(record.content, b"hello world");
        assert_eq!(record.time, "2024-01-02T03:04:05.123456789Z");
        let empty = parse(b"2024-01-02T03:04:05.1Z stderr P").unwrap();
        assert!(empty.partial);
        assert_eq!(empty.content, b"");
        assert_eq!(parse(b"2024-01-02T03:04:05Z stdin F x"), None);
        assert_eq!(parse(b"garbage"), None);
        let spaces = parse(b"2024-01-02T03:04:05Z stdout F  two  spaces ").unwrap();
        assert_eq!(spaces.content, b" two  spaces ");
    }

    #[test]
    fn timestamps_parse() {
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        // 2024-01-02T03:04:05Z is 1704164645 (date -u -d ... +%s).
        assert_eq!(parse_rfc3339_ns("2024-01-02T03:04:05.000000001Z"), Some(1_704_164_645_000_000_001));
        assert_eq!(parse_rfc3339_ns("2024-01-02T05:04:05+02:00"), Some(1_704_164_645_000_000_000));
        assert_eq!(parse_rfc3339_ns("2024-01-02T03:04:05.1234567891Z"), Some(1_704_164_645_123_456_789));
        assert_eq!(parse_rfc3339_ns("2024-13-02T03:04:05Z"), None);
        assert_eq!(parse_rfc3339_ns("2024-01-02T03:04:05"), None);
        assert_eq!(parse_rfc3339_ns("yesterday"), None);
    }
}
