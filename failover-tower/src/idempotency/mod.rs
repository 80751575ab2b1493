//! [`IdempotencyLayer`]: a retried mutation takes effect once, across a
//! failover too. The `Idempotency-Key` header of the IETF httpapi draft
//! (draft-ietf-httpapi-idempotency-key-header), with records in PostgreSQL
//! on the writer, committed in the same transaction as the mutation
//! ([`IdempotentTx`]) — the "atomic phase" of Stripe's design.

mod body;
mod store;
mod tx;

pub use tx::IdempotentTx;

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
use store::{Opened, Store, StoredResponse};

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
/// a mutation, or no key), `missing_key`, `invalid_key`, `invalid_body`,
/// `too_large`, `executed` (the service ran and its response was committed
/// with its writes), `replayed`, `mismatch` (422), `in_progress` (409: the
/// key's transaction is open elsewhere), `unavailable` (503: the writer
/// could not open the transaction; nothing ran), `rolled_back` (the service
/// ran, but its answer asks for a retry — `5xx`, `408`, `429` —, it failed,
/// or its transaction failed: everything it wrote through the transaction
/// was rolled back and nothing is stored), `commit_failed` (503: storing the
/// response or `COMMIT` failed after the service ran; its writes share the
/// record's fate, so a retry replays or runs once).
pub const IDEMPOTENCY_METRIC: &str = "failover_tower_idempotency_total";

/// Longest key accepted, bytes.
pub const MAX_KEY_LEN: usize = 255;

/// A layer that makes a retried mutation take effect once, even when the
/// writer fails over in the middle of it.
///
/// A mutating request ([`MutationClassifier`], by method by default) with
/// an `Idempotency-Key` header runs in **one transaction on the writer**:
///
/// 1. Its body is read (more than [`max_request_body`](IdempotencyLayerBuilder::max_request_body)
///    bytes: `413`) for its fingerprint: SHA-256 of method, path and query,
///    and body, computed by PostgreSQL.
/// 2. The layer opens a transaction, takes the key's lock without waiting
///    (`pg_try_advisory_xact_lock` on a 64-bit hash of table and key) and
///    reads the key's committed record, all in one round trip. The lock is
///    held, or not, at once: a concurrent duplicate gets `409` with
///    `Retry-After: 1` straight away instead of queueing behind the first
///    (a row lock or `lock_timeout` would make it wait). It is released by
///    `COMMIT`, `ROLLBACK`, or the session ending — a crashed process or a
///    dead writer leaves no key stuck — and is not replicated, so on a new
///    writer nothing holds it. The table ([`table`](IdempotencyLayerBuilder::table),
///    default `failover_idempotency`) is created if missing.
/// 3. A committed record with the same fingerprint: its response is
///    replayed, marked `idempotent-replayed: true`. Another fingerprint:
///    `422`. (While a request is in progress its fingerprint is not yet
///    visible: a duplicate gets `409` whatever its payload.)
/// 4. No record (or an expired one): the service runs with the open
///    transaction in the request's extensions, an [`IdempotentTx`] its
///    handler writes through. Then the layer stores the response — status,
///    the [`stored_headers`](IdempotencyLayerBuilder::stored_headers), and
///    a body of at most [`max_response_body`](IdempotencyLayerBuilder::max_response_body)
///    bytes — in the same transaction and commits (one more round trip):
///    **the handler's rows and the key's record commit together or not at
///    all.** The response goes to the client after `COMMIT` succeeded.
/// 5. Keys expire [`ttl`](IdempotencyLayerBuilder::ttl) after their use
///    (default 24 h): an expired key is free again, and expired rows are
///    deleted at most every [`sweep_interval`](IdempotencyLayerBuilder::sweep_interval).
///
/// **Rolled back, not stored:** a response that asks for a retry — `5xx`,
/// `408`, `429` — or a service error rolls the transaction back, *and
/// everything the handler wrote through it goes too*, so the retry runs on
/// a clean slate. A `2xx` answered after one of the handler's statements
/// failed is rolled back and becomes `500` (nothing it wrote can commit);
/// another answer after a failed statement is stored without the handler's
/// writes.
///
/// **Across a failover.** If storing the response or `COMMIT` fails — the
/// writer died, was fenced, or the connection broke — the client gets `503`
/// with [`Retry-After`](IdempotencyLayerBuilder::unavailable_retry_after),
/// never the handler's answer: the transaction either committed whole (a
/// retry is replayed) or not at all (a retry runs once). The table
/// replicates with the rest of the database; with synchronous replication
/// an acknowledged mutation is on the new writer. Point the DSN at the
/// writer: the writer's DNS name, or every node with
/// `target_session_attrs=read-write` (then a replica or a fenced, read-only
/// old writer is skipped). A failure that says the writer is gone (a broken
/// connection, a terminated session, a read-only node) drops every idle
/// connection, so the next request connects again and reaches the new
/// writer within [`connect_timeout`](IdempotencyLayerBuilder::connect_timeout)
/// per host; for a second after a failed connection attempt requests get
/// their 503 at once instead of queueing behind one connect timeout each.
/// (A statement that times out drops only its own connection: a slow
/// writer is slow on all of them.)
/// If the database cannot be reached the answer is `503` and the service is
/// not called.
///
/// **Only writes made through the [`IdempotentTx`] are exactly-once.** A
/// handler that ignores it and writes elsewhere still works — it never runs
/// twice at once for one key, nor again once the key's record committed —
/// but those writes commit on their own: if the writer fails, or the
/// response asks for a retry, between them and the layer's `COMMIT`, a
/// retry runs them again.
///
/// The key's lock shares PostgreSQL's advisory-lock space with the
/// application's own `pg_advisory_*` locks (a 64-bit hash of table and
/// key); a collision only makes two keys answer `409` to each other while
/// both are in progress.
///
/// Each keyed mutation holds a connection for its whole run (at most
/// [`max_connections`](IdempotencyLayerBuilder::max_connections)) and costs
/// two round trips of the layer's own on the writer. The service runs in a
/// task of its own, so a client that hangs up does not cancel a transaction
/// half way.
///
/// Requests that do not mutate pass; a mutation without a key passes
/// (without an [`IdempotentTx`]) unless [`required`](IdempotencyLayerBuilder::required)
/// (then `400`). A key is 1 to 255 visible ASCII characters, optionally in
/// double quotes (a structured-field string). Keys are global to the table:
/// give each client its own prefix if clients do not generate unique keys.
#[derive(Clone)]
pub struct IdempotencyLayer {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<Store>,
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
    max_connections: usize,
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
            max_connections: 16,
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

