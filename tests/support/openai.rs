//! A scripted OpenAI-compatible chat completions server on loopback, for the MLLM tests: a real
//! HTTP/1.1 server on a real socket, answering each request as the test's script says (right,
//! wrong, free text, 429 with Retry-After, 500, too slow, malformed JSON) and logging what it
//! was sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the script answers to one request.
#[allow(dead_code)]
pub enum Reply {
    /// 200 with a chat completion whose message is this text.
    Text(String),
    /// This status, with `Retry-After: secs` when given.
    Status(u16, Option<u32>),
    /// Wait this long, then answer with the text (beyond the client's timeout: a timeout).
    Slow(Duration, String),
    /// 200 with a body that is not JSON.
    Malformed,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    /// The model asked for.
    pub model: String,
    /// The text parts of the user message, joined.
    pub prompt: String,
    /// The image data URLs sent.
    pub images: Vec<String>,
    /// The Authorization header, if any.
    pub auth: Option<String>,
    /// The whole JSON body.
    pub body: serde_json::Value,
}

type Script = dyn Fn(&Logged, usize) -> Reply + Send + Sync;

/// The running server; it stops with the test process.
pub struct Server {
    /// Base URL to give `--base-url`.
    pub url: String,
    log: Arc<Mutex<Vec<Logged>>>,
    flight: Arc<Flight>,
}

/// Requests being answered now, and the most there ever were at once.
#[derive(Default)]
struct Flight {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Server {
    /// Starts a server whose `script` gets each request and how many identical requests (same
    /// model, prompt and images) came before it.
    pub fn start(script: impl Fn(&Logged, usize) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let log: Arc<Mutex<Vec<Logged>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let flight: Arc<Flight> = Arc::default();
        let (log2, flight2) = (log.clone(), flight.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, script, flight) = (log2.clone(), script.clone(), flight2.clone());
                std::thread::spawn(move || {
                    let now = flight.now.fetch_add(1, Ordering::SeqCst) + 1;
                    flight.max.fetch_max(now, Ordering::SeqCst);
                    handle(stream, &log, &*script);
                    flight.now.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Server { url, log, flight }
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.flight.max.load(Ordering::SeqCst)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }
}

fn handle(stream: TcpStream, log: &Mutex<Vec<Logged>>, script: &Script) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let (mut length, mut auth) = (0usize, None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => auth = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut out = stream;
    if !request_line.starts_with("POST /v1/chat/completions ") {
        let _ = respond(&mut out, 404, &[], "{\"error\": \"not found\"}");
        return;
    }
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let content = &body["messages"][0]["content"];
    let (mut prompt, mut images) = (String::new(), Vec::new());
    match content {
        serde_json::Value::String(s) => prompt = s.clone(),
        serde_json::Value::Array(parts) => {
            for p in parts {
                if let Some(t) = p["text"].as_str() {
                    prompt.push_str(t);
                }
                if let Some(u) = p["image_url"]["url"].as_str() {
                    images.push(u.to_string());
                }
            }
        }
        _ => {}
    }
    let logged = Logged {
        model: body["model"].as_str().unwrap_or_default().to_string(),
        prompt,
        images,
        auth,
        body: body.clone(),
    };
    let before = {
        let mut log = log.lock().unwrap();
        let n = log
            .iter()
            .filter(|l| {
                l.model == logged.model && l.prompt == logged.prompt && l.images == logged.images
            })
            .count();
        log.push(logged.clone());
        n
    };
    let completion = |text: &str| {
        serde_json::json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": logged.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        })
        .to_string()
    };
    let _ = match script(&logged, before) {
        Reply::Text(t) => respond(&mut out, 200, &[], &completion(&t)),
        Reply::Status(code, after) => {
            let header = after.map(|s| ("Retry-After", s.to_string()));
            respond(
                &mut out,
                code,
                header.as_slice(),
                "{\"error\": \"scripted\"}",
            )
        }
        Reply::Slow(wait, t) => {
            std::thread::sleep(wait);
            respond(&mut out, 200, &[], &completion(&t))
        }
        Reply::Malformed => respond(&mut out, 200, &[], "{\"choices\": [{\"message\": "),
    };
}

fn respond(
    out: &mut TcpStream,
    code: u16,
    headers: &[(&str, String)],
    body: &str,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {code} Scripted\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body.as_bytes())?;
    out.flush()
}
