//! Pulls people can watch: berth.v1.Progress (`cri-server/proto/berth.proto`) streams a
//! snapshot of every layer a few times a second, and this module draws it on stderr:
//! a bar per layer on a terminal, plain lines otherwise (CI logs, pipes, tests).
//!
//! The service is berth's own, beside CRI on the same socket. When berthd does not offer
//! it (UNIMPLEMENTED: an older berthd, another CRI runtime on the socket), berthctl pulls
//! with plain CRI PullImage and says so once.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use k8s_cri::v1::{AuthConfig, PullImageRequest};
use tonic::Code;

use crate::client::{Connection, CtlError};

/// The generated client of `berth.v1` (ctl/build.rs).
pub mod proto {
    tonic::include_proto!("berth.v1");
}

use proto::progress_client::ProgressClient;
use proto::{LayerProgress, LayerState, PullProgressEvent, PullWithProgressRequest};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Display {
    /// Bars redrawn in place (stderr is a terminal).
    Bar,
    /// One line per layer event, for logs and pipes.
    Plain,
    /// Nothing (`pull -q`).
    Quiet,
}

impl Display {
    /// `BERTHCTL_PROGRESS=bar|plain|none` if set, else bars on a terminal and plain lines
    /// otherwise.
    pub fn for_stderr() -> Display {
        match std::env::var("BERTHCTL_PROGRESS").ok().as_deref() {
            Some("bar") => Display::Bar,
            Some("plain") => Display::Plain,
            Some("none" | "quiet") => Display::Quiet,
            _ if std::io::stderr().is_terminal() => Display::Bar,
            _ => Display::Plain,
        }
    }
}

/// Pulls what `request` names, showing progress on stderr with `display`; returns the
/// image ref (the image id), as PullImage answers.
pub async fn pull(conn: &Connection, request: PullImageRequest, display: Display) -> Result<String, CtlError> {
    let image = request.image.as_ref().map(|spec| spec.image.clone()).unwrap_or_default();
    let what = format!("pull {image}");
    // Pulls take as long as they take: no per-request timeout.
    let conn = conn.long();
    // A pod config may change how the runtime pulls (runtime class); only CRI carries it.
    if request.sandbox_config.is_none() {
        let channel = conn.channel().await?;
        let auth = request.auth.clone().unwrap_or_default();
        let progress_request = PullWithProgressRequest {
            image: image.clone(),
            username: auth.username,
            password: auth.password,
            auth: auth.auth,
            identity_token: auth.identity_token,
            registry_token: auth.registry_token,
        };
        match ProgressClient::new(channel).pull_with_progress(progress_request).await {
            Ok(response) => return watch(&conn, &what, &image, response.into_inner(), display).await,
            Err(status) if status.code() == Code::Unimplemented => {
                if display != Display::Quiet {
                    eprintln!("berthd offers no pull progress (berth.v1.Progress); pulling without it");
                }
            }
            Err(status) => return Err(conn.error(&what, status)),
        }
    }
    let mut images = conn.images().await?;
    let response = images.pull_image(request).await.map_err(|status| conn.error(&what, status))?;
    Ok(response.into_inner().image_ref)
}

async fn watch(
    conn: &Connection,
    what: &str,
    image: &str,
    mut stream: tonic::Streaming<PullProgressEvent>,
    display: Display,
) -> Result<String, CtlError> {
    let mut view = View::new(image, display);
    let mut stderr = std::io::stderr();
    loop {
        match stream.message().await {
            Ok(Some(event)) => {
                // A reader that went away (EPIPE) does not stop the pull.
                let _ = stderr.write_all(view.update(&event).as_bytes());
                if !event.image_ref.is_empty() {
                    let _ = stderr.write_all(view.summary(&event).as_bytes());
                    return Ok(event.image_ref);
                }
            }
            Ok(None) => {
                return Err(CtlError::Runtime(format!(
                    "{what}: berthd ended the progress stream without a result; `berthctl images` shows whether the image arrived"
                )))
            }
            Err(status) => {
                let _ = stderr.write_all(view.abandon().as_bytes());
                return Err(conn.error(what, status));
            }
        }
    }
}

/// What a layer looked like at the last snapshot, for plain mode's "only when it changed".
#[derive(Clone, Debug)]
struct Seen {
    state: i32,
    /// When the last progress line of this layer was printed (plain mode).
    last_line_ns: u64,
}

/// Turns snapshots into text for stderr.
pub struct View {
    image: String,
    display: Display,
    seen: HashMap<String, Seen>,
    /// Lines of the last bar frame, to move the cursor back over them.
    drawn_lines: usize,
}

