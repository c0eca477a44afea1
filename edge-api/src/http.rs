//! Small I/O helpers: JSON bodies, and calls between the Worker and its Durable Objects.

use concurrent_core::wire::ErrorBody;
use serde::{de::DeserializeOwned, Serialize};
use worker::{js_sys, Env, Headers, Method, Request, RequestInit, Response, Stub};

use crate::error::ApiError;

/// Largest request body the API reads.
pub const MAX_BODY: usize = 1 << 20;
/// Largest body a Durable Object reads from the Worker or another object (they are not
/// reachable from outside; messages are split at `MAX_MESSAGE_BYTES`, but one work item with a
/// large file list travels alone).
const MAX_INTERNAL_BODY: usize = 32 << 20;

/// Reads a body of at most [`MAX_BODY`] bytes.
pub async fn body_text(req: &mut Request) -> Result<String, ApiError> {
    body_text_within(req, MAX_BODY).await
}

async fn body_text_within(req: &mut Request, max: usize) -> Result<String, ApiError> {
    let too_large = || ApiError::TooLarge(format!("the body is larger than {} KiB", max / 1024));
    let declared = req
        .headers()
        .get("Content-Length")
        .ok()
        .flatten()
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let text = req
        .text()
        .await
        .map_err(|e| ApiError::BadRequest(format!("cannot read the body: {e}")))?;
    if text.len() > max {
        return Err(too_large());
    }
    Ok(text)
}

/// Reads a JSON body, naming what was wrong with it.
pub async fn json_body<T: DeserializeOwned>(req: &mut Request) -> Result<T, ApiError> {
    let text = body_text(req).await?;
    serde_json::from_str(&text)
        .map_err(|e| ApiError::BadRequest(format!("the JSON body does not fit: {e}")))
}

/// Reads the JSON body of a request between the edge's own objects.
pub async fn internal_json<T: DeserializeOwned>(req: &mut Request) -> Result<T, ApiError> {
    let text = body_text_within(req, MAX_INTERNAL_BODY).await?;
    serde_json::from_str(&text)
        .map_err(|e| ApiError::BadRequest(format!("the JSON body does not fit: {e}")))
}

/// A response's whole body as text, read by the runtime in one call. `worker::Response::text`
/// reads a streamed body (every `fetch` answer's) chunk by chunk through a stream reader and a
/// Rust stream; in the edge's profile of many small runs that reading (the reader's reads and
/// `releaseLock`, the promises between) held about a tenth of the samples.
pub async fn response_text(resp: Response) -> worker::Result<String> {
    let web: worker::web_sys::Response = resp.into();
    let text = worker::wasm_bindgen_futures::JsFuture::from(web.text()?).await?;
    Ok(text.as_string().unwrap_or_default())
}

/// The stub of a named Durable Object.
pub fn stub(env: &Env, binding: &str, name: &str) -> Result<Stub, ApiError> {
    Ok(env
        .durable_object(binding)?
        .id_from_name(name)?
        .get_stub()?)
}

/// A Durable Object to call: POSTs JSON to a path, decodes the answer; errors keep their
/// status. The typed clients (see `object_api!`) are built on it.
pub struct ObjectStub(pub Stub);

impl ObjectStub {
    pub fn new(env: &Env, binding: &str, name: &str) -> Result<ObjectStub, ApiError> {
        Ok(ObjectStub(stub(env, binding, name)?))
    }

    pub async fn send<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<R, ApiError> {
        let resp = self.forward(path, body).await?;
        Ok(serde_json::from_str(&response_text(resp).await?)?)
    }

    /// The object's successful answer as it came, body unread (a big run's JSON is passed on
    /// without being copied into this isolate's memory); its error otherwise.
    pub async fn forward<B: Serialize>(&self, path: &str, body: &B) -> Result<Response, ApiError> {
        let headers = Headers::new();
        headers.set("Content-Type", "application/json")?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(serde_json::to_string(body)?.into()));
        let req = Request::new_with_init(&format!("https://do{path}"), &init)?;
        let resp = self.0.fetch_with_request(req).await?;
        let status = resp.status_code();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let text = response_text(resp).await?;
        let body = serde_json::from_str::<ErrorBody>(&text)
            .unwrap_or_else(|_| ErrorBody::new("internal", text, vec![]));
        Err(ApiError::from_parts(status, body))
    }
}

