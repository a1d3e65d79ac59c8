//! [`TokenAuthProxy`]: puts Docker-style Bearer token auth in front of a registry that has
//! none, so tests can exercise berthd's token flow (challenge, token service, refresh
//! tokens, ready-made registry tokens) without a real token server.
//!
//! - `/v2/...` without `Authorization: Bearer <token>` answers 401 with a
//!   `WWW-Authenticate: Bearer realm=".../token",service=...,scope=...` challenge;
//!   with the right token the request goes to the registry and the answer comes back as is.
//! - `GET /token` with the right HTTP Basic credentials hands out the token.
//! - `POST /token` with `grant_type=refresh_token` and the right refresh token hands out
//!   the token (the OAuth2 flow behind CRI's `identity_token`).
//!
//! It serves one request per connection and says `Connection: close`, which keeps the
//! HTTP handling small: no keep-alive bookkeeping, and forwarded answers end at EOF.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The `service` the challenge names.
pub const SERVICE: &str = "berth-test";

/// What the proxy accepts.
#[derive(Clone, Debug)]
pub struct TokenAuthSettings {
    /// HTTP Basic credentials the token service accepts on `GET /token`.
    pub username: String,
    pub password: String,
    /// Refresh token the token service accepts on `POST /token`.
    pub refresh_token: String,
    /// The one access token handed out and accepted on `/v2/`.
    pub access_token: String,
}

/// One request to the token service, as the proxy saw it.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub method: String,
    /// Query parameters (GET) or form fields (POST).
    pub params: HashMap<String, String>,
    /// Whether the proxy handed out a token.
    pub granted: bool,
}

#[derive(Default)]
struct Log {
    token_requests: Vec<TokenRequest>,
    /// Registry requests passed on to the registry (`GET /v2/... `).
    forwarded: Vec<String>,
    /// Registry requests refused with a challenge.
    challenged: Vec<String>,
}

/// A token-auth front for a registry on a free loopback port.
pub struct TokenAuthProxy {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TokenAuthProxy {
    /// Starts a proxy in front of `upstream` (`host:port`). Runs on the harness's client
    /// runtime so it keeps serving while the test thread blocks.
    pub async fn start(upstream: &str, settings: TokenAuthSettings) -> TokenAuthProxy {
        let upstream = upstream.to_string();
        let log = Arc::new(Mutex::new(Log::default()));
        let shared_log = log.clone();
        let settings = Arc::new(settings);
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let accept_task = crate::cri::client_runtime().spawn(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind token proxy port");
            let addr = listener.local_addr().expect("token proxy addr");
            let _ = addr_tx.send(addr);
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let log = shared_log.clone();
                let settings = settings.clone();
                tokio::spawn(async move {
                    let _ = serve(client, addr, &upstream, &settings, &log).await;
                });
            }
        });
        let addr = addr_rx.await.expect("token proxy started");
        TokenAuthProxy { addr, log, accept_task }
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Requests the token service saw so far.
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.log.lock().map(|l| l.token_requests.clone()).unwrap_or_default()
    }

    /// Registry request lines passed on with a valid token.
    pub fn forwarded(&self) -> Vec<String> {
        self.log.lock().map(|l| l.forwarded.clone()).unwrap_or_default()
    }

    /// Registry request lines answered with a 401 challenge.
    pub fn challenged(&self) -> Vec<String> {
        self.log.lock().map(|l| l.challenged.clone()).unwrap_or_default()
    }
}

impl Drop for TokenAuthProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

struct RequestHead {
    method: String,
    target: String,
    request_line: String,
    /// Header lines as received, without the request line.
    header_lines: Vec<String>,
}

