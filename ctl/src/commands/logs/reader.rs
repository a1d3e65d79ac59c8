//! Reading a container's CRI log file as lines: partial records joined, `--since` and
//! `--tail` applied, and `--follow` across rotation.
//!
//! Rotation is kubelet's: it renames `0.log` away and asks berthd to reopen the log, and the
//! shim starts a fresh file at the same path. A follower at the end of its file therefore
//! checks whether the path still names the file it has open; when it names another, the
//! old one is read to its end (the shim may have written a last chunk before it reopened)
//! and the new one is read from its start. A file that shrank was truncated in place
//! (copytruncate) and is read again from its start.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use super::record::{self, Stream};

/// How long a follower sleeps at the end of the file before looking again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long after the container's exit the file is read a last time.
pub const EXIT_GRACE: Duration = Duration::from_millis(100);

/// One line as the container printed it, partial records joined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub stream: Stream,
    /// Timestamp of the line's first record, as written.
    pub time: String,
    pub time_ns: Option<i128>,
    /// The text without its newline.
    pub text: Vec<u8>,
    /// False for a line whose end never came (the container exited mid-line): printed
    /// without a newline, as the program left it.
    pub complete: bool,
}

/// A line of one stream still waiting for its `F` record.
#[derive(Debug)]
struct PendingLine {
    time: String,
    time_ns: Option<i128>,
    text: Vec<u8>,
}

/// Turns bytes of a CRI log into [`Line`]s, across reads that end anywhere.
#[derive(Debug, Default)]
pub struct Assembler {
    /// Bytes after the last newline seen: the start of a record still being written.
    unterminated: Vec<u8>,
    pending_stdout: Option<PendingLine>,
    pending_stderr: Option<PendingLine>,
    /// Lines that are not CRI records (skipped; kubelet skips them too).
    pub skipped: usize,
}

impl Assembler {
    /// Adds `bytes`; every line they complete goes to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Line>) {
        while let Some(newline) = bytes.iter().position(|b| *b == b'\n') {
            let (head, rest) = bytes.split_at(newline);
            if self.unterminated.is_empty() {
                self.record(head, out);
            } else {
                let mut record = std::mem::take(&mut self.unterminated);
                record.extend_from_slice(head);
                self.record(&record, out);
            }
            bytes = &rest[1..];
        }
        self.unterminated.extend_from_slice(bytes);
    }

    /// The file ended for good (no follow, or the container exited): lines still waiting
    /// for their end are given out as they are.
    pub fn finish(&mut self, out: &mut Vec<Line>) {
        if !self.unterminated.is_empty() {
            let record = std::mem::take(&mut self.unterminated);
            self.record(&record, out);
        }
        for (stream, pending) in
            [(Stream::Stdout, self.pending_stdout.take()), (Stream::Stderr, self.pending_stderr.take())]
        {
            if let Some(pending) = pending {
                out.push(Line {
                    stream,
                    time: pending.time,
                    time_ns: pending.time_ns,
                    text: pending.text,
                    complete: false,
                });
            }
        }
    }

    /// The reader moved to a new file: an unterminated record of the old one will never
    /// end (a partial *line* may: its next record is in the new file).
    pub fn file_switched(&mut self) {
        if !self.unterminated.is_empty() {
            self.skipped += 1;
            self.unterminated.clear();
        }
    }

    fn record(&mut self, bytes: &[u8], out: &mut Vec<Line>) {
        let Some(record) = record::parse(bytes) else {
            if !bytes.is_empty() {
                self.skipped += 1;
            }
            return;
        };
        let pending = match record.stream {
            Stream::Stdout => &mut self.pending_stdout,
            Stream::Stderr => &mut self.pending_stderr,
        };
        let line = match pending.take() {
            Some(mut started) => {
                started.text.extend_from_slice(record.content);
                started
            }
            None => {
                PendingLine { time: record.time.to_string(), time_ns: record.time_ns, text: record.content.to_vec() }
            }
        };
        if record.partial {
            *pending = Some(line);
        } else {
            out.push(Line {
                stream: record.stream,
                time: line.time,
                time_ns: line.time_ns,
                text: line.text,
                complete: true,
            });
        }
    }
}

/// What to show of the log.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Only the last N lines of what is there when reading starts.
    pub tail: Option<usize>,
    /// Only lines at or after this time (ns since the epoch).
    pub since_ns: Option<i128>,
    /// Prefix each line with its timestamp.
    pub timestamps: bool,
}

