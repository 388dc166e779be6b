//! A fault-injecting HTTP/1.1 proxy for cairn's tests, on loopback.
//!
//! [`FaultProxy`] listens on `127.0.0.1:0` and forwards every request to a real store
//! (LocalStack, fake-gcs-server), one upstream connection per request. Before each
//! request it draws a [`Fault`] from its [`Profile`] (seeded, so a run can be
//! repeated) or from a script set by the test, and either forwards the request
//! untouched or:
//!
//! - answers `503`/`500`/`429` (with `Retry-After`) without forwarding;
//! - resets the connection before forwarding (the store never sees the request);
//! - forwards, lets the store apply the request, then resets the connection or cuts
//!   the answer's body off halfway;
//! - stalls: sends nothing for a while, then closes;
//! - forwards and sends the answer's body slowly, in small pieces.
//!
//! Every injected fault is counted by class ([`FaultProxy::counts`]).
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward it and relay the answer.
    None,
    /// Answer this status (`503`, `500`, `429`, ...) without forwarding; `429` and
    /// `503` carry `Retry-After` when `retry_after` is set (seconds).
    Status {
        /// The status code.
        code: u16,
        /// `Retry-After`, in seconds.
        retry_after: Option<u32>,
    },
    /// Reset the connection before the request reaches the store.
    ResetBefore,
    /// Forward it (the store applies it), then reset the connection instead of
    /// answering.
    ResetAfter,
    /// Forward it, then send the answer's head and only half of its body, and close.
    Truncate,
    /// Send nothing for this long, then close (the store never sees the request).
    Stall(Duration),
    /// Forward it, then send the answer in pieces of `chunk` bytes, `delay` apart.
    Slow {
        /// Bytes per piece.
        chunk: usize,
        /// Pause between pieces.
        delay: Duration,
    },
}

impl Fault {
    /// The class a fault is counted under.
    pub fn class(&self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Status { code: 503, .. } => "503",
            Fault::Status { code: 500, .. } => "500",
            Fault::Status { code: 429, .. } => "429",
            Fault::Status { .. } => "status",
            Fault::ResetBefore => "reset-before",
            Fault::ResetAfter => "reset-after",
            Fault::Truncate => "truncated-body",
            Fault::Stall(_) => "stall",
            Fault::Slow { .. } => "slow-body",
        }
    }
}

/// What one request looks like to a script.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// How many requests the proxy saw before this one.
    pub seq: u64,
    /// The request's `Content-Range` header, if any (a resumable upload's chunk).
    pub content_range: Option<String>,
    /// The length of the request's body as received.
    pub body_len: usize,
}

/// Faults drawn at random, per request, with these probabilities (the rest is
/// forwarded untouched). `Truncate` is drawn only for requests whose answer has a
/// body worth cutting (`GET`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Profile {
    /// `503` (S3 `SlowDown`, GCS backend error).
    pub p503: f64,
    /// `500`.
    pub p500: f64,
    /// `429` with `Retry-After: 1`.
    pub p429: f64,
    /// A reset before forwarding.
    pub reset_before: f64,
    /// A reset after the store applied the request.
    pub reset_after: f64,
    /// A `GET` answer cut off halfway.
    pub truncate: f64,
}

impl Profile {
    /// Draws the fault for one request.
    pub fn draw(&self, rng: &mut StdRng, req: &RequestInfo) -> Fault {
        let x: f64 = rng.random();
        let mut at = 0.0;
        let mut hit = |p: f64| {
            at += p;
            x < at
        };
        if hit(self.p503) {
            Fault::Status {
                code: 503,
                retry_after: None,
            }
        } else if hit(self.p500) {
            Fault::Status {
                code: 500,
                retry_after: None,
            }
        } else if hit(self.p429) {
            Fault::Status {
                code: 429,
                retry_after: Some(1),
            }
        } else if hit(self.reset_before) {
            Fault::ResetBefore
        } else if hit(self.reset_after) {
            Fault::ResetAfter
        } else if hit(self.truncate) && req.method == "GET" {
            Fault::Truncate
        } else {
            Fault::None
        }
    }
}

type Script = Arc<dyn Fn(&RequestInfo) -> Option<Fault> + Send + Sync>;

struct Shared {
    upstream: SocketAddr,
    flavor: Flavor,
    rng: Mutex<StdRng>,
    profile: Mutex<Profile>,
    script: Mutex<Option<Script>>,
    seq: AtomicU64,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

/// How injected error answers are written: as S3 or as GCS would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// XML `<Error><Code>SlowDown</Code>...`.
    S3,
    /// JSON `{"error":{"code":503,...}}`.
    Gcs,
}

