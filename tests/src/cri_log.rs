//! Reading container logs in the CRI log format kubelet expects:
//! `2024-01-02T03:04:05.123456789Z stdout F text` (P for a partial line).

use std::path::Path;
use std::time::{Duration, Instant};

/// One line of a CRI log file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// RFC 3339 timestamp with nanoseconds, as written.
    pub time: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// `P` (partial: the line continues in the next record) or `F` (full, ends a line).
    pub tag: char,
    /// The text, without the record's newline.
    pub content: String,
}

impl LogLine {
    pub fn is_full(&self) -> bool {
        self.tag == 'F'
    }
}

/// Parses one record; `None` when it is not in the CRI log format.
pub fn parse_line(line: &str) -> Option<LogLine> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    // An empty line ("... stdout F") has no fourth field.
    let content = parts.next().unwrap_or("");
    if !is_rfc3339_nano(time) || !(stream == "stdout" || stream == "stderr") {
        return None;
    }
    let tag = match tag {
        "P" => 'P',
        "F" => 'F',
        _ => return None,
    };
    Some(LogLine { time: time.to_string(), stream: stream.to_string(), tag, content: content.to_string() })
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±hh:mm)`, the shape kubelet's parser accepts.
fn is_rfc3339_nano(time: &str) -> bool {
    let bytes = time.as_bytes();
    if bytes.len() < 20 {
        return false;
    }
    let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
    digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && bytes[10] == b'T'
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19)
        && (time.ends_with('Z') || time[19..].contains('+') || time[19..].contains('-'))
}

/// Every record of the log at `path`; panics on a line that is not a CRI record.
pub fn read_log(path: &Path) -> Vec<LogLine> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| parse_line(line).unwrap_or_else(|| panic!("{}: not a CRI log record: {line:?}", path.display())))
        .collect()
}

/// The lines of `stream` with partial records joined, as kubelet shows them.
pub fn joined_lines(records: &[LogLine], stream: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for record in records.iter().filter(|r| r.stream == stream) {
        current.push_str(&record.content);
        if record.is_full() {
            lines.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
}

/// Waits until the log at `path` has a record whose content contains `text`; returns
/// every record read then.
pub async fn wait_for_log(path: &Path, text: &str, timeout: Duration) -> Vec<LogLine> {
    let deadline = Instant::now() + timeout;
    loop {
        let records = read_log(path);
        if records.iter().any(|r| r.content.contains(text)) {
            return records;
        }
        if Instant::now() > deadline {
            panic!("{}: no record containing {text:?} within {timeout:?}; records: {records:#?}", path.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse() {
        let line = parse_line("2024-01-02T03:04:05.123456789Z stdout F hello world").unwrap();
        assert_eq!(line.stream, "stdout");
        assert_eq!(line.tag, 'F');
        assert_eq!(line.content, "hello world");
        let empty = parse_line("2024-01-02T03:04:05.123456789Z stderr F").unwrap();
        assert_eq!(empty.content, "");
        assert!(parse_line("hello").is_none());
        assert!(parse_line("2024-01-02T03:04:05Z stdin F x").is_none());
    }

    #[test]
    fn partial_records_join() {
        let records: Vec<LogLine> = [
            "2024-01-02T03:04:05.1Z stdout P ab",
            "2024-01-02T03:04:05.2Z stderr F err",
            "2024-01-02T03:04:05.3Z stdout F cd",
            "2024-01-02T03:04:05.4Z stdout P tail",
        ]
        .iter()
        .map(|l| parse_line(l).unwrap())
        .collect();
        assert_eq!(joined_lines(&records, "stdout"), vec!["abcd".to_string(), "tail".to_string()]);
        assert_eq!(joined_lines(&records, "stderr"), vec!["err".to_string()]);
    }
}