impl Options {
    fn wanted(&self, line: &Line) -> bool {
        match (self.since_ns, line.time_ns) {
            (Some(since), Some(time)) => time >= since,
            _ => true,
        }
    }
}

/// Writes lines to the stream they came from.
pub struct Printer<O: Write, E: Write> {
    pub stdout: O,
    pub stderr: E,
    pub timestamps: bool,
}

impl<O: Write, E: Write> Printer<O, E> {
    pub fn print(&mut self, lines: &[Line]) -> io::Result<()> {
        for line in lines {
            let sink: &mut dyn Write = match line.stream {
                Stream::Stdout => &mut self.stdout,
                Stream::Stderr => &mut self.stderr,
            };
            if self.timestamps {
                sink.write_all(line.time.as_bytes())?;
                sink.write_all(b" ")?;
            }
            sink.write_all(&line.text)?;
            if line.complete {
                sink.write_all(b"\n")?;
            }
        }
        self.stdout.flush()?;
        self.stderr.flush()
    }
}

/// The log file at a path, followed across rotation.
struct LogFile {
    path: PathBuf,
    file: Option<File>,
    identity: Option<(u64, u64)>,
    offset: u64,
}

impl LogFile {
    /// Opens `path`; a file that does not exist yet is waited for by [`LogFile::reopen_if_replaced`].
    fn open(path: &Path) -> io::Result<LogFile> {
        let mut log = LogFile { path: path.to_path_buf(), file: None, identity: None, offset: 0 };
        log.open_current()?;
        Ok(log)
    }

