//! `sha256:<hex>` digests as a type, and hashers that compute one while bytes stream.
//!
//! API:
//! - [`Digest`]: a parsed, validated `sha256:<64 lowercase hex>`. `Digest::parse(s)`
//!   (also `FromStr`, `TryFrom<&str>`/`TryFrom<String>`), `Digest::from_hex(hex)`,
//!   `Digest::of(bytes)`, `as_str()` (`sha256:<hex>`), `hex()`, `Display`, and serde as
//!   the plain string.
//! - [`Sha256Hasher`]: incremental hasher that also counts bytes (`update`, `len`,
//!   `finish() -> Digest`).
//! - [`HashingReader`] / [`HashingWriter`]: wrap a reader/writer and hash every byte that
//!   passes through it.
//!
//! Only sha256 is accepted: it is what every registry and image uses, and one algorithm
//! keeps the content store's path layout (`blobs/sha256/<hex>`) simple.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

const PREFIX: &str = "sha256:";
const HEX_LEN: usize = 64;

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    /// The full form, `sha256:<hex>`, kept whole so `as_str` costs nothing.
    full: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`. Anything else (other algorithms, uppercase hex,
    /// wrong length) is an `InvalidReference` error naming the input.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidReference {
            reference: s.to_string(),
            reason: reason.to_string(),
        };
        let Some(hex) = s.strip_prefix(PREFIX) else {
            return Err(invalid("a digest must look like sha256:<64 hex digits>"));
        };
        validate_hex(hex).map_err(|reason| invalid(&reason))?;
        Ok(Self {
            full: s.to_string(),
        })
    }

    /// Builds a digest from its 64 lowercase hex digits (no `sha256:` prefix).
    pub fn from_hex(hex: &str) -> Result<Self> {
        validate_hex(hex).map_err(|reason| Error::InvalidReference {
            reference: hex.to_string(),
            reason,
        })?;
        Ok(Self {
            full: format!("{PREFIX}{hex}"),
        })
    }

    /// The sha256 digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        let mut hasher = Sha256Hasher::new();
        hasher.update(data);
        hasher.finish()
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The 64 hex digits without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.full[PREFIX.len()..]
    }

    /// Always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

fn validate_hex(hex: &str) -> std::result::Result<(), String> {
    if hex.len() != HEX_LEN {
        return Err(format!(
            "a sha256 digest has {HEX_LEN} hex digits, this one has {}",
            hex.len()
        ));
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err("a sha256 digest is made of lowercase hex digits (0-9, a-f)".to_string());
    }
    Ok(())
}

/// The digests named by the entries of `dir` (`<hex>` files or directories), sorted;
/// entries whose names are not digests (temp files) are skipped. Blobs and snapshots are
/// both stored this way.
pub(crate) fn digests_in_dir(dir: &std::path::Path, context: &'static str) -> Result<Vec<Digest>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(context, dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(context, dir, e))?;
        if let Some(digest) = entry.file_name().to_str().and_then(|n| Digest::from_hex(n).ok()) {
            out.push(digest);
        }
    }
    out.sort();
    Ok(out)
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.full)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for Digest {
    type Error = Error;
    fn try_from(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.full
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Incremental sha256 that also counts the bytes it saw.
#[derive(Clone, Default)]
pub struct Sha256Hasher {
    inner: Sha256,
    len: u64,
}

impl Sha256Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
        self.len += data.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> Digest {
        Digest {
            full: format!("{PREFIX}{}", hex::encode(self.inner.finalize())),
        }
    }
}

/// A reader that hashes every byte read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256Hasher,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256Hasher::new(),
        }
    }

    /// Bytes read so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The digest of what was read, and the inner reader.
    pub fn finish(self) -> (Digest, R) {
        (self.hasher.finish(), self.inner)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes every byte written through it (only what the inner writer
/// accepted, so short writes hash correctly).
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256Hasher::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    pub fn finish(self) -> (Digest, W) {
        (self.hasher.finish(), self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.hex(), &EMPTY[7..]);
        assert_eq!(Digest::from_hex(d.hex()).unwrap(), d);
        assert_eq!(Digest::of(b""), d);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "sha256:",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            let err = Digest::parse(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
            assert!(err.to_string().contains("sha256"), "{err}");
        }
    }

    #[test]
    fn serde_as_string() {
        let d = Digest::parse(EMPTY).unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{EMPTY}\""));
        let back: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:zz\"").is_err());
    }

    #[test]
    fn hashing_reader_and_writer() {
        let data = b"hello berth".repeat(1000);
        let mut r = HashingReader::new(&data[..]);
        let mut out = Vec::new();
        io::copy(&mut r, &mut out).unwrap();
        assert_eq!(r.len(), data.len() as u64);
        let (d, _) = r.finish();
        assert_eq!(d, Digest::of(&data));

        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        let (d2, inner) = w.finish();
        assert_eq!(d2, d);
        assert_eq!(inner, data);
    }
}
