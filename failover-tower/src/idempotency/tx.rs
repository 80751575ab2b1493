//! [`IdempotentTx`]: the keyed mutation's open transaction, handed to the
//! handler so that its writes and the key's record commit together.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::store::{Conn, Store};

/// Runs `$call` (with `$c` the transaction's client) under the statement
/// timeout, or fails if the transaction has ended.
macro_rules! on_tx {
    ($self:ident, |$c:ident| $call:expr) => {{
        let slot = $self.inner.conn.lock().await;
        let Some(conn) = slot.as_ref() else {
            return Err(Error::TransactionEnded);
        };
        let $c = &conn.client;
        let result = $self
            .inner
            .store
            .timed("running the handler's statement", $call)
            .await;
        $self.note(&result);
        result
    }};
}
use crate::error::Error;

/// The open transaction on the writer of one keyed mutation, in the
/// request's extensions for the handler to write through.
///
/// The [`IdempotencyLayer`](crate::IdempotencyLayer) opens it (holding the
/// key), the handler runs its statements on it, and the layer stores the
/// response in it and commits: **the handler's rows and the key's record
/// commit together or not at all.** So a retry after any failure — the
/// writer killed mid-request, a failover, a failed `COMMIT` — finds either
/// the record (and gets the stored response) or nothing (and runs once).
///
/// In axum, take it with the `Extension` extractor:
///
/// ```
/// use axum::{extract::Extension, http::StatusCode, routing::post, Router};
/// use failover_tower::{IdempotencyLayer, IdempotentTx};
///
/// async fn create(Extension(tx): Extension<IdempotentTx>, body: String) -> (StatusCode, String) {
///     match tx
///         .query_one("INSERT INTO orders (body) VALUES ($1) RETURNING id", &[&body])
///         .await
///     {
///         Ok(row) => (StatusCode::CREATED, format!("order {}", row.get::<_, i64>(0))),
///         // 503 asks for a retry: the layer rolls the insert back and
///         // stores nothing.
///         Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
///     }
/// }
///
/// # fn main() -> Result<(), failover_tower::Error> {
/// // Every POST must carry a key, so every POST gets its transaction.
/// let layer = IdempotencyLayer::builder(
///     "host=10.0.0.1,10.0.0.2 user=app dbname=app target_session_attrs=read-write",
/// )?
/// .required(true)
/// .build()?;
/// let app: Router = Router::new().route("/orders", post(create)).layer(layer);
/// # drop(app);
/// # Ok(())
/// # }
/// ```
///
/// It is there only on a mutating request that carries an
/// `Idempotency-Key` and whose key was free; a route that also takes
/// unkeyed mutations (the layer not [`required`](crate::IdempotencyLayerBuilder::required))
/// takes `Option<Extension<IdempotentTx>>` and writes elsewhere without one.
/// In a plain tower or hyper service, read it with
/// `request.extensions().get::<IdempotentTx>()`.
///
/// Rules of the transaction:
/// - Only writes made through this handle are exactly-once. A handler may
///   write elsewhere (its own pool, another service), but those writes
///   commit on their own schedule, and a retry after a failure can repeat
///   them.
/// - Do not run `COMMIT`, `ROLLBACK`, `BEGIN` or `SAVEPOINT` statements
///   through it: the layer ends the transaction.
/// - A response that asks for a retry (`5xx`, `408`, `429`) or a service
///   error **rolls the transaction back, the handler's rows with it**, and
///   nothing is stored: the retry runs again on a clean slate.
/// - If a statement fails, the transaction can only roll back: a `2xx`
///   answered after it becomes `500` (nothing was applied); any other
///   answer is stored with none of the handler's writes.
/// - Each statement is bounded by the layer's
///   [`statement_timeout`](crate::IdempotencyLayerBuilder::statement_timeout).
/// - Once the handler has answered, the transaction is over: a clone kept
///   by a spawned task gets [`Error::TransactionEnded`].
///
/// The key's lock is held until the transaction ends: keep handlers short.
/// Statements go through `tokio_postgres` (re-exported as
/// [`failover_tower::tokio_postgres`](crate::tokio_postgres)); parameters
/// are its `ToSql` values and rows its `Row`.
#[derive(Clone)]
pub struct IdempotentTx {
    inner: Arc<Inner>,
}

struct Inner {
    key: String,
    store: Arc<Store>,
    conn: Mutex<Option<Conn>>,
    /// A statement failed: the transaction is aborted.
    failed: AtomicBool,
    /// A statement failed in a way that leaves the connection unusable
    /// (broken, timed out, the node read-only).
    broken: AtomicBool,
    /// A statement's failure said the writer is gone or read-only.
    writer_suspect: AtomicBool,
}

impl fmt::Debug for IdempotentTx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotentTx")
            .field("key", &self.inner.key)
            .field("failed", &self.inner.failed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// How the handler's use of the transaction went.
pub(super) struct Finished {
    /// The connection, still in the transaction (`None` only if finished
    /// twice, which the layer does not do).
    pub(super) conn: Option<Conn>,
    /// A statement failed: the handler's writes cannot commit.
    pub(super) failed: bool,
    /// The connection cannot be used any more.
    pub(super) broken: bool,
    /// The failure said the writer is gone or read-only.
    pub(super) writer_suspect: bool,
}

impl IdempotentTx {
    pub(super) fn new(key: String, store: Arc<Store>, conn: Conn) -> Self {
        IdempotentTx {
            inner: Arc::new(Inner {
                key,
                store,
                conn: Mutex::new(Some(conn)),
                failed: AtomicBool::new(false),
                broken: AtomicBool::new(false),
                writer_suspect: AtomicBool::new(false),
            }),
        }
    }

    /// The request's `Idempotency-Key` (without quotes).
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// Takes the connection back from the handler.
    pub(super) async fn finish(&self) -> Finished {
        let conn = self.inner.conn.lock().await.take();
        Finished {
            conn,
            failed: self.inner.failed.load(Ordering::Acquire),
            broken: self.inner.broken.load(Ordering::Acquire),
            writer_suspect: self.inner.writer_suspect.load(Ordering::Acquire),
        }
    }

    /// Notes a failed statement: the transaction is aborted, and maybe the
    /// connection unusable.
    fn note<T>(&self, result: &Result<T, Error>) {
        if let Err(error) = result {
            if error.aborts_transaction() {
                self.inner.failed.store(true, Ordering::Release);
            }
            if error.connection_unusable() {
                self.inner.broken.store(true, Ordering::Release);
            }
            if error.writer_suspect() {
                self.inner.writer_suspect.store(true, Ordering::Release);
            }
        }
    }

    /// Runs a statement in the transaction; returns the number of rows it
    /// changed.
    pub async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error> {
        on_tx!(self, |c| c.execute(sql, params))
    }

    /// Runs a query in the transaction; returns its rows.
    pub async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        on_tx!(self, |c| c.query(sql, params))
    }

    /// Runs a query that returns exactly one row (else an error, and the
    /// transaction is aborted).
    pub async fn query_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error> {
        on_tx!(self, |c| c.query_one(sql, params))
    }

    /// Runs a query that returns at most one row.
    pub async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error> {
        on_tx!(self, |c| c.query_opt(sql, params))
    }

    /// Runs statements separated by `;`, without parameters (the simple
    /// query protocol).
    pub async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        on_tx!(self, |c| c.batch_execute(sql))
    }
}