    fn open_current(&mut self) -> io::Result<bool> {
        match File::open(&self.path) {
            Ok(file) => {
                let metadata = file.metadata()?;
                self.identity = Some((metadata.dev(), metadata.ino()));
                self.file = Some(file);
                self.offset = 0;
                Ok(true)
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Reads what the open file has up to its end into `assembler`.
    fn read_available(&mut self, assembler: &mut Assembler, out: &mut Vec<Line>) -> io::Result<usize> {
        let Some(file) = self.file.as_mut() else { return Ok(0) };
        let mut total = 0;
        let mut buffer = [0u8; 64 * 1024];
        loop {
            let read = match file.read(&mut buffer) {
                Ok(0) => return Ok(total),
                Ok(read) => read,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            };
            self.offset += read as u64;
            total += read;
            assembler.feed(&buffer[..read], out);
        }
    }

    /// At the end of the open file: if the path now names another file (rotated) or the
    /// file shrank (truncated), moves to the new data. True when it did.
    fn reopen_if_replaced(&mut self, assembler: &mut Assembler, out: &mut Vec<Line>) -> io::Result<bool> {
        let current = match std::fs::metadata(&self.path) {
            Ok(metadata) => Some((metadata.dev(), metadata.ino(), metadata.len())),
            // Between the rename and the shim's reopen: keep the old file for now.
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(err),
        };
        match (current, self.identity) {
            (Some((dev, ino, len)), Some(identity)) if (dev, ino) == identity => {
                if len < self.offset {
                    if let Some(file) = self.file.as_mut() {
                        file.seek(SeekFrom::Start(0))?;
                    }
                    self.offset = 0;
                    assembler.file_switched();
                    return Ok(true);
                }
                Ok(false)
            }
            (Some(_), _) => {
                // Whatever the shim wrote to the old file before it reopened comes first.
                self.read_available(assembler, out)?;
                assembler.file_switched();
                self.open_current()
            }
            (None, _) => Ok(false),
        }
    }
}

/// Why showing a log stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("log file {path} does not exist: the container may not have started, or its log was removed")]
    Missing { path: PathBuf },
    #[error("reading log file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Prints the log at `path` with `options`. Without `follow` it prints what is there and
/// returns. With `follow` it keeps printing new lines until the receiver says `true` (the
/// container exited; the rest of the file is printed first) or its sender is dropped.
/// A reader that went away (`berthctl logs | head`) ends it quietly.
pub async fn show<O: Write, E: Write>(
    path: &Path,
    options: &Options,
    mut follow: Option<watch::Receiver<bool>>,
    printer: &mut Printer<O, E>,
) -> Result<(), ReadError> {
    let io_error = |source: io::Error| ReadError::Io { path: path.to_path_buf(), source };
    let mut log = LogFile::open(path).map_err(io_error)?;
    if log.file.is_none() && follow.is_none() {
        return Err(ReadError::Missing { path: path.to_path_buf() });
    }
    let mut assembler = Assembler::default();
    let mut lines = Vec::new();
    log.read_available(&mut assembler, &mut lines).map_err(io_error)?;
    if follow.is_none() {
        assembler.finish(&mut lines);
    }
    lines.retain(|line| options.wanted(line));
    if let Some(tail) = options.tail {
        let skip = lines.len().saturating_sub(tail);
        lines.drain(..skip);
    }
    if !print_or_stop(printer, &lines).map_err(io_error)? {
        return Ok(());
    }
    let Some(exited) = follow.as_mut() else { return Ok(()) };

    loop {
        let mut lines = Vec::new();
        let read = log.read_available(&mut assembler, &mut lines).map_err(io_error)?;
        let switched = if read == 0 {
            if log.file.is_none() {
                log.open_current().map_err(io_error)?
            } else {
                log.reopen_if_replaced(&mut assembler, &mut lines).map_err(io_error)?
            }
        } else {
            false
        };
        // Checked after the read: the container's last words are in the file by the time
        // berthd reports the exit, and a read after this check picks them up.
        let done = read == 0 && !switched && (*exited.borrow() || exited.has_changed().is_err());
        if done {
            // The shim may still be copying the last bytes from the container's pipes
            // when berthd already reports the exit: give it a moment, then read once more.
            tokio::time::sleep(EXIT_GRACE).await;
            log.read_available(&mut assembler, &mut lines).map_err(io_error)?;
            if log.reopen_if_replaced(&mut assembler, &mut lines).map_err(io_error)? {
                log.read_available(&mut assembler, &mut lines).map_err(io_error)?;
            }
            assembler.finish(&mut lines);
        }
        lines.retain(|line| options.wanted(line));
        if !print_or_stop(printer, &lines).map_err(io_error)? || done {
            return Ok(());
        }
        if read == 0 && !switched {
            tokio::select! {
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
                _ = exited.changed() => {}
            }
        }
    }
}

/// Prints `lines`; false when the reader went away (EPIPE), which ends the command.
fn print_or_stop<O: Write, E: Write>(printer: &mut Printer<O, E>, lines: &[Line]) -> io::Result<bool> {
    match printer.print(lines) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(text: &str) -> Vec<Line> {
        let mut assembler = Assembler::default();
        let mut out = Vec::new();
        // Fed in awkward pieces: reads end anywhere.
        for chunk in text.as_bytes().chunks(7) {
            assembler.feed(chunk, &mut out);
        }
        assembler.finish(&mut out);
        out
    }

    fn texts(lines: &[Line], stream: Stream) -> Vec<String> {
        lines.iter().filter(|l| l.stream == stream).map(|l| String::from_utf8_lossy(&l.text).into_owned()).collect()
    }

    #[test]
    fn partial_records_join_per_stream() {
        let lines = lines_of(
            "2024-01-02T03:04:05.1Z stdout P ab\n\
             2024-01-02T03:04:05.2Z stderr F err\n\
             not a record\n\
             2024-01-02T03:04:05.3Z stdout F cd\n\
             2024-01-02T03:04:05.4Z stdout F\n\
             2024-01-02T03:04:05.5Z stdout P tail",
        );
        assert_eq!(texts(&lines, Stream::Stdout), vec!["abcd", "", "tail"]);
        assert_eq!(texts(&lines, Stream::Stderr), vec!["err"]);
        let joined = lines.iter().find(|l| l.text == b"abcd").unwrap();
        assert_eq!(joined.time, "2024-01-02T03:04:05.1Z", "a joined line has its first record's time");
        assert!(!lines.last().unwrap().complete);
    }

    fn write_records(path: &Path, records: &[(&str, &str)], append: bool) {
        let mut file =
            std::fs::OpenOptions::new().create(true).append(append).write(true).truncate(!append).open(path).unwrap();
        for (time, text) in records {
            writeln!(file, "{time} stdout F {text}").unwrap();
        }
    }

    async fn show_to_strings(
        path: &Path,
        options: &Options,
        follow: Option<watch::Receiver<bool>>,
    ) -> (String, String) {
        let mut printer = Printer { stdout: Vec::new(), stderr: Vec::new(), timestamps: options.timestamps };
        show(path, options, follow, &mut printer).await.unwrap();
        (String::from_utf8(printer.stdout).unwrap(), String::from_utf8(printer.stderr).unwrap())
    }

    #[tokio::test]
    async fn tail_since_and_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let records =
            [("2024-01-02T03:04:01Z", "one"), ("2024-01-02T03:04:02Z", "two"), ("2024-01-02T03:04:03Z", "three")];
        write_records(&path, &records, false);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"2024-01-02T03:04:04Z stderr F oops\n")
            .unwrap();

        let (out, err) = show_to_strings(&path, &Options::default(), None).await;
        assert_eq!((out.as_str(), err.as_str()), ("one\ntwo\nthree\n", "oops\n"));
        let (out, _) = show_to_strings(&path, &Options { tail: Some(2), ..Default::default() }, None).await;
        assert_eq!(out, "three\n", "the last two lines are three (stdout) and oops (stderr)");
        let since = record::parse_rfc3339_ns("2024-01-02T03:04:02Z");
        let (out, _) =
            show_to_strings(&path, &Options { since_ns: since, timestamps: true, ..Default::default() }, None).await;
        assert_eq!(out, "2024-01-02T03:04:02Z two\n2024-01-02T03:04:03Z three\n");
        let (out, _) = show_to_strings(&path, &Options { tail: Some(0), ..Default::default() }, None).await;
        assert_eq!(out, "");
    }

    #[tokio::test]
    async fn missing_file_without_follow_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut printer = Printer { stdout: Vec::new(), stderr: Vec::new(), timestamps: false };
        let err = show(&dir.path().join("none.log"), &Options::default(), None, &mut printer).await.unwrap_err();
        assert!(matches!(err, ReadError::Missing { .. }), "{err}");
    }

