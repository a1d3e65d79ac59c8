//! The signal StopContainer sends first: the image's `StopSignal` (Dockerfile `STOPSIGNAL`),
//! SIGTERM when the image names none.

use std::str::FromStr;

use nix::sys::signal::Signal;

/// SIGTERM, what a container gets when its image names no stop signal.
pub const DEFAULT_STOP_SIGNAL: i32 = libc::SIGTERM;

/// Parses a signal as images write it: `SIGQUIT`, `QUIT`, `sigquit`, `3`, `SIGRTMIN+3`.
pub fn parse_signal(text: &str) -> Result<i32, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty signal name".into());
    }
    if let Ok(number) = text.parse::<i32>() {
        return if (1..=libc::SIGRTMAX()).contains(&number) {
            Ok(number)
        } else {
            Err(format!("signal number {number} is out of range"))
        };
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    if let Some(rest) = name.strip_prefix("SIGRTMIN") {
        return realtime(libc::SIGRTMIN(), rest, 1, text);
    }
    if let Some(rest) = name.strip_prefix("SIGRTMAX") {
        return realtime(libc::SIGRTMAX(), rest, -1, text);
    }
    Signal::from_str(&name).map(|signal| signal as i32).map_err(|_| format!("unknown signal {text:?}"))
}

/// `SIGRTMIN+n` / `SIGRTMAX-n`.
fn realtime(base: i32, offset: &str, direction: i32, original: &str) -> Result<i32, String> {
    let bad = || format!("unknown signal {original:?}");
    let n = if offset.is_empty() {
        0
    } else {
        let (sign, digits) = offset.split_at(1);
        let sign_ok = (direction > 0 && sign == "+") || (direction < 0 && sign == "-");
        if !sign_ok {
            return Err(bad());
        }
        digits.parse::<i32>().map_err(|_| bad())?
    };
    let number = base + direction * n;
    if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&number) {
        Ok(number)
    } else {
        Err(bad())
    }
}

/// The image's stop signal, or SIGTERM. A signal berth cannot parse falls back to
/// SIGTERM with a warning rather than making the container unstoppable.
pub fn stop_signal(image_stop_signal: Option<&str>) -> i32 {
    match image_stop_signal.map(str::trim).filter(|s| !s.is_empty()) {
        None => DEFAULT_STOP_SIGNAL,
        Some(name) => parse_signal(name).unwrap_or_else(|e| {
            tracing::warn!(stop_signal = name, error = %e, "image stop signal not understood; using SIGTERM");
            DEFAULT_STOP_SIGNAL
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse_signal("SIGQUIT"), Ok(libc::SIGQUIT));
        assert_eq!(parse_signal("QUIT"), Ok(libc::SIGQUIT));
        assert_eq!(parse_signal("sigusr1"), Ok(libc::SIGUSR1));
        assert_eq!(parse_signal("9"), Ok(9));
        assert_eq!(parse_signal(" 15 "), Ok(15));
        assert_eq!(parse_signal("SIGRTMIN"), Ok(libc::SIGRTMIN()));
        assert_eq!(parse_signal("SIGRTMIN+3"), Ok(libc::SIGRTMIN() + 3));
        assert_eq!(parse_signal("RTMAX-1"), Ok(libc::SIGRTMAX() - 1));
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("100").is_err());
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("SIGRTMIN-1").is_err());
        assert!(parse_signal("").is_err());
    }

    #[test]
    fn default_is_sigterm() {
        assert_eq!(stop_signal(None), libc::SIGTERM);
        assert_eq!(stop_signal(Some("")), libc::SIGTERM);
        assert_eq!(stop_signal(Some("SIGINT")), libc::SIGINT);
        assert_eq!(stop_signal(Some("bogus")), libc::SIGTERM);
    }
}