impl RequestHead {
    fn header(&self, name: &str) -> Option<&str> {
        self.header_lines.iter().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Reads up to the end of the request head; returns the head and any body bytes already read.
async fn read_head(client: &mut TcpStream) -> std::io::Result<(RequestHead, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("request head too large"));
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed before the request head ended"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let rest = buf[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let header_lines = lines.map(str::to_string).collect();
    Ok((RequestHead { method, target, request_line, header_lines }, rest))
}

async fn serve(
    mut client: TcpStream,
    own_addr: SocketAddr,
    upstream: &str,
    settings: &TokenAuthSettings,
    log: &Mutex<Log>,
) -> std::io::Result<()> {
    let (head, mut body) = read_head(&mut client).await?;
    let (path, query) = head.target.split_once('?').unwrap_or((head.target.as_str(), ""));
    if path == "/token" {
        let (params, granted) = match head.method.as_str() {
            "GET" => {
                let params = parse_form(query);
                (params, basic_credentials_match(&head, settings))
            }
            "POST" => {
                let length: usize = head.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                while body.len() < length {
                    let mut chunk = [0u8; 8192];
                    let n = client.read(&mut chunk).await?;
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
                let params = parse_form(&String::from_utf8_lossy(&body));
                let granted = params.get("grant_type").map(String::as_str) == Some("refresh_token")
                    && params.get("refresh_token") == Some(&settings.refresh_token);
                (params, granted)
            }
            _ => (HashMap::new(), false),
        };
        if let Ok(mut l) = log.lock() {
            l.token_requests.push(TokenRequest { method: head.method.clone(), params, granted });
        }
        let (status, json) = if !granted {
            ("401 Unauthorized", r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_string())
        } else if head.method == "GET" {
            ("200 OK", format!(r#"{{"token":"{0}","access_token":"{0}"}}"#, settings.access_token))
        } else {
            ("200 OK", format!(r#"{{"access_token":"{}"}}"#, settings.access_token))
        };
        return respond(&mut client, &head.method, status, &[("Content-Type", "application/json")], &json).await;
    }

    let expected = format!("Bearer {}", settings.access_token);
    let authorized = head.header("authorization").is_some_and(|v| v == expected);
    if !authorized {
        if let Ok(mut l) = log.lock() {
            l.challenged.push(head.request_line.clone());
        }
        let mut challenge = format!(r#"Bearer realm="http://{own_addr}/token",service="{SERVICE}""#);
        if let Some(repo) = repository_of(path) {
            challenge.push_str(&format!(r#",scope="repository:{repo}:pull""#));
        }
        let json = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        let headers = [
            ("Content-Type", "application/json"),
            ("WWW-Authenticate", challenge.as_str()),
            ("Docker-Distribution-API-Version", "registry/2.0"),
        ];
        return respond(&mut client, &head.method, "401 Unauthorized", &headers, json).await;
    }

    if let Ok(mut l) = log.lock() {
        l.forwarded.push(head.request_line.clone());
    }
    // Host stays the proxy's, so the registry builds any Location URLs pointing back here;
    // the registry itself has no auth, so the Authorization header does no harm.
    let mut server = TcpStream::connect(upstream).await?;
    let mut forwarded_head = format!("{}\r\n", head.request_line);
    for line in &head.header_lines {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        forwarded_head.push_str(line);
        forwarded_head.push_str("\r\n");
    }
    forwarded_head.push_str("Connection: close\r\n\r\n");
    server.write_all(forwarded_head.as_bytes()).await?;
    // Pulls send no bodies; pass on whatever came along anyway.
    server.write_all(&body).await?;
    // One request per connection: the registry's answer ending (EOF, as asked with
    // `Connection: close`) ends the exchange.
    tokio::io::copy(&mut server, &mut client).await?;
    client.shutdown().await?;
    Ok(())
}

async fn respond(
    client: &mut TcpStream,
    method: &str,
    status: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    if method != "HEAD" {
        out.push_str(body);
    }
    client.write_all(out.as_bytes()).await?;
    client.shutdown().await
}

fn basic_credentials_match(head: &RequestHead, settings: &TokenAuthSettings) -> bool {
    let Some(value) = head.header("authorization") else { return false };
    let Some(encoded) = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")) else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    let Ok(text) = String::from_utf8(decoded) else { return false };
    text.split_once(':') == Some((settings.username.as_str(), settings.password.as_str()))
}

/// `/v2/<name>/(manifests|blobs|tags)/...` -> `<name>`; `None` for `/v2/` itself.
fn repository_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v2/")?;
    ["/manifests/", "/blobs/", "/tags/"]
        .iter()
        .filter_map(|marker| rest.rfind(marker).map(|i| rest[..i].to_string()))
        .max_by_key(String::len)
        .filter(|name| !name.is_empty())
}

fn parse_form(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
