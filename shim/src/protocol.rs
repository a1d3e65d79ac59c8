//! The control-socket messages berthd and a shim exchange.
//!
//! Transport: a unix stream socket `<state-dir>/control.sock`, one request per connection.
//! The client writes one JSON line, the shim answers one JSON line and closes.
//! Byte payloads (exec output) travel as base64 strings, not JSON number arrays, so that a
//! 16 MiB output costs ~22 MiB on the wire instead of ~60 MiB.

use serde::{Deserialize, Serialize};

/// Name of the control socket inside the shim's state dir.
pub const CONTROL_SOCKET: &str = "control.sock";
/// Name of the durable exit record inside the shim's state dir.
pub const EXIT_FILE: &str = "exit.json";
/// The shim daemon's own pid (decimal).
pub const SHIM_PID_FILE: &str = "shim.pid";
/// The container init's pid (decimal).
pub const INIT_PID_FILE: &str = "pid";
/// Longest request line the shim accepts (exec args and env are the only large parts).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// created -> running; an error if the exec fails (e.g. no such binary).
    Start,
    /// Send `signal` to the init, or with `all` to every process in the container's cgroup.
    Signal {
        signal: i32,
        all: bool,
    },
    Status,
    /// Answers with the status when the container exited or `timeout_ms` passed
    /// (0 = answer at once).
    Wait {
        timeout_ms: u64,
    },
    /// Run a command in the running container; `timeout_ms` 0 = no timeout. `env` is added
    /// to the container's process env (same name: replaced), as `runc exec --env` does;
    /// `cwd` None = the container's cwd.
    Exec {
        args: Vec<String>,
        env: Vec<String>,
        cwd: Option<String>,
        timeout_ms: u64,
    },
    /// Reopen the CRI log file (kubelet renamed it for rotation).
    ReopenLog,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    Ok,
    Status(ContainerStatus),
    Exec(ExecOutput),
    Error { message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShimState {
    Created,
    Running,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub state: ShimState,
    /// The container init's pid as seen from the host.
    pub pid: i32,
    /// Unix ns; 0 while never started.
    pub started_at_ns: i64,
    pub exit: Option<ExitInfo>,
}

/// What `exit.json` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Shell convention: 128 + signal when killed by a signal.
    pub exit_code: i32,
    pub exited_at_ns: i64,
    /// 0 if the container was never started.
    pub started_at_ns: i64,
    pub oom_killed: bool,
    /// The signal that killed the init, 0 if it exited normally.
    pub signal: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    /// -1 when the command timed out.
    pub exit_code: i32,
    #[serde(with = "base64_bytes")]
    pub stdout: Vec<u8>,
    #[serde(with = "base64_bytes")]
    pub stderr: Vec<u8>,
    pub timed_out: bool,
}

/// Encode a message as one JSON line (with the trailing newline).
pub fn encode_line<T: Serialize>(message: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    Ok(line)
}

/// Decode one JSON line (a trailing newline is allowed).
pub fn decode_line<'a, T: Deserialize<'a>>(line: &'a [u8]) -> Result<T, serde_json::Error> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    serde_json::from_slice(line)
}

/// Standard base64 (RFC 4648, padded), enough for exec output; no dependency for 60 lines.
mod base64_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            out.push(ALPHABET[(n >> 18) as usize & 63] as char);
            out.push(ALPHABET[(n >> 12) as usize & 63] as char);
            out.push(if chunk.len() > 1 {
                ALPHABET[(n >> 6) as usize & 63] as char
            } else {
                '='
            });
            out.push(if chunk.len() > 2 {
                ALPHABET[n as usize & 63] as char
            } else {
                '='
            });
        }
        out
    }

    pub fn decode(text: &str) -> Result<Vec<u8>, String> {
        fn value(c: u8) -> Result<u32, String> {
            match c {
                b'A'..=b'Z' => Ok(u32::from(c - b'A')),
                b'a'..=b'z' => Ok(u32::from(c - b'a') + 26),
                b'0'..=b'9' => Ok(u32::from(c - b'0') + 52),
                b'+' => Ok(62),
                b'/' => Ok(63),
                _ => Err(format!("invalid base64 byte {c:#x}")),
            }
        }
        let bytes = text.as_bytes();
        if !bytes.len().is_multiple_of(4) {
            return Err("base64 length is not a multiple of 4".into());
        }
        let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
        for quad in bytes.chunks(4) {
            let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 {
                return Err("too much base64 padding".into());
            }
            let mut n = 0u32;
            for &c in &quad[..4 - pad] {
                n = (n << 6) | value(c)?;
            }
            n <<= 6 * pad as u32;
            out.push((n >> 16) as u8);
            if pad < 2 {
                out.push((n >> 8) as u8);
            }
            if pad < 1 {
                out.push(n as u8);
            }
        }
        Ok(out)
    }

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        decode(&text).map_err(serde::de::Error::custom)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn round_trips_every_length_mod_3() {
            for len in 0..10 {
                let data: Vec<u8> = (0..len).map(|i| (i * 37 + 250) as u8).collect();
                assert_eq!(super::decode(&super::encode(&data)).unwrap(), data);
            }
            assert_eq!(super::encode(b"hi\n"), "aGkK");
            assert_eq!(super::encode(b"h"), "aA==");
            assert!(super::decode("a===").is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(value: &T) -> T
    where
        T: Serialize + for<'a> Deserialize<'a>,
    {
        let line = encode_line(value).unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        decode_line(&line).unwrap()
    }

    #[test]
    fn requests_round_trip_with_op_tag() {
        let requests = [
            Request::Start,
            Request::Signal {
                signal: 15,
                all: true,
            },
            Request::Status,
            Request::Wait { timeout_ms: 1500 },
            Request::Exec {
                args: vec!["sh".into(), "-c".into(), "echo 'a\nb'".into()],
                env: vec!["A=1".into()],
                cwd: Some("/tmp".into()),
                timeout_ms: 0,
            },
            Request::ReopenLog,
        ];
        for request in &requests {
            assert_eq!(&round_trip(request), request);
        }
        assert_eq!(
            String::from_utf8(
                encode_line(&Request::Signal {
                    signal: 9,
                    all: false
                })
                .unwrap()
            )
            .unwrap(),
            "{\"op\":\"signal\",\"signal\":9,\"all\":false}\n"
        );
        assert_eq!(
            decode_line::<Request>(b"{\"op\":\"reopen_log\"}").unwrap(),
            Request::ReopenLog
        );
    }

    #[test]
    fn responses_round_trip_with_result_tag() {
        let exit = ExitInfo {
            exit_code: 143,
            exited_at_ns: 2,
            started_at_ns: 1,
            oom_killed: false,
            signal: 15,
        };
        let responses = [
            Response::Ok,
            Response::Error {
                message: "no such container".into(),
            },
            Response::Status(ContainerStatus {
                state: ShimState::Stopped,
                pid: 42,
                started_at_ns: 1,
                exit: Some(exit),
            }),
            Response::Status(ContainerStatus {
                state: ShimState::Created,
                pid: 42,
                started_at_ns: 0,
                exit: None,
            }),
            Response::Exec(ExecOutput {
                exit_code: 0,
                stdout: b"hi\n".to_vec(),
                stderr: (0..=255).collect(),
                timed_out: false,
            }),
        ];
        for response in &responses {
            assert_eq!(&round_trip(response), response);
        }
        let text = String::from_utf8(encode_line(&responses[2]).unwrap()).unwrap();
        assert!(
            text.starts_with("{\"result\":\"status\",\"state\":\"stopped\""),
            "{text}"
        );
    }
}
