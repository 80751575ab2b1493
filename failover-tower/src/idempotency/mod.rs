//! [`IdempotencyLayer`]: a retried mutation takes effect once. The
//! `Idempotency-Key` header of the IETF httpapi draft
//! (draft-ietf-httpapi-idempotency-key-header), with records in PostgreSQL
//! on the writer.

mod body;
mod store;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, LOCATION, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use tower_layer::Layer;
use tower_service::Service;

use crate::classify::{MutationClassifier, RequestHead};
use crate::error::Error;
use crate::response;
use store::{Claim, Store, StoredResponse};

/// The error type of boxed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body of [`Idempotency`]: the service's own, a stored one, or
/// the layer's answer.
pub type IdempotencyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The request header carrying the key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The header on a replayed response (`idempotent-replayed: true`).
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The metric counting the layer's decisions, by `outcome`: `passed` (not
/// a mutation, or no key), `missing_key`, `invalid_key`, `too_large`,
/// `executed`, `replayed`, `mismatch` (422), `in_progress` (409),
/// `unavailable` (503: the store failed), `released` (not stored: a 5xx,
/// 408 or 429, or the service failed), `store_failed` (the response could
/// not be stored after the mutation ran).
pub const IDEMPOTENCY_METRIC: &str = "failover_tower_idempotency_total";

/// Longest key accepted, bytes.
pub const MAX_KEY_LEN: usize = 255;

/// A layer that makes a retried mutation take effect once.
///
/// A mutating request ([`MutationClassifier`], by method by default) with
/// an `Idempotency-Key` header:
///
/// 1. Its body is read (more than [`max_request_body`](IdempotencyLayerBuilder::max_request_body)
///    bytes: `413`), and its fingerprint — SHA-256 of method, path and
///    query, and body, computed by PostgreSQL — is recorded with the key in
///    state `in_progress` (`INSERT … ON CONFLICT`): one round trip to the
///    writer. The table ([`table`](IdempotencyLayerBuilder::table), default
///    `failover_idempotency`) is created if missing.
/// 2. If the key was free, the service runs (in a task of its own, so a
///    client that hangs up does not cancel a mutation half way), and its
///    response — status, the [`stored_headers`](IdempotencyLayerBuilder::stored_headers),
///    and a body of at most [`max_response_body`](IdempotencyLayerBuilder::max_response_body)
///    bytes — is stored: a second round trip.
/// 3. A retry with the same key and fingerprint gets the stored response,
///    marked `idempotent-replayed: true`; the same key with another
///    fingerprint gets `422`; while the first is still `in_progress`, `409`
///    with `Retry-After: 1`.
/// 4. Keys expire [`ttl`](IdempotencyLayerBuilder::ttl) after their first use (default 24 h):
///    an expired key is free again, and expired rows are deleted at most
///    every [`sweep_interval`](IdempotencyLayerBuilder::sweep_interval).
///
/// **Not stored:** a response that asks for a retry — `5xx`, `408`, `429` —
/// or a service error: the row is deleted so that a retry runs the mutation
/// again. This is the common practice (Stripe's): a 5xx usually means the
/// mutation did not happen, and storing it would replay a transient failure
/// for the whole TTL. A service that can fail *after* committing should
/// make that commit and its idempotency record one transaction, or answer
/// 2xx.
///
/// **The database is the source of truth:** if it cannot be reached (or
/// refuses the write, e.g. a fenced old writer), the answer is `503` with
/// `Retry-After` and the service is not called. A broken connection is
/// dropped and the next request reconnects; for a second after a failed
/// connection attempt requests get their 503 at once instead of queueing
/// behind one connect timeout each. Point the DSN at the writer
/// (the writer's DNS name, or several hosts with
/// `target_session_attrs=read-write`): the table replicates with the rest
/// of the database, so keys survive a failover. If the response cannot be
/// stored after the mutation ran, the client still gets it, the key stays
/// `in_progress` (retries get 409) until it expires, and `store_failed` is
/// counted.
///
/// Requests that do not mutate pass; a mutation without a key passes unless
/// [`required`](IdempotencyLayerBuilder::required) (then `400`). A key is 1 to 255 visible
/// ASCII characters, optionally in double quotes (a structured-field string).
/// Keys are global to the table: give each client its own prefix if clients
/// do not generate unique keys.
#[derive(Clone)]
pub struct IdempotencyLayer {
    shared: Arc<Shared>,
}