/// Plain mode prints a downloading layer's progress at most this often.
pub const PLAIN_LINE_INTERVAL_NS: u64 = 2_000_000_000;

impl View {
    pub fn new(image: &str, display: Display) -> View {
        View { image: image.to_string(), display, seen: HashMap::new(), drawn_lines: 0 }
    }

    /// The text to write for `event`.
    pub fn update(&mut self, event: &PullProgressEvent) -> String {
        for layer in &event.layers {
            self.seen.entry(layer.digest.clone()).or_insert(Seen { state: -1, last_line_ns: 0 });
        }
        match self.display {
            Display::Quiet => String::new(),
            Display::Plain => self.plain_lines(event),
            Display::Bar => self.bar_frame(event),
        }
    }

    fn plain_lines(&mut self, event: &PullProgressEvent) -> String {
        let now = event.elapsed_ns;
        let mut out = String::new();
        for layer in &event.layers {
            let Some(seen) = self.seen.get_mut(&layer.digest) else { continue };
            let changed = seen.state != layer.state;
            let due = now.saturating_sub(seen.last_line_ns) >= PLAIN_LINE_INTERVAL_NS;
            let line = match LayerState::try_from(layer.state) {
                Ok(LayerState::Exists) if changed => Some("already present".to_string()),
                Ok(LayerState::Done) if changed => {
                    let took = now.saturating_sub(layer.started_ns);
                    Some(format!(
                        "done: {} in {} ({})",
                        size(layer.bytes_total),
                        seconds(took),
                        rate(layer.bytes_total, took)
                    ))
                }
                Ok(LayerState::Downloading) if changed => Some(format!("downloading {}", size(layer.bytes_total))),
                Ok(LayerState::Downloading) if due => Some(progress_words(layer, now)),
                _ => None,
            };
            seen.state = layer.state;
            if let Some(line) = line {
                seen.last_line_ns = now;
                out.push_str(&format!("{}: {line}\n", short_digest(&layer.digest)));
            }
        }
        out
    }

    fn bar_frame(&mut self, event: &PullProgressEvent) -> String {
        let now = event.elapsed_ns;
        let mut out = String::new();
        // Back to the top of the previous frame, then every line redrawn and cleared.
        if self.drawn_lines > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn_lines));
        }
        out.push_str(&format!("\r\x1b[2KPulling {}\n", self.image));
        for layer in &event.layers {
            let Some(seen) = self.seen.get_mut(&layer.digest) else { continue };
            seen.state = layer.state;
            let status = match LayerState::try_from(layer.state) {
                Ok(LayerState::Exists) => "already present".to_string(),
                Ok(LayerState::Done) => format!("{} done", size(layer.bytes_total)),
                _ => progress_words(layer, now),
            };
            out.push_str(&format!(
                "\r\x1b[2K  {}  {}  {status}\n",
                short_digest(&layer.digest),
                bar(layer.bytes_done, layer.bytes_total, 24)
            ));
        }
        self.drawn_lines = event.layers.len() + 1;
        out
    }

    /// The closing line once the image is stored.
    pub fn summary(&self, event: &PullProgressEvent) -> String {
        if self.display == Display::Quiet {
            return String::new();
        }
        let downloaded: u64 = event
            .layers
            .iter()
            .filter(|layer| layer.state != LayerState::Exists as i32)
            .map(|layer| layer.bytes_done)
            .sum();
        let present = event.layers.iter().filter(|layer| layer.state == LayerState::Exists as i32).count();
        let count = event.layers.len();
        format!(
            "pulled {}: {count} layer{} ({} already present), {} downloaded in {} ({})\n",
            self.image,
            if count == 1 { "" } else { "s" },
            present,
            size(downloaded),
            seconds(event.elapsed_ns),
            rate(downloaded, event.elapsed_ns)
        )
    }

    /// The pull failed: a bar frame stays as it was; the error follows on its own line.
    pub fn abandon(&self) -> String {
        String::new()
    }
}

/// `45% 560.0 kB of 1.2 MB, 3.2 MB/s, 1s left`
fn progress_words(layer: &LayerProgress, now: u64) -> String {
    let took = now.saturating_sub(layer.started_ns);
    let percent = layer.bytes_done.saturating_mul(100).checked_div(layer.bytes_total).unwrap_or(100);
    let left = layer.bytes_total.saturating_sub(layer.bytes_done);
    let eta = if layer.bytes_done == 0 || took == 0 {
        "?".to_string()
    } else {
        seconds((left as u128 * took as u128 / layer.bytes_done as u128) as u64)
    };
    format!(
        "{percent}% {} of {}, {}, {eta} left",
        size(layer.bytes_done),
        size(layer.bytes_total),
        rate(layer.bytes_done, took)
    )
}

