//! The demo's scripted endpoint: an OpenAI-compatible chat server on loopback that is **not a
//! model**. It knows the synthetic corpus's generated pairs (each pair's question, options and
//! answers, found by the digest of the image bytes a request carries) and answers by script,
//! so that `blindspot demo` runs drafting, verification and evaluation end to end over real
//! HTTP when no model server is given. Its models are named `scripted/...`, and the demo says
//! so wherever it prints them.
//!
//! - `scripted/drafter`: shown the two images of a generated pair, that pair's question as a
//!   JSON draft (asked for a second question, another one about the same difference); shown
//!   anything else, a refusal (the draft fails, with the reason).
//! - `scripted/verifier`: shown one image, its right option; shown none, "(c) cannot tell".
//! - `scripted/mllm`: an MLLM blind to orientation. Shown one image, the right option, except
//!   for Orientation questions, where it always says (a); shown none, (a). Sampled (temperature
//!   above 0) it gives the other answer for about one request in six, chosen by the image,
//!   the prompt and the request's `seed`, so repeats are reproducible.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;

use super::synthetic::KnownImage;
use crate::error::{Error, Result};

/// The drafting model's name.
pub const DRAFTER: &str = "scripted/drafter";
/// The verifying model's name.
pub const VERIFIER: &str = "scripted/verifier";
/// The evaluated model's name.
pub const MLLM: &str = "scripted/mllm";

/// A running scripted endpoint.
pub struct Scripted {
    /// Its base URL, `http://127.0.0.1:PORT/v1`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the endpoint on a free loopback port; it stops when the value is dropped.
pub async fn start(known: HashMap<String, KnownImage>) -> Result<Scripted> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(|e| Error::Usage(format!("the scripted endpoint cannot bind loopback: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Usage(format!("the scripted endpoint has no address: {e}")))?;
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(Arc::new(known));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Scripted {
        url: format!("http://{addr}/v1"),
        task,
    })
}

async fn chat(
    State(known): State<Arc<HashMap<String, KnownImage>>>,
    Json(body): Json<serde_json::Value>,
) -> std::result::Result<Json<serde_json::Value>, (StatusCode, String)> {
    let bad = |why: &str| (StatusCode::BAD_REQUEST, why.to_string());
    let model = body["model"].as_str().ok_or_else(|| bad("no model"))?;
    let parts = body["messages"][0]["content"]
        .as_array()
        .ok_or_else(|| bad("no content parts"))?;
    let mut prompt = String::new();
    let mut images = Vec::new();
    for p in parts {
        if let Some(t) = p["text"].as_str() {
            prompt.push_str(t);
        }
        if let Some(url) = p["image_url"]["url"].as_str() {
            let b64 = url.split_once(',').map_or("", |(_, b)| b);
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| bad("an image that is not a base64 data URL"))?;
            images.push(blake3::hash(&bytes).to_hex().to_string());
        }
    }
    let sampled = body["temperature"].as_f64().unwrap_or(0.0) > 0.0;
    let seed = body["seed"].as_u64().unwrap_or(0);
    let seen: Vec<Option<&KnownImage>> = images.iter().map(|d| known.get(d)).collect();
    let text = match model {
        DRAFTER => draft(&seen, prompt.contains(super::draft::SECOND_QUESTION)),
        VERIFIER => answer(&seen, &prompt, false),
        MLLM => {
            let said = answer(&seen, &prompt, true);
            let flip = format!("{images:?}\u{0}{prompt}\u{0}{seed}");
            match sampled && blake3::hash(flip.as_bytes()).as_bytes()[0] < 43 {
                true => other(&said),
                false => said,
            }
        }
        m => return Err(bad(&format!("the scripted endpoint serves no model {m:?}"))),
    };
    Ok(Json(serde_json::json!({
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    })))
}

/// The drafter: the generated pair's question (or its other one, `second`) when shown its two
/// images.
fn draft(seen: &[Option<&KnownImage>], second: bool) -> String {
    match seen {
        [Some(a), Some(b)] if a.pair == b.pair && a.answer != b.answer => serde_json::json!({
            "difference": format!("Image A shows {}; image B shows {}.", a.shows, b.shows),
            "pattern": a.pattern,
            "question": a.questions[second as usize].0,
            "options": a.questions[second as usize].1,
            "answer_a": a.answer.to_string(),
            "answer_b": b.answer.to_string(),
        })
        .to_string(),
        _ => "I see no difference I could ask about.".into(),
    }
}

/// The right option for one known image, as the prompt letters it; `blind`: (a) for every
/// Orientation question. With no image, "(c) cannot tell" where the prompt offers it, else (a).
fn answer(seen: &[Option<&KnownImage>], prompt: &str, blind: bool) -> String {
    match seen {
        [] if prompt.contains("(c) cannot tell") && !blind => "(c) cannot tell".into(),
        [] => "(a)".into(),
        [Some(k)] if blind && k.pattern == "Orientation" => "(a)".into(),
        [Some(k)] => {
            // The question asked is the one whose text the prompt holds.
            let (_, options) = k
                .questions
                .iter()
                .find(|(q, _)| prompt.contains(q.as_str()))
                .unwrap_or(&k.questions[0]);
            let right = &options[(k.answer == 'b') as usize];
            match prompt.contains(&format!("(b) {right}")) {
                true => "(b)".into(),
                false => "(a)".into(),
            }
        }
        _ => "I cannot tell.".into(),
    }
}

fn other(letter: &str) -> String {
    match letter {
        "(a)" => "(b)".into(),
        "(b)" => "(a)".into(),
        s => s.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(pair: usize, pattern: &'static str, answer: char) -> KnownImage {
        KnownImage {
            pair,
            pattern,
            questions: [
                ("Which way?".into(), ["Left".into(), "Right".into()]),
                ("Up or down?".into(), ["Up".into(), "Down".into()]),
            ],
            answer,
            shows: "an L".into(),
        }
    }

    #[test]
    fn the_script_drafts_known_pairs_and_answers_as_documented() {
        let (a, b) = (known(0, "Spatial", 'a'), known(0, "Spatial", 'b'));
        let d = super::super::draft::parse_draft(&draft(&[Some(&a), Some(&b)], false)).unwrap();
        assert_eq!(
            (d.answer_a, d.answer_b, d.pattern.as_str()),
            ('a', 'b', "Spatial")
        );
        let d2 = super::super::draft::parse_draft(&draft(&[Some(&a), Some(&b)], true)).unwrap();
        assert_eq!(
            (d2.question.as_str(), d2.option_a.as_str()),
            ("Up or down?", "Up")
        );
        assert!(draft(&[Some(&a), None], false).contains("no difference"));
        assert_eq!(
            answer(&[Some(&b)], "Up or down? (a) Down (b) Up", false),
            "(a)"
        );
        let swapped = "Which way? (a) Right (b) Left";
        assert_eq!(answer(&[Some(&a)], swapped, false), "(b)");
        assert_eq!(answer(&[Some(&b)], swapped, false), "(a)");
        let o = known(1, "Orientation", 'b');
        assert_eq!(
            answer(&[Some(&o)], "Which way? (a) Left (b) Right", false),
            "(b)"
        );
        assert_eq!(
            answer(&[Some(&o)], "Which way? (a) Left (b) Right", true),
            "(a)"
        );
        assert_eq!(
            answer(&[], "Q (a) x (b) y (c) cannot tell", false),
            "(c) cannot tell"
        );
        assert_eq!(answer(&[], "Q (a) x (b) y", true), "(a)");
    }
}
