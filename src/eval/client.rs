//! The MLLM client: OpenAI-compatible chat completions over HTTP (vLLM, SGLang, llama.cpp's
//! server, Ollama and hosted APIs all speak it), with timeouts, retries with backoff on 429,
//! 5xx, timeouts and malformed replies (honouring `Retry-After`), and a response cache in the
//! run root so that a rerun or a resumed run pays for no answer twice.

use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};
use crate::storage::Location;

/// Where the response cache lives under a run root.
pub const CACHE: &str = "eval/cache";

/// How to reach one model. Credentials never live here: only the name of the environment
/// variable that holds the key.
#[derive(Clone, Debug)]
pub struct ClientParams {
    /// Base URL of the API, e.g. `http://127.0.0.1:8000/v1` (`/chat/completions` is appended
    /// unless the URL already ends with it).
    pub base_url: String,
    /// The model name the endpoint serves.
    pub model: String,
    /// Environment variable holding the API key; no `Authorization` header when it is unset.
    pub api_key_env: String,
    /// Limit on one request, connection to last byte.
    pub timeout: Duration,
    /// Retries after the first attempt, on 429, 5xx, timeouts and malformed replies.
    pub retries: u32,
    /// First backoff; doubled on every retry, capped by `max_backoff`.
    pub backoff: Duration,
    /// Longest wait between attempts, `Retry-After` included.
    pub max_backoff: Duration,
    /// Sampling temperature; 0 is greedy decoding, the default.
    pub temperature: f32,
    /// Longest reply, in tokens.
    pub max_tokens: u32,
}

impl Default for ClientParams {
    fn default() -> Self {
        ClientParams {
            base_url: String::new(),
            model: String::new(),
            api_key_env: "OPENAI_API_KEY".into(),
            timeout: Duration::from_secs(120),
            retries: 4,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            temperature: 0.0,
            max_tokens: 256,
        }
    }
}

/// An image sent with a prompt.
#[derive(Clone, Debug)]
pub struct Image {
    /// The encoded bytes, sent as they are.
    pub bytes: Bytes,
    /// Its media type, e.g. `image/jpeg`.
    pub mime: &'static str,
    /// blake3 of the bytes (part of the cache key).
    pub digest: String,
}

impl Image {
    /// Wraps encoded bytes, taking the media type from the object's name.
    pub fn new(bytes: Bytes, name: &str) -> Image {
        let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
        let mime = match ext.as_str() {
            "png" => "image/png",
            "webp" => "image/webp",
            "gif" => "image/gif",
            _ => "image/jpeg",
        };
        let digest = blake3::hash(&bytes).to_hex().to_string();
        Image {
            bytes,
            mime,
            digest,
        }
    }

    fn data_url(&self) -> String {
        format!(
            "data:{};base64,{}",
            self.mime,
            base64::engine::general_purpose::STANDARD.encode(&self.bytes)
        )
    }
}

/// What came back for one prompt. `text` or `error` is set, never both.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reply {
    /// The model's reply.
    pub text: Option<String>,
    /// Why there is no reply, after all retries.
    pub error: Option<String>,
    /// HTTP requests made for it in this run (0 when it came from the cache).
    pub attempts: u32,
    /// Milliseconds of the last request (0 when cached).
    pub latency_ms: u64,
    /// Whether it came from the cache.
    pub cached: bool,
    /// Whether the last attempt could not connect at all.
    pub unreachable: bool,
}

/// A chat model behind some transport: the seam where tests or other APIs plug in.
#[async_trait::async_trait]
pub trait Chat: Send + Sync {
    /// Asks one prompt with its images; failures are in the reply, not an error.
    async fn chat(&self, prompt: &str, images: &[Image]) -> Reply;
    /// The `n`-th sample of the same prompt (`n = 0` is [`Chat::chat`]): a request, and a
    /// cache entry, of its own, so that sampled replies can differ.
    async fn sample(&self, prompt: &str, images: &[Image], n: u32) -> Reply {
        let _ = n;
        self.chat(prompt, images).await
    }
    /// The model's name.
    fn model(&self) -> &str;
    /// The endpoint, without credentials.
    fn endpoint(&self) -> &str;
    /// The decoding settings as JSON, recorded with every answer.
    fn settings(&self) -> String;
}

/// An OpenAI-compatible chat completions endpoint.
pub struct OpenAiClient {
    http: reqwest::Client,
    url: String,
    params: ClientParams,
    key: Option<String>,
    cache: Option<Location>,
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    model: String,
    text: String,
}