struct Shared {
    store: Store,
    settings: Settings,
    last_sweep: Mutex<Instant>,
}

#[derive(Clone)]
struct Settings {
    ttl: Duration,
    required: bool,
    max_request_body: usize,
    max_response_body: usize,
    stored_headers: Vec<HeaderName>,
    classifier: MutationClassifier,
    unavailable_retry_after: Duration,
    sweep_interval: Duration,
}

impl fmt::Debug for IdempotencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared.settings;
        f.debug_struct("IdempotencyLayer")
            .field("table", &self.shared.store_table())
            .field("ttl", &s.ttl)
            .field("required", &s.required)
            .field("max_request_body", &s.max_request_body)
            .field("max_response_body", &s.max_response_body)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn store_table(&self) -> &str {
        self.store.table()
    }
}

/// Builds an [`IdempotencyLayer`]; see [`IdempotencyLayer::builder`].
#[derive(Clone)]
pub struct IdempotencyLayerBuilder {
    config: tokio_postgres::Config,
    table: String,
    connect_timeout: Duration,
    statement_timeout: Duration,
    settings: Settings,
}

impl fmt::Debug for IdempotencyLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayerBuilder")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl IdempotencyLayer {
    /// A builder for records on the database at `dsn` (libpq style,
    /// `host=… user=… dbname=…`, or a `postgresql://` URL; plain TCP). Nothing
    /// connects until the first keyed mutation.
    pub fn builder(dsn: &str) -> Result<IdempotencyLayerBuilder, Error> {
        let config: tokio_postgres::Config = dsn.parse().map_err(|e| Error::Config {
            field: "dsn",
            rule: format!("not a PostgreSQL connection string: {e}"),
        })?;
        Ok(IdempotencyLayerBuilder {
            config,
            table: "failover_idempotency".to_owned(),
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            settings: Settings {
                ttl: Duration::from_secs(24 * 3600),
                required: false,
                max_request_body: 1 << 20,
                max_response_body: 1 << 20,
                stored_headers: vec![CONTENT_TYPE, LOCATION, ETAG],
                classifier: MutationClassifier::by_method(),
                unavailable_retry_after: Duration::from_secs(1),
                sweep_interval: Duration::from_secs(60),
            },
        })
    }
}

