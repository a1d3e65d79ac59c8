//! The CRI container log writer: both streams of a container into one file, one entry per line:
//! `2016-10-06T00:17:09.669794202Z stdout F text`.
//!
//! - A line longer than [`MAX_LINE`] bytes is cut into `P` (partial) entries of [`MAX_LINE`]
//!   bytes, its last piece is an `F` entry (containerd's `max_container_log_line_size`).
//! - `\n` ends a line; a `\r` right before it is dropped (containerd reads with Go's
//!   `bufio.Reader.ReadLine`, which does the same).
//! - At EOF an unterminated last line is written as an `F` entry, as containerd does.
//! - Each entry is written with a single `write` on an `O_APPEND` file so entries of the two
//!   streams never interleave inside a line.
//! - [`CriLog::reopen`] opens the path again: kubelet rotates by renaming the file and then
//!   calling ReopenContainerLog.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::time::{format_rfc3339_nano, now_unix_ns};

/// Longest log entry content; longer lines become several entries.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static [u8] {
        match self {
            Stream::Stdout => b"stdout",
            Stream::Stderr => b"stderr",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

pub struct CriLog {
    /// None: output is drained and discarded.
    path: Option<PathBuf>,
    file: Option<File>,
    /// Bytes of an unterminated line, per stream.
    pending: [Vec<u8>; 2],
    /// Reused buffer for one formatted entry.
    entry: Vec<u8>,
    clock: fn() -> i64,
}

impl CriLog {
    /// A writer appending to `path` (created 0640 if missing), or one that discards.
    pub fn open(path: Option<&Path>) -> io::Result<CriLog> {
        let mut log = CriLog {
            path: path.map(Path::to_path_buf),
            file: None,
            pending: [Vec::new(), Vec::new()],
            entry: Vec::new(),
            clock: now_unix_ns,
        };
        log.reopen()?;
        Ok(log)
    }

    /// Use another clock (tests want fixed timestamps).
    pub fn with_clock(mut self, clock: fn() -> i64) -> CriLog {
        self.clock = clock;
        self
    }

    /// Open the log path again, creating it if kubelet moved the old file away.
    pub fn reopen(&mut self) -> io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        // Drop the old file only when the new one is open: a failed reopen keeps logging.
        self.file = Some(file);
        Ok(())
    }

    /// Take bytes read from a stream; writes every entry they complete.
    /// A write error is returned after all the data has been consumed (the data of a failed
    /// write is lost: a full disk must not stop the container).
    pub fn feed(&mut self, stream: Stream, mut data: &[u8]) -> io::Result<()> {
        let mut result = Ok(());
        while !data.is_empty() {
            match memchr_newline(data) {
                Some(at) => {
                    let mut pending = std::mem::take(&mut self.pending[stream.index()]);
                    let line: &[u8] = if pending.is_empty() {
                        &data[..at]
                    } else {
                        pending.extend_from_slice(&data[..at]);
                        &pending
                    };
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    keep_first_error(&mut result, self.write_line(stream, line));
                    pending.clear();
                    self.pending[stream.index()] = pending;
                    data = &data[at + 1..];
                }
                None => {
                    self.pending[stream.index()].extend_from_slice(data);
                    data = &[];
                }
            }
            // Only once more than MAX_LINE bytes are waiting do we know the line is long:
            // exactly MAX_LINE bytes followed by '\n' is still one full entry.
            while self.pending[stream.index()].len() > MAX_LINE {
                let pending = std::mem::take(&mut self.pending[stream.index()]);
                keep_first_error(
                    &mut result,
                    self.write_entry(stream, b'P', &pending[..MAX_LINE]),
                );
                let mut rest = pending;
                rest.drain(..MAX_LINE);
                self.pending[stream.index()] = rest;
            }
        }
        result
    }

    /// The stream reached EOF: an unterminated last line becomes a full entry.
    pub fn finish(&mut self, stream: Stream) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending[stream.index()]);
        if pending.is_empty() {
            return Ok(());
        }
        self.write_entry(stream, b'F', &pending)
    }

    /// A complete line, cut into P pieces if it is too long.
    fn write_line(&mut self, stream: Stream, line: &[u8]) -> io::Result<()> {
        let mut result = Ok(());
        let mut rest = line;
        while rest.len() > MAX_LINE {
            keep_first_error(
                &mut result,
                self.write_entry(stream, b'P', &rest[..MAX_LINE]),
            );
            rest = &rest[MAX_LINE..];
        }
        keep_first_error(&mut result, self.write_entry(stream, b'F', rest));
        result
    }

    fn write_entry(&mut self, stream: Stream, tag: u8, content: &[u8]) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let entry = &mut self.entry;
        entry.clear();
        entry.extend_from_slice(&format_rfc3339_nano((self.clock)()));
        entry.push(b' ');
        entry.extend_from_slice(stream.name());
        entry.push(b' ');
        entry.push(tag);
        entry.push(b' ');
        entry.extend_from_slice(content);
        entry.push(b'\n');
        let result = file.write_all(entry);
        // Give back the memory of an occasional huge entry; the shim idles small.
        if entry.capacity() > 2 * MAX_LINE {
            *entry = Vec::new();
        }
        result
    }
}