/// Declares a Durable Object's API once, in the object's `api.rs`: its typed client (one method
/// per request, what callers use), and a trait with the same methods that the object implements
/// (what it serves), joined by the path each is sent on. The object's `fetch` calls the trait's
/// `serve`. Callers import the client; nothing here names the object itself.
macro_rules! object_api {
    ($(#[$client_doc:meta])* $client:ident, $(#[$api_doc:meta])* $api:ident {
        $( $(#[$doc:meta])* $method:ident($body:ty) -> $answer:ty = $path:literal; )*
    }) => {
        $(#[$client_doc])*
        pub struct $client(pub crate::http::ObjectStub);

        impl $client {
            $(
                $(#[$doc])*
                pub async fn $method(&self, body: &$body) -> Result<$answer, crate::error::ApiError> {
                    self.0.send($path, body).await
                }
            )*
        }

        $(#[$api_doc])*
        // The futures run on one thread (a Durable Object's), so no `Send` bound is wanted.
        #[allow(async_fn_in_trait)]
        pub trait $api {
            $(
                $(#[$doc])*
                async fn $method(&self, body: $body) -> Result<$answer, crate::error::ApiError>;
            )*

            /// Serves one request by its path, with the method of the client's name.
            async fn serve(
                &self,
                req: &mut worker::Request,
            ) -> Result<crate::http::Body, crate::error::ApiError> {
                use crate::http::IntoBody;
                match req.path().as_str() {
                    $(
                        $path => {
                            let body: $body = crate::http::internal_json(req).await?;
                            Ok(self.$method(body).await?.into_body()?)
                        }
                    )*
                    other => Err(crate::error::ApiError::NotFound(format!(
                        "{} has no request {other}",
                        stringify!($api)
                    ))),
                }
            }
        }
    };
}
pub(crate) use object_api;

/// An answer's JSON text. A big one is written in pieces that leave the isolate's wasm memory
/// as they fill: a 100,000-instance run is tens of MB of JSON, and as one string (grown by
/// doubling, then copied once more into the response) it took several times that in wasm
/// memory, which never shrinks.
pub enum Body {
    Text(String),
    /// The pieces, each a `Uint8Array` in the runtime's memory, in order.
    Pieces(js_sys::Array),
}

/// The size of a piece of a big answer.
const PIECE_BYTES: usize = 256 << 10;

impl Body {
    /// Serializes `value`; one string when it is smaller than a piece.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Body, ApiError> {
        let mut w = PieceWriter::default();
        serde_json::to_writer(&mut w, value)?;
        Ok(match w.pieces.take() {
            None => {
                Body::Text(String::from_utf8(w.buf).map_err(|e| ApiError::Internal(e.to_string()))?)
            }
            Some(pieces) => {
                w.send_piece(&pieces);
                Body::Pieces(pieces)
            }
        })
    }
}

/// Collects JSON bytes, moving each full piece out to the runtime.
#[derive(Default)]
struct PieceWriter {
    buf: Vec<u8>,
    pieces: Option<js_sys::Array>,
}

impl PieceWriter {
    fn send_piece(&mut self, pieces: &js_sys::Array) {
        pieces.push(&js_sys::Uint8Array::from(self.buf.as_slice()));
        self.buf.clear();
    }
}

impl std::io::Write for PieceWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE_BYTES {
            let pieces = self.pieces.take().unwrap_or_default();
            self.send_piece(&pieces);
            self.pieces = Some(pieces);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What an object's method answers: any serializable value, or a [`Body`] it wrote itself
/// (from state it holds borrowed, which no owned answer could carry without a copy).
pub trait IntoBody {
    fn into_body(self) -> Result<Body, ApiError>;
}

impl<T: Serialize> IntoBody for T {
    fn into_body(self) -> Result<Body, ApiError> {
        Body::json(&self)
    }
}

impl IntoBody for Body {
    fn into_body(self) -> Result<Body, ApiError> {
        Ok(self)
    }
}

/// The client side of a [`Body`]: its JSON text as it came.
impl<'de> serde::Deserialize<'de> for Body {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Body, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        Ok(Body::Text(String::from(Box::<str>::from(raw))))
    }
}

/// Answers a Durable Object request: its JSON text on success, the error's status and body
/// otherwise.
pub fn reply(result: Result<Body, ApiError>) -> worker::Result<Response> {
    let json = || {
        let headers = Headers::new();
        headers.set("Content-Type", "application/json")?;
        Ok::<_, worker::Error>(headers)
    };
    let response = match result {
        Ok(Body::Text(text)) => Ok(Response::ok(text)?.with_headers(json()?)),
        Ok(Body::Pieces(pieces)) => {
            let blob = worker::web_sys::Blob::new_with_u8_array_sequence(&pieces)?;
            let web = worker::web_sys::Response::new_with_opt_blob(Some(&blob))?;
            Ok(Response::from(web).with_headers(json()?))
        }
        Err(e) => e.into_response(),
    };
    note_memory();
    response
}

/// Logs the isolate's wasm memory each time it reaches a new high-water mark (in steps of
/// 4 MiB), so an operator sees an object nearing the isolate's limit (128 MB on Cloudflare)
/// before it is reset. Wasm memory never shrinks, so the mark is the peak of every object that
/// shares the isolate.
pub fn note_memory() {
    #[cfg(target_arch = "wasm32")]
    {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static LOGGED: AtomicUsize = AtomicUsize::new(0);
        let mib = core::arch::wasm32::memory_size(0) * 64 / 1024;
        // The first answer logs too: the mark starts wherever the isolate starts.
        let step = mib / 4 + 1;
        if step > LOGGED.fetch_max(step, Ordering::Relaxed) {
            // A warning, so it shows at wrangler's and Cloudflare's default log level.
            worker::console_warn!(
                "wasm memory high-water mark: {mib} MiB (an isolate is reset at 128 MB on Cloudflare)"
            );
        }
    }
}