impl OpenAiClient {
    /// A client for `params`, caching replies under `cache` (a run root) when given.
    pub fn new(params: ClientParams, cache: Option<Location>) -> Result<OpenAiClient> {
        let base = params.base_url.trim_end_matches('/');
        let parsed = url::Url::parse(base).map_err(|e| Error::Endpoint {
            url: base.to_string(),
            reason: format!("{e}; give a URL such as http://127.0.0.1:8000/v1"),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || !parsed.username().is_empty() {
            let mut shown = parsed.clone();
            let _ = shown.set_username("");
            let _ = shown.set_password(None);
            return Err(Error::Endpoint {
                url: shown.to_string(),
                reason: "the base URL must be http(s) and carry no credentials (put the key in the environment variable named by --api-key-env)".into(),
            });
        }
        if params.model.trim().is_empty() {
            return Err(Error::Usage(
                "no model name: pass --model with a name the endpoint serves".into(),
            ));
        }
        let url = if base.ends_with("/chat/completions") {
            base.to_string()
        } else {
            format!("{base}/chat/completions")
        };
        let http = reqwest::Client::builder()
            .timeout(params.timeout)
            .build()
            .map_err(|e| Error::Endpoint {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let key = std::env::var(&params.api_key_env)
            .ok()
            .filter(|k| !k.is_empty());
        Ok(OpenAiClient {
            http,
            url,
            params,
            key,
            cache,
        })
    }

    fn cache_key(&self, prompt: &str, images: &[Image]) -> String {
        let id = json!({
            "endpoint": self.url,
            "model": self.params.model,
            "prompt": prompt,
            "images": images.iter().map(|i| &i.digest).collect::<Vec<_>>(),
            "settings": self.settings(),
        });
        blake3::hash(id.to_string().as_bytes()).to_hex().to_string()
    }

    async fn cached(&self, key: &str) -> Option<String> {
        let root = self.cache.as_ref()?;
        let bytes = root.get_bytes(&root.path(&cache_path(key))).await.ok()?;
        serde_json::from_slice::<CacheEntry>(&bytes)
            .ok()
            .map(|e| e.text)
    }

    async fn store(&self, key: &str, text: &str) {
        if let Some(root) = &self.cache {
            let entry = CacheEntry {
                model: self.params.model.clone(),
                text: text.to_string(),
            };
            if let Err(e) = root.put_json(&cache_path(key), &entry).await {
                tracing::warn!("could not cache a reply: {e}");
            }
        }
    }

    fn body(&self, prompt: &str, images: &[Image]) -> serde_json::Value {
        let mut content: Vec<serde_json::Value> = images
            .iter()
            .map(|i| json!({"type": "image_url", "image_url": {"url": i.data_url()}}))
            .collect();
        content.push(json!({"type": "text", "text": prompt}));
        json!({
            "model": self.params.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": self.params.temperature,
            "max_tokens": self.params.max_tokens,
            "stream": false,
        })
    }

    /// One HTTP request: the reply, or whether it may be retried and after how long.
    async fn attempt(&self, body: &serde_json::Value) -> Result<String, Failure> {
        // Serialised here: reqwest's `json` feature would be the only reason to enable it.
        let mut req = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| Failure {
            retry: e.is_timeout() || e.is_connect() || e.is_request() || e.is_body(),
            after: None,
            unreachable: e.is_connect(),
            message: if e.is_timeout() {
                format!("timed out after {:?}", self.params.timeout)
            } else {
                format!("request failed: {}", error_chain(&e))
            },
        })?;
        let status = resp.status();
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64);
        let text = resp.text().await.map_err(|e| Failure {
            retry: true,
            after: None,
            unreachable: false,
            message: format!("reading the reply: {}", error_chain(&e)),
        })?;
        if !status.is_success() {
            let retry = status.as_u16() == 429 || status.is_server_error();
            let hint = match status.as_u16() {
                401 | 403 => format!(
                    " (set the API key in ${})",
                    self.params.api_key_env
                ),
                404 => " (is the base URL right? it should end where /chat/completions begins, e.g. .../v1)".into(),
                _ => String::new(),
            };
            return Err(Failure {
                retry,
                after,
                unreachable: false,
                message: format!("HTTP {status}{hint}: {}", snippet(&text)),
            });
        }
        reply_text(&text).ok_or_else(|| Failure {
            retry: true,
            after: None,
            unreachable: false,
            message: format!("malformed reply: {}", snippet(&text)),
        })
    }
}

struct Failure {
    retry: bool,
    after: Option<Duration>,
    message: String,
    /// No connection could be made at all (as opposed to an answer that was bad).
    unreachable: bool,
}

fn cache_path(key: &str) -> String {
    format!("{CACHE}/{}/{key}.json", &key[..2])
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn snippet(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    if t.len() < text.len() {
        format!("{t}...")
    } else {
        t
    }
}

/// The assistant's text in a chat completions reply: `choices[0].message.content`, a string
/// or a list of text parts.
pub fn reply_text(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let content = v.get("choices")?.get(0)?.get("message")?.get("content")?;
    match content {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(|t| t.as_str()))
                .collect::<Vec<_>>()
                .join(""),
        ),
        _ => None,
    }
}

/// The wait before retry `n` (1-based): `Retry-After` when the server sent one, else
/// exponential backoff with a little jitter so that parallel requests do not retry in step.
fn backoff(params: &ClientParams, n: u32, after: Option<Duration>, seed: &str) -> Duration {
    let wait = after.unwrap_or_else(|| {
        let base = params.backoff.saturating_mul(1 << (n - 1).min(16));
        let jitter = blake3::hash(format!("{seed}{n}").as_bytes()).as_bytes()[0] as f64 / 255.0;
        base.mul_f64(1.0 + 0.25 * jitter)
    });
    wait.min(params.max_backoff)
}

#[async_trait::async_trait]
impl Chat for OpenAiClient {
    async fn chat(&self, prompt: &str, images: &[Image]) -> Reply {
        self.sample(prompt, images, 0).await
    }

