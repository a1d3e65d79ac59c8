//! The messages between the caller and the container's process on a SOCK_SEQPACKET pair
//! (one datagram per message, EOF when the other side is gone). The child's end is
//! close-on-exec: EOF after "start" means the exec succeeded.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};

#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    /// intermediate -> caller: the container process's pid (in the caller's pid namespace).
    Pid(i32),
    /// caller -> child: placed in the cgroup, go on with the setup.
    Go,
    /// child -> caller: set up, waiting for start.
    Ready,
    /// caller -> child: exec now.
    Start,
    /// child -> caller: this step failed (the child exits).
    Error(String),
}

/// Longest error message sent; the rest is cut.
const MAX_MESSAGE: usize = 4000;

pub fn pair() -> Result<(OwnedFd, OwnedFd), Errno> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
}

pub fn send_msg(fd: &OwnedFd, msg: &Msg) -> Result<(), Errno> {
    let mut buf = Vec::with_capacity(16);
    match msg {
        Msg::Pid(pid) => {
            buf.push(b'P');
            buf.extend_from_slice(&pid.to_le_bytes());
        }
        Msg::Go => buf.push(b'G'),
        Msg::Ready => buf.push(b'R'),
        Msg::Start => buf.push(b'S'),
        Msg::Error(text) => {
            buf.push(b'E');
            let mut end = text.len().min(MAX_MESSAGE);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            buf.extend_from_slice(&text.as_bytes()[..end]);
        }
    }
    loop {
        // MSG_NOSIGNAL: a peer that died is an EPIPE error, not a SIGPIPE.
        match send(fd.as_raw_fd(), &buf, MsgFlags::MSG_NOSIGNAL) {
            Err(Errno::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}

/// The next message; None when the other side closed its end.
pub fn recv_msg(fd: &OwnedFd) -> Result<Option<Msg>, Errno> {
    let mut buf = [0u8; MAX_MESSAGE + 8];
    let n = loop {
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Err(Errno::EINTR) => continue,
            other => break other?,
        }
    };
    if n == 0 {
        return Ok(None);
    }
    let body = &buf[1..n];
    Ok(Some(match buf[0] {
        b'P' if body.len() == 4 => {
            Msg::Pid(i32::from_le_bytes([body[0], body[1], body[2], body[3]]))
        }
        b'G' => Msg::Go,
        b'R' => Msg::Ready,
        b'S' => Msg::Start,
        b'E' => Msg::Error(String::from_utf8_lossy(body).into_owned()),
        _ => return Err(Errno::EBADMSG),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_eof() {
        let (a, b) = pair().unwrap();
        for msg in [
            Msg::Pid(4242),
            Msg::Go,
            Msg::Ready,
            Msg::Start,
            Msg::Error("mount /x: EPERM".into()),
        ] {
            send_msg(&a, &msg).unwrap();
            assert_eq!(recv_msg(&b).unwrap(), Some(msg));
        }
        drop(a);
        assert_eq!(recv_msg(&b).unwrap(), None);
    }
}