    /// Follows while a writer appends, rotates (rename + new file) twice, truncates, and
    /// finally says the container exited: every line arrives once, in order.
    #[tokio::test]
    async fn follow_survives_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        write_records(&path, &[("2024-01-02T03:04:01Z", "before")], false);
        let (exited_tx, exited_rx) = watch::channel(false);
        let writer_path = path.clone();
        let writer = tokio::spawn(async move {
            let pause = || tokio::time::sleep(POLL_INTERVAL * 3);
            pause().await;
            write_records(&writer_path, &[("2024-01-02T03:04:02Z", "appended")], true);
            pause().await;
            // kubelet's rotation: rename, then the shim reopens; a last line lands in the
            // old file after the rename.
            let rotated = writer_path.with_extension("log.1");
            std::fs::rename(&writer_path, &rotated).unwrap();
            write_records(&rotated, &[("2024-01-02T03:04:03Z", "late in old file")], true);
            pause().await;
            write_records(&writer_path, &[("2024-01-02T03:04:04Z", "first of new file")], false);
            pause().await;
            std::fs::rename(&writer_path, writer_path.with_extension("log.2")).unwrap();
            write_records(&writer_path, &[("2024-01-02T03:04:05Z", "second rotation")], false);
            pause().await;
            // copytruncate: same inode, shorter.
            write_records(&writer_path, &[("2024-01-02T03:04:06Z", "x")], false);
            pause().await;
            std::fs::OpenOptions::new()
                .append(true)
                .open(&writer_path)
                .unwrap()
                .write_all(b"2024-01-02T03:04:07Z stdout P no newline")
                .unwrap();
            exited_tx.send(true).unwrap();
        });
        let (out, _) = show_to_strings(&path, &Options::default(), Some(exited_rx)).await;
        writer.await.unwrap();
        assert_eq!(
            out, "before\nappended\nlate in old file\nfirst of new file\nsecond rotation\nx\nno newline",
            "every line once, in order"
        );
    }

    #[tokio::test]
    async fn follow_waits_for_a_file_that_does_not_exist_yet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let (exited_tx, exited_rx) = watch::channel(false);
        let writer_path = path.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(POLL_INTERVAL * 2).await;
            write_records(&writer_path, &[("2024-01-02T03:04:01Z", "hello")], false);
            tokio::time::sleep(POLL_INTERVAL * 2).await;
            drop(exited_tx);
        });
        let (out, _) = show_to_strings(&path, &Options { tail: Some(5), ..Default::default() }, Some(exited_rx)).await;
        writer.await.unwrap();
        assert_eq!(out, "hello\n");
    }
}