impl IdempotencyLayerBuilder {
    /// The table of records (default `failover_idempotency`): lowercase
    /// letters, digits and `_`, not starting with a digit, at most 48 bytes;
    /// optionally `schema.table`.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// How long a key is remembered after its first use (default 24 h).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.settings.ttl = ttl;
        self
    }

    /// Whether a mutation without a key is refused with `400` (default: it passes).
    pub fn required(mut self, required: bool) -> Self {
        self.settings.required = required;
        self
    }

    /// Largest request body of a keyed mutation, bytes (default 1 MiB;
    /// more: `413`).
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.settings.max_request_body = bytes;
        self
    }

    /// Largest response body stored, bytes (default 1 MiB). A larger one
    /// is sent whole to the client, but only its status and headers are
    /// stored: a replay has an empty body.
    pub fn max_response_body(mut self, bytes: usize) -> Self {
        self.settings.max_response_body = bytes;
        self
    }

    /// The response headers stored and replayed (default `content-type`,
    /// `location`, `etag`).
    pub fn stored_headers(mut self, headers: Vec<HeaderName>) -> Self {
        self.settings.stored_headers = headers;
        self
    }

    /// Decides which requests mutate (default: by method).
    pub fn classifier(mut self, classifier: MutationClassifier) -> Self {
        self.settings.classifier = classifier;
        self
    }

    /// Limit on connecting to the database (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Limit on each statement (default 5 s).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// `Retry-After` when the database is unavailable (default 1 s).
    pub fn unavailable_retry_after(mut self, retry_after: Duration) -> Self {
        self.settings.unavailable_retry_after = retry_after;
        self
    }

    /// Least time between two deletions of expired rows, which requests
    /// start in the background (default 60 s).
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.settings.sweep_interval = interval;
        self
    }

    /// Checks the settings and makes the layer.
    pub fn build(self) -> Result<IdempotencyLayer, Error> {
        check_table(&self.table)?;
        let s = &self.settings;
        if s.ttl < Duration::from_millis(1) {
            return Err(Error::Config {
                field: "ttl",
                rule: format!("must be at least 1 ms, got {:?}", s.ttl),
            });
        }
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("statement_timeout", self.statement_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::Config {
                    field,
                    rule: "must be above 0".to_owned(),
                });
            }
        }
        Ok(IdempotencyLayer {
            shared: Arc::new(Shared {
                store: Store::new(
                    self.config,
                    self.table,
                    self.connect_timeout,
                    self.statement_timeout,
                ),
                settings: self.settings,
                last_sweep: Mutex::new(Instant::now()),
            }),
        })
    }
}

fn check_table(table: &str) -> Result<(), Error> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 48
            && !p.as_bytes()[0].is_ascii_digit()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    let parts: Vec<&str> = table.split('.').collect();
    if parts.len() <= 2 && parts.iter().all(|p| part_ok(p)) {
        Ok(())
    } else {
        Err(Error::Config {
            field: "table",
            rule: format!("{table:?}: must be lowercase letters, digits and `_`, not starting with a digit, at most 48 bytes, optionally schema-qualified"),
        })
    }
}

/// The key of `value`: a structured-field string or a bare token, 1 to
/// [`MAX_KEY_LEN`] visible ASCII characters.
fn parse_key(value: &HeaderValue) -> Result<String, String> {
    let raw = value
        .to_str()
        .map_err(|_| "the Idempotency-Key header is not visible ASCII".to_owned())?
        .trim();
    let key = match raw.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').ok_or_else(|| {
            "the Idempotency-Key header opens a quote it does not close".to_owned()
        })?,
        None => raw,
    };
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(format!(
            "the Idempotency-Key must be 1 to {MAX_KEY_LEN} characters, got {}",
            key.len()
        ));
    }
    if !key
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
    {
        return Err(
            "the Idempotency-Key must be visible ASCII without quotes or backslashes".to_owned(),
        );
    }
    Ok(key.to_owned())
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;

    fn layer(&self, inner: S) -> Idempotency<S> {
        Idempotency {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The service [`IdempotencyLayer`] makes. Its inner service receives the
/// request body as `Either<ReqBody, Full<Bytes>>` (buffered for keyed
/// mutations), which axum routers and any body-generic service accept.
#[derive(Clone)]
pub struct Idempotency<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> fmt::Debug for Idempotency<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("table", &self.shared.store_table())
            .finish_non_exhaustive()
    }
}

/// The future of [`Idempotency`].
pub type IdempotencyFuture<E> =
    Pin<Box<dyn Future<Output = Result<Response<IdempotencyBody>, E>> + Send>>;

fn count(outcome: &'static str) {
    metrics::counter!(IDEMPOTENCY_METRIC, "outcome" => outcome).increment(1);
}

fn answer(
    outcome: &'static str,
    status: StatusCode,
    retry_after: Option<Duration>,
    message: String,
) -> Response<IdempotencyBody> {
    count(outcome);
    response::plain(status, retry_after, message).map(|b| b.map_err(|e| match e {}).boxed_unsync())
}