fn memchr_newline(data: &[u8]) -> Option<usize> {
    data.iter().position(|&b| b == b'\n')
}

fn keep_first_error(result: &mut io::Result<()>, next: io::Result<()>) {
    if result.is_ok() {
        *result = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed_clock() -> i64 {
        1_475_713_029_669_794_202
    }
    const TS: &str = "2016-10-06T00:17:09.669794202Z";

    fn log_in(dir: &tempfile::TempDir) -> (CriLog, PathBuf) {
        let path = dir.path().join("c.log");
        (
            CriLog::open(Some(&path)).unwrap().with_clock(fixed_clock),
            path,
        )
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn full_lines_of_both_streams_share_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, path) = log_in(&dir);
        log.feed(Stream::Stdout, b"hello\nwor").unwrap();
        log.feed(Stream::Stderr, b"oops\r\n\n").unwrap();
        log.feed(Stream::Stdout, b"ld\n").unwrap();
        assert_eq!(
            read(&path),
            format!(
                "{TS} stdout F hello\n{TS} stderr F oops\n{TS} stderr F \n{TS} stdout F world\n"
            )
        );
    }

    #[test]
    fn long_lines_are_split_into_partial_entries() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, path) = log_in(&dir);
        let long = "x".repeat(MAX_LINE * 2 + 5);
        // Fed in odd-sized chunks, as pipes deliver it.
        for chunk in long.as_bytes().chunks(1000) {
            log.feed(Stream::Stdout, chunk).unwrap();
        }
        log.feed(Stream::Stdout, b"\n").unwrap();
        let exact = "y".repeat(MAX_LINE);
        log.feed(Stream::Stderr, format!("{exact}\n").as_bytes())
            .unwrap();
        let x = "x".repeat(MAX_LINE);
        assert_eq!(
            read(&path),
            format!(
                "{TS} stdout P {x}\n{TS} stdout P {x}\n{TS} stdout F xxxxx\n{TS} stderr F {exact}\n"
            )
        );
    }

    #[test]
    fn one_write_with_a_long_line_splits_too() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, path) = log_in(&dir);
        let line = format!("{}{}\n", "a".repeat(MAX_LINE), "b".repeat(3));
        log.feed(Stream::Stdout, line.as_bytes()).unwrap();
        assert_eq!(
            read(&path),
            format!(
                "{TS} stdout P {}\n{TS} stdout F bbb\n",
                "a".repeat(MAX_LINE)
            )
        );
    }

    #[test]
    fn an_unterminated_last_line_is_full_at_eof() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, path) = log_in(&dir);
        log.feed(Stream::Stdout, b"one\ntwo").unwrap();
        log.finish(Stream::Stderr).unwrap();
        assert_eq!(read(&path), format!("{TS} stdout F one\n"));
        log.finish(Stream::Stdout).unwrap();
        log.finish(Stream::Stdout).unwrap();
        assert_eq!(
            read(&path),
            format!("{TS} stdout F one\n{TS} stdout F two\n")
        );
    }

    #[test]
    fn reopen_follows_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, path) = log_in(&dir);
        log.feed(Stream::Stdout, b"before\n").unwrap();
        let rotated = dir.path().join("c.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.feed(Stream::Stdout, b"still old\n").unwrap();
        log.reopen().unwrap();
        log.feed(Stream::Stdout, b"after\n").unwrap();
        assert_eq!(
            read(&rotated),
            format!("{TS} stdout F before\n{TS} stdout F still old\n")
        );
        assert_eq!(read(&path), format!("{TS} stdout F after\n"));
    }

    #[test]
    fn without_a_path_output_is_discarded() {
        let mut log = CriLog::open(None).unwrap();
        log.feed(Stream::Stdout, b"gone\npartial").unwrap();
        log.finish(Stream::Stdout).unwrap();
        log.reopen().unwrap();
    }

    #[test]
    fn real_clock_timestamps_parse_as_rfc3339() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/c.log");
        let mut log = CriLog::open(Some(&path)).unwrap();
        log.feed(Stream::Stderr, b"x\n").unwrap();
        let text = read(&path);
        let (ts, rest) = text.split_once(' ').unwrap();
        assert_eq!(rest, "stderr F x\n");
        assert_eq!(ts.len(), 30);
        assert!(ts.starts_with("20") && ts.ends_with('Z'), "{ts}");
    }
}