    async fn sample(&self, prompt: &str, images: &[Image], n: u32) -> Reply {
        let key = match n {
            0 => self.cache_key(prompt, images),
            n => self.cache_key(&format!("{prompt}\u{0}sample {n}"), images),
        };
        if let Some(text) = self.cached(&key).await {
            return Reply {
                text: Some(text),
                cached: true,
                ..Default::default()
            };
        }
        let mut body = self.body(prompt, images);
        // A seed per repeat: servers that honour `seed` (vLLM, OpenAI) sample each repeat
        // reproducibly.
        if n > 0 {
            body["seed"] = json!(n);
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let started = Instant::now();
            let result = self.attempt(&body).await;
            let latency_ms = started.elapsed().as_millis() as u64;
            match result {
                Ok(text) => {
                    self.store(&key, &text).await;
                    return Reply {
                        text: Some(text),
                        attempts,
                        latency_ms,
                        ..Default::default()
                    };
                }
                Err(f) if f.retry && attempts <= self.params.retries => {
                    let wait = backoff(&self.params, attempts, f.after, &key);
                    tracing::debug!(
                        "{}: attempt {attempts} failed ({}); retrying in {wait:?}",
                        self.params.model,
                        f.message
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(f) => {
                    return Reply {
                        error: Some(format!("after {attempts} attempt(s): {}", f.message)),
                        attempts,
                        latency_ms,
                        unreachable: f.unreachable,
                        ..Default::default()
                    }
                }
            }
        }
    }

    fn model(&self) -> &str {
        &self.params.model
    }

    fn endpoint(&self) -> &str {
        &self.url
    }

    fn settings(&self) -> String {
        json!({
            "temperature": self.params.temperature,
            "max_tokens": self.params.max_tokens,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_text_reads_strings_and_parts_and_refuses_the_rest() {
        let s = r#"{"choices":[{"message":{"role":"assistant","content":"(a)"}}]}"#;
        assert_eq!(reply_text(s).as_deref(), Some("(a)"));
        let p = r#"{"choices":[{"message":{"content":[{"type":"text","text":"B"},{"type":"text","text":"."}]}}]}"#;
        assert_eq!(reply_text(p).as_deref(), Some("B."));
        assert_eq!(reply_text(r#"{"choices":[]}"#), None);
        assert_eq!(reply_text("{\"choices\": [{"), None);
    }

    #[test]
    fn backoff_doubles_honours_retry_after_and_is_capped() {
        let p = ClientParams {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            ..Default::default()
        };
        let (b1, b3) = (backoff(&p, 1, None, "k"), backoff(&p, 3, None, "k"));
        assert!(b1 >= Duration::from_millis(100) && b1 <= Duration::from_millis(125));
        assert!(b3 >= Duration::from_millis(400) && b3 <= Duration::from_millis(500));
        assert_eq!(
            backoff(&p, 1, Some(Duration::from_secs(1)), "k"),
            Duration::from_secs(1)
        );
        assert_eq!(backoff(&p, 9, None, "k"), Duration::from_secs(2));
    }

    #[test]
    fn credentials_in_the_url_are_refused() {
        let p = ClientParams {
            base_url: "http://user:secret@127.0.0.1:1/v1".into(),
            model: "m".into(),
            ..Default::default()
        };
        let err = OpenAiClient::new(p, None).err().unwrap().to_string();
        assert!(
            err.contains("no credentials") && !err.contains("secret@"),
            "{err}"
        );
    }
}