fn boxed<B>(response: Response<B>) -> Response<IdempotencyBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    response.map(|b| b.map_err(Into::into).boxed_unsync())
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Idempotency<S>
where
    S: Service<Request<Either<ReqBody, Full<Bytes>>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<IdempotencyBody>;
    type Error = S::Error;
    type Future = IdempotencyFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The ready service goes with this request; the clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = Arc::clone(&self.shared);
        let settings = &shared.settings;
        if !settings.classifier.mutates(RequestHead::of(&req)) {
            count("passed");
            let future = inner.call(req.map(Either::Left));
            return Box::pin(async move { future.await.map(boxed) });
        }
        let key = match req.headers().get(IDEMPOTENCY_KEY).map(parse_key) {
            None if settings.required => {
                let response = answer(
                    "missing_key",
                    StatusCode::BAD_REQUEST,
                    None,
                    "this request mutates and needs an Idempotency-Key header".to_owned(),
                );
                return Box::pin(async move { Ok(response) });
            }
            None => {
                count("passed");
                let future = inner.call(req.map(Either::Left));
                return Box::pin(async move { future.await.map(boxed) });
            }
            Some(Err(message)) => {
                let response = answer("invalid_key", StatusCode::BAD_REQUEST, None, message);
                return Box::pin(async move { Ok(response) });
            }
            Some(Ok(key)) => key,
        };
        Box::pin(keyed(shared, inner, req, key))
    }
}

/// A keyed mutation: claim, run or replay.
async fn keyed<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<ReqBody>,
    key: String,
) -> Result<Response<IdempotencyBody>, S::Error>
where
    S: Service<Request<Either<ReqBody, Full<Bytes>>>, Response = Response<ResBody>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let settings = &shared.settings;
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, settings.max_request_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<LengthLimitError>() => {
            return Ok(answer(
                "too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                format!(
                    "the request body is over {} bytes, the limit for a request with an Idempotency-Key",
                    settings.max_request_body
                ),
            ))
        }
        Err(error) => {
            return Ok(answer(
                "invalid_body",
                StatusCode::BAD_REQUEST,
                None,
                format!("the request body could not be read: {error}"),
            ))
        }
    };
    let mut print = Vec::with_capacity(body.len() + 64);
    print.extend_from_slice(parts.method.as_str().as_bytes());
    print.push(0);
    print.extend_from_slice(
        parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |p| p.as_str())
            .as_bytes(),
    );
    print.push(0);
    print.extend_from_slice(&body);

    maybe_sweep(&shared);
    let claim = shared.store.claim(&key, &print, settings.ttl).await;
    let owner = match claim {
        Err(error) => {
            tracing::warn!(%error, "idempotency: the store is unavailable; the mutation is refused rather than run without its record");
            return Ok(answer(
                "unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                Some(settings.unavailable_retry_after),
                "the idempotency store is unavailable; the request was not run".to_owned(),
            ));
        }
        Ok(
            Claim::InProgress {
                same_fingerprint: false,
            }
            | Claim::Completed {
                same_fingerprint: false,
                ..
            },
        ) => {
            return Ok(answer(
                "mismatch",
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                "this Idempotency-Key was used for a different request (method, path or body)"
                    .to_owned(),
            ))
        }
        Ok(Claim::InProgress {
            same_fingerprint: true,
        }) => {
            return Ok(answer(
                "in_progress",
                StatusCode::CONFLICT,
                Some(Duration::from_secs(1)),
                "a request with this Idempotency-Key is still being processed".to_owned(),
            ))
        }
        Ok(Claim::Completed {
            same_fingerprint: true,
            response,
        }) => {
            count("replayed");
            return Ok(replay(response));
        }
        Ok(Claim::Owned { owner }) => owner,
    };

    // Run in a task of its own: a client hanging up must not cancel a
    // mutation half way and leave its key without a response.
    let request = Request::from_parts(parts, Either::Right(Full::new(body)));
    let task_shared = Arc::clone(&shared);
    let task_key = key.clone();
    let task_owner = owner.clone();
    let task = tokio::spawn(async move {
        let shared = task_shared;
        let (key, owner) = (task_key, task_owner);
        let response = match inner.call(request).await {
            Ok(response) => response,
            Err(error) => {
                release(&shared, &key, &owner, "the service failed").await;
                return Err(error);
            }
        };
        let status = response.status();
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            release(&shared, &key, &owner, "the response asks for a retry").await;
            return Ok(boxed(response));
        }
        let (parts, body) = response.into_parts();
        let collected = match body::collect_bounded(body, shared.settings.max_response_body).await {
            Ok(collected) => collected,
            Err(error) => {
                // The body failed half way: what the client got is unknown.
                release(&shared, &key, &owner, "the response body failed").await;
                let message = format!("the response body failed: {error}");
                return Ok(answer("released", StatusCode::BAD_GATEWAY, None, message));
            }
        };
        let stored = StoredResponse {
            status: parts.status.as_u16(),
            headers: shared
                .settings
                .stored_headers
                .iter()
                .flat_map(|name| {
                    parts
                        .headers
                        .get_all(name)
                        .iter()
                        .map(|v| (name.as_str().to_owned(), v.as_bytes().to_vec()))
                })
                .collect(),
            body: collected.whole().map(|b| b.to_vec()),
        };
        match shared.store.complete(&key, &owner, &stored).await {
            Ok(()) => count("executed"),
            Err(error) => {
                count("store_failed");
                tracing::error!(%error, key, "idempotency: the mutation ran but its response could not be stored; retries with this key get 409 until it expires");
            }
        }
        Ok(Response::from_parts(parts, collected.into_body()))
    });
    match task.await {
        Ok(result) => result,
        Err(join_error) => {
            release(&shared, &key, &owner, "the service panicked").await;
            tracing::error!(%join_error, "idempotency: the service's task failed");
            Ok(answer(
                "released",
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "the service failed".to_owned(),
            ))
        }
    }
}