/// The proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (an `http://host:port` URL), with no faults and the
    /// random draws seeded by `seed`.
    pub async fn start(upstream: &str, flavor: Flavor, seed: u64) -> FaultProxy {
        let host = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let upstream: SocketAddr = tokio::net::lookup_host(&host)
            .await
            .unwrap_or_else(|e| panic!("cannot resolve {host}: {e}"))
            .next()
            .expect("an address");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shared = Arc::new(Shared {
            upstream,
            flavor,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            profile: Mutex::new(Profile::default()),
            script: Mutex::new(None),
            seq: AtomicU64::new(0),
            counts: Mutex::new(BTreeMap::new()),
        });
        let s = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let _ = serve(s, client).await;
                });
            }
        });
        FaultProxy { addr, shared, task }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Draws faults from `profile` from now on.
    pub fn set_profile(&self, profile: Profile) {
        *self.shared.profile.lock().unwrap() = profile;
    }

    /// Decides faults with `script` first (its `None` falls back to the profile).
    pub fn set_script(
        &self,
        script: impl Fn(&RequestInfo) -> Option<Fault> + Send + Sync + 'static,
    ) {
        *self.shared.script.lock().unwrap() = Some(Arc::new(script));
    }

    /// No faults any more.
    pub fn clear(&self) {
        *self.shared.script.lock().unwrap() = None;
        *self.shared.profile.lock().unwrap() = Profile::default();
    }

    /// Faults injected so far, by class (`"none"` counts forwarded requests).
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.shared.counts.lock().unwrap().clone()
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.shared.seq.load(Ordering::Relaxed)
    }
}

/// One request's head as read from the client.
struct Head {
    method: String,
    target: String,
    /// Header lines, without the request line, as received.
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads bytes until `\r\n\r\n`; returns the head and whatever was read past it.
async fn read_head<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Vec<u8>>> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = buf[..end + 4].to_vec();
            buf.drain(..end + 4);
            return Ok(Some(head));
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(raw: &[u8]) -> Option<(String, Vec<(String, String)>)> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut lines = text.split("\r\n");
    let first = lines.next()?.to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some((first, headers))
}

/// Reads a body framed by `headers` (Content-Length or chunked); `buf` holds bytes
/// already read. Returns the body's bytes exactly as they were framed.
async fn read_body<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    headers: &[(String, String)],
    no_body: bool,
) -> std::io::Result<Vec<u8>> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    if no_body {
        return Ok(Vec::new());
    }
    if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        let mut out = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                fill(r, buf).await?;
            };
            let line = String::from_utf8_lossy(&buf[..line_end]).to_string();
            let size = usize::from_str_radix(line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    if let Some(i) = find(buf, b"\r\n\r\n") {
                        out.extend(buf.drain(..i + 4));
                        return Ok(out);
                    }
                    if buf.len() >= line_end + 4 && &buf[line_end..line_end + 4] == b"\r\n\r\n" {
                        out.extend(buf.drain(..line_end + 4));
                        return Ok(out);
                    }
                    fill(r, buf).await?;
                }
            }
            let need = line_end + 2 + size + 2;
            while buf.len() < need {
                fill(r, buf).await?;
            }
            out.extend(buf.drain(..need));
        }
    }
    let len: usize = get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < len {
        fill(r, buf).await?;
    }
    Ok(buf.drain(..len).collect())
}

async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 64 * 1024];
    let n = r.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