    /// Limit on connecting to each host of the DSN (default 5 s), unless the
    /// DSN sets its own `connect_timeout`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Limit on each statement, the layer's and the handler's through the
    /// [`IdempotentTx`], and on waiting for a free connection (default 5 s).
    /// A statement over it fails, and the connection is dropped.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Most connections to the writer (default 16): each keyed mutation in
    /// progress holds one for its transaction; more wait up to the
    /// [`statement_timeout`](Self::statement_timeout), then get `503`.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
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
        if self.max_connections == 0 {
            return Err(Error::Config {
                field: "max_connections",
                rule: "must be at least 1".to_owned(),
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
                store: Arc::new(Store::new(
                    self.config,
                    self.table,
                    self.connect_timeout,
                    self.statement_timeout,
                    self.max_connections,
                )),
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

/// Whether a response asks the client to retry: not stored, rolled back.
fn asks_for_retry(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// A keyed mutation: read the body, then open, run and commit, or replay.
async fn keyed<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    inner: S,
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

    // The transaction runs in a task of its own: a client hanging up must
    // not cancel it half way.
    let request = Request::from_parts(parts, Either::Right(Full::new(body)));
    let task = tokio::spawn(transaction(Arc::clone(&shared), inner, request, key, print));
    match task.await {
        Ok(result) => result,
        Err(join_error) => {
            // The task's connection went with it: the server rolls back.
            tracing::error!(%join_error, "idempotency: the service's task failed; its transaction is rolled back");
            Ok(answer(
                "rolled_back",
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "the service failed; nothing was applied".to_owned(),
            ))
        }
    }
}

/// Opens the key's transaction, runs the service in it and commits its
/// response with its writes; or answers from the committed record.
async fn transaction<S, ReqBody, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    mut request: Request<Either<ReqBody, Full<Bytes>>>,
    key: String,
    print: Vec<u8>,
) -> Result<Response<IdempotencyBody>, S::Error>
where
    S: Service<Request<Either<ReqBody, Full<Bytes>>>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let settings = &shared.settings;
    let store = &shared.store;
    let unavailable = |outcome: &'static str, message: String| {
        answer(
            outcome,
            StatusCode::SERVICE_UNAVAILABLE,
            Some(settings.unavailable_retry_after),
            message,
        )
    };
    let (conn, opened) = match store.open(&key, &print).await {
        Ok(pair) => pair,
        Err(error) => {
            tracing::warn!(%error, "idempotency: the writer is unavailable; the mutation is refused rather than run without its record");
            return Ok(unavailable(
                "unavailable",
                "the idempotency store is unavailable; the request was not run".to_owned(),
            ));
        }
    };
    match opened {
        Opened::Free => {}
        Opened::Busy => {
            store.rollback(conn).await;
            return Ok(answer(
                "in_progress",
                StatusCode::CONFLICT,
                Some(Duration::from_secs(1)),
                "a request with this Idempotency-Key is still being processed".to_owned(),
            ));
        }
        Opened::Completed {
            same_fingerprint: false,
            ..
        } => {
            store.rollback(conn).await;
            return Ok(answer(
                "mismatch",
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                "this Idempotency-Key was used for a different request (method, path or body)"
                    .to_owned(),
            ));
        }
        Opened::Completed {
            same_fingerprint: true,
            response,
        } => {
            store.rollback(conn).await;
            count("replayed");
            return Ok(replay(response));
        }
    }

    let tx = IdempotentTx::new(key.clone(), Arc::clone(store), conn);
    request.extensions_mut().insert(tx.clone());
    let result = inner.call(request).await;
    let finished = tx.finish().await;
    let Some(conn) = finished.conn else {
        return Ok(unavailable(
            "commit_failed",
            "the request's transaction was lost; nothing was applied".to_owned(),
        ));
    };
    // Ends a transaction that must leave nothing behind.
    let roll_back = |conn, why: &'static str| {
        let (broken, suspect) = (finished.broken, finished.writer_suspect);
        let key = key.clone();
        async move {
            count("rolled_back");
            tracing::debug!(
                key,
                why,
                "idempotency: rolled back, nothing stored; a retry runs again"
            );
            if broken {
                // The server rolls back when the connection closes.
                store.drop_broken(conn, suspect);
            } else {
                store.rollback(conn).await;
            }
        }
    };
    if finished.broken {
        // The writer is gone, read-only (a fence, a demotion) or too slow:
        // whatever the handler made of its failed statement, the client is
        // asked to retry, which reaches the new writer.
        roll_back(conn, "the writer failed during the request").await;
        return Ok(unavailable(
            "rolled_back",
            "the writer failed or refused writes during the request; nothing was applied"
                .to_owned(),
        ));
    }
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            roll_back(conn, "the service failed").await;
            return Err(error);
        }
    };
    let status = response.status();
    if asks_for_retry(status) {
        roll_back(conn, "the response asks for a retry").await;
        return Ok(boxed(response));
    }
    if finished.failed && status.is_success() {
        roll_back(conn, "a statement failed but the service answered 2xx").await;
        tracing::warn!(key, %status, "idempotency: a statement of the handler's transaction failed, yet it answered success; nothing was applied");
        return Ok(answer(
            "rolled_back",
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "a statement of the request's transaction failed; nothing was applied".to_owned(),
        ));
    }
    let (parts, body) = response.into_parts();
    let collected = match body::collect_bounded(body, settings.max_response_body).await {
        Ok(collected) => collected,
        Err(error) => {
            // The body failed half way: what the client got is unknown.
            roll_back(conn, "the response body failed").await;
            let message = format!("the response body failed; nothing was applied: {error}");
            return Ok(answer(
                "rolled_back",
                StatusCode::BAD_GATEWAY,
                None,
                message,
            ));
        }
    };
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        headers: settings
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
    // After a failed statement the handler's writes cannot commit; its
    // answer (a 4xx) is stored without them.
    let committed = store
        .commit(conn, &key, &print, settings.ttl, finished.failed, &stored)
        .await;
    match committed {
        Ok(()) => {
            count("executed");
            Ok(Response::from_parts(parts, collected.into_body()))
        }
        Err(error) => {
            tracing::warn!(%error, key, "idempotency: the response could not be committed with the mutation; neither or both are on the writer, and the client is asked to retry");
            Ok(unavailable(
                "commit_failed",
                "the writer failed while committing; retry with the same Idempotency-Key"
                    .to_owned(),
            ))
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