async fn release(shared: &Shared, key: &str, owner: &str, why: &str) {
    count("released");
    match shared.store.release(key, owner).await {
        Ok(()) => tracing::debug!(
            key,
            why,
            "idempotency: key released so that a retry runs again"
        ),
        Err(error) => {
            tracing::warn!(%error, key, why, "idempotency: could not release the key; retries get 409 until it expires")
        }
    }
}

fn replay(stored: StoredResponse) -> Response<IdempotencyBody> {
    let body = Full::new(Bytes::from(stored.body.unwrap_or_default()));
    let mut response = Response::new(body.map_err(|e| match e {}).boxed_unsync());
    *response.status_mut() =
        StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    for (name, value) in stored.headers {
        let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_bytes(&value))
        else {
            continue;
        };
        if name != CONTENT_LENGTH && name != RETRY_AFTER {
            headers.append(name, value);
        }
    }
    headers.insert(
        HeaderName::from_static(REPLAYED_HEADER),
        HeaderValue::from_static("true"),
    );
    response
}

fn maybe_sweep(shared: &Arc<Shared>) {
    let due = {
        let Ok(mut last) = shared.last_sweep.try_lock() else {
            return;
        };
        if last.elapsed() >= shared.settings.sweep_interval {
            *last = Instant::now();
            true
        } else {
            false
        }
    };
    if due {
        let shared = Arc::clone(shared);
        tokio::spawn(async move {
            match shared.store.sweep(1000).await {
                Ok(n) => tracing::debug!(deleted = n, "idempotency: expired keys deleted"),
                Err(error) => tracing::debug!(%error, "idempotency: deleting expired keys failed"),
            }
        });
    }
}