#[allow(deprecated)] // SO_LINGER 0 is the point: a reset, not a graceful close.
fn reset(stream: TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn serve(shared: Arc<Shared>, mut client: TcpStream) -> std::io::Result<()> {
    let _ = client.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let Some(raw) = read_head(&mut client, &mut buf).await? else {
            return Ok(());
        };
        let Some((first, headers)) = parse_head(&raw) else {
            return Ok(());
        };
        let mut parts = first.split(' ');
        let head = Head {
            method: parts.next().unwrap_or("").to_string(),
            target: parts.next().unwrap_or("").to_string(),
            headers,
        };
        if head
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let body = read_body(&mut client, &mut buf, &head.headers, false).await?;
        let info = RequestInfo {
            method: head.method.clone(),
            target: head.target.clone(),
            seq: shared.seq.fetch_add(1, Ordering::Relaxed),
            content_range: head.header("content-range").map(str::to_owned),
            body_len: body.len(),
        };
        let script = shared.script.lock().unwrap().clone();
        let fault = script.and_then(|s| s(&info)).unwrap_or_else(|| {
            let profile = *shared.profile.lock().unwrap();
            profile.draw(&mut shared.rng.lock().unwrap(), &info)
        });
        *shared
            .counts
            .lock()
            .unwrap()
            .entry(fault.class())
            .or_default() += 1;
        match fault {
            Fault::Status { code, retry_after } => {
                let (ctype, text) = error_body(shared.flavor, code);
                let mut out = format!(
                    "HTTP/1.1 {code} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n",
                    reason(code),
                    text.len()
                );
                if let Some(s) = retry_after {
                    out.push_str(&format!("Retry-After: {s}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&text);
                client.write_all(out.as_bytes()).await?;
                continue;
            }
            Fault::ResetBefore => {
                reset(client);
                return Ok(());
            }
            Fault::Stall(d) => {
                tokio::time::sleep(d).await;
                return Ok(());
            }
            _ => {}
        }
        let (resp_head, resp_body, close) = forward(&shared, &head, &raw, &body).await?;
        match fault {
            Fault::ResetAfter => {
                reset(client);
                return Ok(());
            }
            Fault::Truncate if resp_body.len() >= 2 => {
                client.write_all(&resp_head).await?;
                client.write_all(&resp_body[..resp_body.len() / 2]).await?;
                client.flush().await?;
                reset(client);
                return Ok(());
            }
            Fault::Slow { chunk, delay } => {
                client.write_all(&resp_head).await?;
                for piece in resp_body.chunks(chunk.max(1)) {
                    tokio::time::sleep(delay).await;
                    client.write_all(piece).await?;
                }
            }
            _ => {
                client.write_all(&resp_head).await?;
                client.write_all(&resp_body).await?;
            }
        }
        if close {
            return Ok(());
        }
    }
}

/// Sends one request to the store on a new connection; returns the answer's head, its
/// body as framed, and whether the store asked to close.
async fn forward(
    shared: &Shared,
    head: &Head,
    raw_head: &[u8],
    body: &[u8],
) -> std::io::Result<(Vec<u8>, Vec<u8>, bool)> {
    let mut up = TcpStream::connect(shared.upstream).await?;
    let _ = up.set_nodelay(true);
    // The head as received, minus `Expect` (answered here already).
    let text = String::from_utf8_lossy(raw_head);
    let mut out = String::new();
    for line in text.split("\r\n") {
        if line.to_ascii_lowercase().starts_with("expect:") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    // `text` ended with "\r\n\r\n": the split left two empty strings, now "\r\n\r\n".
    let out = out.trim_end_matches("\r\n").to_string() + "\r\n\r\n";
    up.write_all(out.as_bytes()).await?;
    up.write_all(body).await?;
    let mut buf = Vec::new();
    let (resp_head, headers, status) = loop {
        let Some(raw) = read_head(&mut up, &mut buf).await? else {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        };
        let (first, headers) =
            parse_head(&raw).ok_or_else(|| std::io::Error::other("bad response head"))?;
        let status: u16 = first
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if (100..200).contains(&status) {
            continue;
        }
        break (raw, headers, status);
    };
    let no_body = head.method == "HEAD" || status == 204 || status == 304;
    let resp_body = read_body(&mut up, &mut buf, &headers, no_body).await?;
    let close = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"));
    Ok((resp_head, resp_body, close))
}

fn reason(code: u16) -> &'static str {
    match code {
        429 => "Too Many Requests",
        403 => "Forbidden",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn error_body(flavor: Flavor, code: u16) -> (&'static str, String) {
    match flavor {
        Flavor::S3 => {
            let c = match code {
                503 => "SlowDown",
                500 => "InternalError",
                429 => "Throttling",
                403 => "InvalidAccessKeyId",
                _ => "InternalError",
            };
            (
                "application/xml",
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{c}</Code><Message>injected {code}</Message><RequestId>fault</RequestId></Error>"),
            )
        }
        Flavor::Gcs => (
            "application/json",
            format!("{{\"error\":{{\"code\":{code},\"message\":\"injected {code}\",\"errors\":[{{\"reason\":\"backendError\",\"message\":\"injected {code}\"}}]}}}}"),
        ),
    }
}