/// `[##########..............]`
fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 { width } else { ((done.min(total) as u128 * width as u128) / total as u128) as usize };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// `sha256:3f2a1b9c0d4e...` as `3f2a1b9c0d4e`, as docker shows layers.
fn short_digest(digest: &str) -> &str {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    &hex[..hex.len().min(12)]
}

/// Decimal units, as registries and docker report sizes.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["kB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn rate(bytes: u64, nanos: u64) -> String {
    if nanos == 0 {
        return "- B/s".to_string();
    }
    let per_second = (bytes as u128 * 1_000_000_000 / nanos as u128) as u64;
    format!("{}/s", size(per_second))
}

fn seconds(nanos: u64) -> String {
    let secs = nanos as f64 / 1e9;
    if secs < 10.0 {
        format!("{secs:.1}s")
    } else if secs < 120.0 {
        format!("{secs:.0}s")
    } else {
        format!("{}m{:02}s", (secs / 60.0) as u64, (secs % 60.0) as u64)
    }
}

/// A CRI PullImage request for `image` with `auth`.
pub fn pull_request(image: &str, auth: Option<AuthConfig>) -> PullImageRequest {
    PullImageRequest {
        image: Some(k8s_cri::v1::ImageSpec { image: image.to_string(), ..Default::default() }),
        auth,
        sandbox_config: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(digest: &str, done: u64, total: u64, state: LayerState) -> LayerProgress {
        LayerProgress {
            digest: digest.into(),
            bytes_done: done,
            bytes_total: total,
            state: state as i32,
            started_ns: 0,
        }
    }

    fn event(layers: Vec<LayerProgress>, elapsed_ms: u64, image_ref: &str) -> PullProgressEvent {
        PullProgressEvent { layers, image_ref: image_ref.into(), elapsed_ns: elapsed_ms * 1_000_000 }
    }

    const A: &str = "sha256:aaaaaaaaaaaa0000";
    const B: &str = "sha256:bbbbbbbbbbbb1111";

    #[test]
    fn plain_mode_prints_state_changes_and_rate_limited_progress() {
        let mut view = View::new("busybox", Display::Plain);
        let first = view.update(&event(
            vec![layer(A, 0, 2_000_000, LayerState::Downloading), layer(B, 10, 10, LayerState::Exists)],
            0,
            "",
        ));
        assert_eq!(first, "aaaaaaaaaaaa: downloading 2.0 MB\nbbbbbbbbbbbb: already present\n");
        // Within the interval: nothing new to say.
        assert_eq!(view.update(&event(vec![layer(A, 500_000, 2_000_000, LayerState::Downloading)], 1000, "")), "");
        let later = view.update(&event(vec![layer(A, 1_000_000, 2_000_000, LayerState::Downloading)], 2000, ""));
        assert_eq!(later, "aaaaaaaaaaaa: 50% 1.0 MB of 2.0 MB, 500.0 kB/s, 2.0s left\n");
        let done = event(
            vec![layer(A, 2_000_000, 2_000_000, LayerState::Done), layer(B, 10, 10, LayerState::Exists)],
            2500,
            "sha256:id",
        );
        assert_eq!(view.update(&done), "aaaaaaaaaaaa: done: 2.0 MB in 2.5s (800.0 kB/s)\n");
        assert_eq!(
            view.summary(&done),
            "pulled busybox: 2 layers (1 already present), 2.0 MB downloaded in 2.5s (800.0 kB/s)\n"
        );
    }

    #[test]
    fn bar_mode_redraws_in_place() {
        let mut view = View::new("busybox", Display::Bar);
        let first = view.update(&event(vec![layer(A, 1_000_000, 2_000_000, LayerState::Downloading)], 1000, ""));
        assert!(first.starts_with("\r\x1b[2KPulling busybox\n"), "{first:?}");
        assert!(first.contains("[############............]  50% 1.0 MB of 2.0 MB, 1.0 MB/s"), "{first:?}");
        let second = view.update(&event(vec![layer(A, 2_000_000, 2_000_000, LayerState::Done)], 2000, ""));
        assert!(second.starts_with("\x1b[2A"), "moves up over the previous frame: {second:?}");
        assert!(second.contains("2.0 MB done"), "{second:?}");
        assert_eq!(
            View::new("x", Display::Quiet).update(&event(vec![layer(A, 1, 2, LayerState::Downloading)], 1, "")),
            ""
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(size(999), "999 B");
        assert_eq!(size(1_500), "1.5 kB");
        assert_eq!(size(212_000_000), "212.0 MB");
        assert_eq!(short_digest("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(seconds(125_000_000_000), "2m05s");
    }
}
