//! [`CountingProxy`]: a TCP proxy in front of a registry that records the HTTP request
//! lines passing through, so a test can count how often a blob was downloaded.
//! (The registry fixture runs with its access log off.)

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forwards every connection on a free loopback port to `upstream`.
pub struct CountingProxy {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    /// Starts a proxy to `upstream` (`host:port`). Runs on the harness's client runtime so
    /// it keeps forwarding while the test thread blocks.
    pub async fn start(upstream: &str) -> CountingProxy {
        let upstream = upstream.to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let accept_task = crate::cri::client_runtime().spawn(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy port");
            let _ = addr_tx.send(listener.local_addr().expect("proxy addr"));
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        forward(client, server, recorded).await;
                    }
                });
            }
        });
        let addr = addr_rx.await.expect("proxy started");
        CountingProxy { addr, requests, accept_task }
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Request lines seen so far (`GET /v2/... HTTP/1.1`).
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// How many `GET` requests named `needle` (e.g. a blob digest).
    pub fn gets_of(&self, needle: &str) -> usize {
        self.requests().iter().filter(|r| r.starts_with("GET ") && r.contains(needle)).count()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

async fn forward(client: TcpStream, server: TcpStream, recorded: Arc<Mutex<Vec<String>>>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        // Pulls send no request bodies, so the client's bytes are request heads only:
        // every line that starts with a method is a request line.
        let mut buf = vec![0u8; 16 * 1024];
        let mut pending = Vec::new();
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&pending[..end]).into_owned();
                pending.drain(..end + 2);
                if ["GET ", "HEAD ", "POST ", "PUT ", "PATCH ", "DELETE "].iter().any(|m| line.starts_with(m)) {
                    if let Ok(mut r) = recorded.lock() {
                        r.push(line);
                    }
                }
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}
