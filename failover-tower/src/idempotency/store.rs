//! The idempotency records in PostgreSQL, on the writer, and the
//! connections that carry each keyed mutation's transaction.
//!
//! A keyed mutation owns one connection for the length of its transaction,
//! so the layer keeps a few ([`max_connections`](super::IdempotencyLayerBuilder::max_connections)).
//! A pool can hide a dead writer behind idle connections; this one does not
//! let it: an idle connection found closed is dropped, one that fails before
//! anything ran is replaced once by a fresh one, and a failure that says the
//! writer is gone or no longer writable (the connection broke, the server
//! shut down or terminated us, the node is read-only) drops *every* idle
//! connection, so the next request connects again and, with
//! `target_session_attrs=read-write` over several hosts, finds the new writer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

use crate::error::Error;

/// How long after a failed connection attempt requests fail at once.
const CONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// The savepoint before the handler's statements.
const HANDLER_SAVEPOINT: &str = "failover_idempotency_handler";

/// A response as stored.
#[derive(Debug, Default)]
pub(crate) struct StoredResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    /// `None` when the body was over the size limit and not kept.
    pub(crate) body: Option<Vec<u8>>,
}

/// What opening a keyed mutation's transaction found.
#[derive(Debug)]
pub(crate) enum Opened {
    /// The key is free (never used, or expired): the transaction holds it;
    /// run the mutation in it.
    Free,
    /// Another transaction holds the key right now.
    Busy,
    /// A committed record: its response, and whether the fingerprint matches.
    Completed {
        same_fingerprint: bool,
        response: StoredResponse,
    },
}

/// One connection to the writer, and its share of the pool.
pub(crate) struct Conn {
    pub(crate) client: Client,
    generation: u64,
    /// Taken from the pool's idle list (not connected for this request).
    reused: bool,
    _permit: OwnedSemaphorePermit,
}

/// Where idempotency records live: a table on the writer.
pub(crate) struct Store {
    config: tokio_postgres::Config,
    table: String,
    connect_timeout: Duration,
    statement_timeout: Duration,
    idle: Mutex<Vec<Conn>>,
    /// Bumped when the writer looks gone: older connections are not reused.
    generation: AtomicU64,
    /// One permit per connection, idle or in use.
    permits: Arc<Semaphore>,
    /// Woken when a connection goes back to the idle list.
    returned: Notify,
    /// The table is known to exist (on the writer of the time; it
    /// replicates, so a new writer has it too).
    table_ready: AtomicBool,
    /// The last failed connection attempt: for a second after it, requests
    /// fail at once rather than queue behind one connect timeout each.
    failed: Mutex<Option<(Instant, String)>>,
    requests: AtomicU64,
    process: String,
}

impl Store {
    pub(crate) fn new(
        mut config: tokio_postgres::Config,
        table: String,
        connect_timeout: Duration,
        statement_timeout: Duration,
        max_connections: usize,
    ) -> Self {
        // Each host gets its own bounded attempt, so a silent first host
        // does not eat the time the next one (maybe the new writer) needs.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(connect_timeout);
        }
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Store {
            config,
            table,
            connect_timeout,
            statement_timeout,
            idle: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            permits: Arc::new(Semaphore::new(max_connections)),
            returned: Notify::new(),
            table_ready: AtomicBool::new(false),
            failed: Mutex::new(None),
            requests: AtomicU64::new(0),
            process: format!("{}-{started:x}", std::process::id()),
        }
    }

    /// The table's name.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// An idle connection (unless `fresh`), or a new one. A request that
    /// finds every connection in use waits — up to the statement timeout —
    /// for a permit *or* for a connection given back: an idle connection
    /// keeps its permit, so waiting on permits alone would starve behind
    /// connections sitting idle in the pool.
    async fn checkout(&self, fresh: bool) -> Result<Conn, Error> {
        let deadline = tokio::time::Instant::now() + self.statement_timeout;
        loop {
            let returned = self.returned.notified();
            tokio::pin!(returned);
            // Registered before looking, so a check-in in between wakes us.
            returned.as_mut().enable();
            if let Some(conn) = self.take_idle(fresh) {
                return Ok(conn);
            }
            tokio::select! {
                permit = tokio::time::timeout_at(
                    deadline,
                    Arc::clone(&self.permits).acquire_owned(),
                ) => {
                    let permit = permit
                        .map_err(|_| Error::DatabaseTimeout {
                            what: "waiting for a free connection (all are in use; see `max_connections`)",
                            after: self.statement_timeout,
                        })?
                        .map_err(|_| Error::Unavailable {
                            reason: "the layer is shutting down".to_owned(),
                        })?;
                    return self.connect(permit).await;
                }
                () = &mut returned => {}
            }
        }
    }

    /// Takes a usable idle connection, dropping stale ones (which frees
    /// their permits). With `fresh`, reuses nothing: one idle connection is
    /// dropped instead, so its permit goes to a new connection.
    fn take_idle(&self, fresh: bool) -> Option<Conn> {
        let generation = self.generation.load(Ordering::Acquire);
        let mut idle = self.idle.lock().ok()?;
        while let Some(mut conn) = idle.pop() {
            if fresh {
                drop(conn);
                return None;
            }
            if conn.generation == generation && !conn.client.is_closed() {
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    async fn connect(&self, permit: OwnedSemaphorePermit) -> Result<Conn, Error> {
        if let Ok(failed) = self.failed.lock() {
            if let Some((at, reason)) = failed.as_ref() {
                if at.elapsed() < CONNECT_BACKOFF {
                    return Err(Error::Unavailable {
                        reason: reason.clone(),
                    });
                }
            }
        }
        let generation = self.generation.load(Ordering::Acquire);
        let hosts = u32::try_from(self.config.get_hosts().len().max(1)).unwrap_or(u32::MAX);
        let limit = self.connect_timeout.saturating_mul(hosts);
        let connected = tokio::time::timeout(limit, self.config.connect(NoTls))
            .await
            .map_err(|_| Error::DatabaseTimeout {
                what: "connecting",
                after: limit,
            })
            .and_then(|r| {
                r.map_err(|source| Error::Database {
                    what: "connecting",
                    source,
                })
            });
        let (client, connection) = match connected {
            Ok(pair) => {
                if let Ok(mut failed) = self.failed.lock() {
                    *failed = None;
                }
                pair
            }
            Err(error) => {
                if let Ok(mut failed) = self.failed.lock() {
                    *failed = Some((Instant::now(), error.to_string()));
                }
                return Err(error);
            }
        };
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "idempotency store: connection to the writer ended");
            }
        });
        if !self.table_ready.load(Ordering::Acquire) {
            self.create_table(&client).await?;
            self.table_ready.store(true, Ordering::Release);
        }
        Ok(Conn {
            client,
            generation,
            reused: false,
            _permit: permit,
        })
    }

    /// Creates the table if it is missing. Checked first without a lock:
    /// `CREATE INDEX IF NOT EXISTS` would take a share lock on the table and
    /// queue behind (and in front of) every transaction writing to it.
    ///
    /// Creation is serialized by an advisory lock on the table's name:
    /// `IF NOT EXISTS` alone is not safe against a concurrent creator — a
    /// session that checked before the other committed fails with a unique
    /// violation on the catalog or, about once in two hundred races on this
    /// machine, with "relation already exists". Under the lock the second
    /// creator's check runs after the first committed, and skips.
    async fn create_table(&self, client: &Client) -> Result<(), Error> {
        let table = &self.table;
        let exists = self
            .timed(
                "looking for the table",
                client.query_typed(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[(&table as &(dyn ToSql + Sync), Type::TEXT)],
                ),
            )
            .await?
            .first()
            .and_then(|row| row.try_get::<_, bool>(0).ok())
            .unwrap_or(false);
        if exists {
            return Ok(());
        }
        // `table` passed `check_table` (an SQL identifier, optionally
        // schema-qualified), so it is safe inside a string literal too.
        let ddl = format!(
            "BEGIN;
            SELECT pg_advisory_xact_lock(hashtextextended('{table}:create', 0));
            CREATE TABLE IF NOT EXISTS {table} (
                key text PRIMARY KEY,
                fingerprint bytea NOT NULL,
                owner text NOT NULL,
                state text NOT NULL CHECK (state IN ('in_progress', 'completed')),
                status smallint,
                header_names text[],
                header_values bytea[],
                body bytea,
                created_at timestamptz NOT NULL DEFAULT now(),
                expires_at timestamptz NOT NULL
            );
            CREATE INDEX IF NOT EXISTS {table}_expires_at ON {table} (expires_at);
            COMMIT;"
        );
        match self
            .timed("creating the table", client.batch_execute(&ddl))
            .await
        {
            Ok(()) => Ok(()),
            // A creator that does not take the lock (an older version of
            // this layer, or a migration run by hand) raced us: the table
            // exists all the same. The failed statement left the session in
            // an aborted transaction block; end it before the connection
            // carries a request. (On any other error the caller drops the
            // connection.)
            Err(Error::Database { source, .. })
                if source.code() == Some(&SqlState::UNIQUE_VIOLATION)
                    || source.code() == Some(&SqlState::DUPLICATE_TABLE) =>
            {
                self.timed("creating the table", client.batch_execute("ROLLBACK"))
                    .await
            }
            Err(error) => Err(error),
        }
    }

    /// Gives back a connection whose transaction ended cleanly.
    pub(crate) fn checkin(&self, conn: Conn) {
        if conn.client.is_closed() || conn.generation != self.generation.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn);
        }
        self.returned.notify_one();
    }

    /// Drops a connection after `error`; when the error says the writer is
    /// gone or read-only, drops every idle connection too.
    pub(crate) fn discard(&self, conn: Conn, error: &Error) {
        if error.code() == Some(&SqlState::UNDEFINED_TABLE) {
            // Dropped behind our back: the next connection creates it.
            self.table_ready.store(false, Ordering::Release);
        }
        self.drop_broken(conn, error.writer_suspect());
        if error.writer_suspect() {
            tracing::info!(%error, "idempotency store: the writer failed; every idle connection is dropped, the next request connects again");
        }
    }

    /// Drops a connection that cannot be used any more (the server rolls
    /// back its transaction when it closes); with `writer_suspect`, drops
    /// every idle connection too.
    pub(crate) fn drop_broken(&self, conn: Conn, writer_suspect: bool) {
        drop(conn);
        if writer_suspect {
            self.generation.fetch_add(1, Ordering::AcqRel);
            if let Ok(mut idle) = self.idle.lock() {
                idle.clear();
            }
        }
    }

    /// Runs `f` under the statement timeout.
    pub(crate) async fn timed<T>(
        &self,
        what: &'static str,
        f: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.statement_timeout, f).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(Error::Database { what, source }),
            Err(_) => Err(Error::DatabaseTimeout {
                what,
                after: self.statement_timeout,
            }),
        }
    }

    /// Opens the transaction of a keyed mutation with fingerprint input
    /// `print` (hashed with SHA-256 by the server): `BEGIN`, take the key's
    /// lock without waiting, read its committed record, set the savepoint
    /// before the handler. One round trip: the statements are pipelined, and
    /// the server runs them in order, so the read's snapshot (per statement,
    /// `READ COMMITTED`) is taken after the lock is held — and a previous
    /// holder's commit is visible before its lock is released.
    ///
    /// On `Ok`, the connection is inside the open transaction; on `Err`, it
    /// was discarded.
    pub(crate) async fn open(&self, key: &str, print: &[u8]) -> Result<(Conn, Opened), Error> {
        let mut fresh = false;
        loop {
            let conn = self.checkout(fresh).await?;
            match self.open_on(&conn, key, print).await {
                Ok(opened) => return Ok((conn, opened)),
                Err(error) => {
                    let retry = conn.reused && !fresh;
                    self.discard(conn, &error);
                    // An idle connection that broke while idle: nothing
                    // ran, a fresh one tries again (once).
                    if retry && error.writer_suspect() {
                        fresh = true;
                        continue;
                    }
                    return Err(error);
                }
            }
        }
    }

    async fn open_on(&self, conn: &Conn, key: &str, print: &[u8]) -> Result<Opened, Error> {
        let table = &self.table;
        let lock_name = format!("{table}:{key}");
        let lock = "SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))";
        let select = format!(
            "SELECT fingerprint = sha256($2), status, header_names, header_values, body
             FROM {table} WHERE key = $1 AND state = 'completed' AND expires_at > now()"
        );
        let c = &conn.client;
        let lock_params = [(&lock_name as &(dyn ToSql + Sync), Type::TEXT)];
        let select_params = [
            (&key as &(dyn ToSql + Sync), Type::TEXT),
            (&print, Type::BYTEA),
        ];
        // What the handler writes can be undone alone, keeping the lock.
        let savepoint = format!("SAVEPOINT {HANDLER_SAVEPOINT}");
        let (begun, locked, record, saved) = tokio::join!(
            self.timed("beginning a transaction", c.batch_execute("BEGIN")),
            self.timed("taking the key's lock", c.query_typed(lock, &lock_params)),
            self.timed("reading a key", c.query_typed(&select, &select_params)),
            self.timed("beginning a transaction", c.batch_execute(&savepoint)),
        );
        begun?;
        saved?;
        let locked: bool = locked?
            .first()
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|source| Error::Database {
                what: "taking the key's lock",
                source,
            })?
            .unwrap_or(false);
        let record = record?;
        if !locked {
            return Ok(Opened::Busy);
        }
        let Some(row) = record.first() else {
            return Ok(Opened::Free);
        };
        let read = |source| Error::Database {
            what: "reading a key",
            source,
        };
        let same_fingerprint: bool = row.try_get(0).map_err(read)?;
        let status: Option<i16> = row.try_get(1).map_err(read)?;
        let names: Option<Vec<String>> = row.try_get(2).map_err(read)?;
        let values: Option<Vec<Vec<u8>>> = row.try_get(3).map_err(read)?;
        let body: Option<Vec<u8>> = row.try_get(4).map_err(read)?;
        let headers = names
            .unwrap_or_default()
            .into_iter()
            .zip(values.unwrap_or_default())
            .collect();
        Ok(Opened::Completed {
            same_fingerprint,
            response: StoredResponse {
                status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(500),
                headers,
                body,
            },
        })
    }

    /// Ends a transaction that must leave nothing behind, and gives the
    /// connection back (or drops it if the rollback failed).
    pub(crate) async fn rollback(&self, conn: Conn) {
        match self
            .timed("rolling back", conn.client.batch_execute("ROLLBACK"))
            .await
        {
            Ok(()) => self.checkin(conn),
            Err(error) => {
                tracing::debug!(%error, "idempotency store: rollback failed; the connection is dropped (the server rolls back)");
                self.discard(conn, &error);
            }
        }
    }

    /// Stores `response` as `key`'s record and commits the transaction:
    /// the record and everything the handler wrote through the transaction
    /// commit together, or nothing does. Pipelined, one round trip. When
    /// `handler_failed` (one of its statements failed, so the transaction
    /// is aborted), the handler's writes are rolled back first and the
    /// record commits alone.
    ///
    /// `Ok`: committed. `Err`: not committed — or, if the connection died
    /// during `COMMIT`, unknown; in both cases the record and the handler's
    /// rows share one fate, so a retry either replays or runs once.
    pub(crate) async fn commit(
        &self,
        conn: Conn,
        key: &str,
        print: &[u8],
        ttl: Duration,
        handler_failed: bool,
        response: &StoredResponse,
    ) -> Result<(), Error> {
        if handler_failed {
            let undone = self
                .timed(
                    "rolling back the handler's writes",
                    conn.client
                        .batch_execute(&format!("ROLLBACK TO SAVEPOINT {HANDLER_SAVEPOINT}")),
                )
                .await;
            if let Err(error) = undone {
                self.discard(conn, &error);
                return Err(error);
            }
        }
        let owner = format!(
            "{}-{}",
            self.process,
            self.requests.fetch_add(1, Ordering::Relaxed)
        );
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let (names, values): (Vec<&str>, Vec<&[u8]>) = response
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .unzip();
        let status = i16::try_from(response.status).unwrap_or(i16::MAX);
        let table = &self.table;
        // An expired record (or an `in_progress` one left by an older
        // version of this layer) gives way; a live one makes the INSERT fail,
        // and then COMMIT rolls back.
        let delete = format!(
            "DELETE FROM {table} WHERE key = $1 AND (expires_at <= now() OR state <> 'completed')"
        );
        let insert = format!(
            "INSERT INTO {table} (key, fingerprint, owner, state, status, header_names,
                 header_values, body, expires_at)
             VALUES ($1, sha256($2), $3, 'completed', $4, $5, $6, $7,
                 now() + $8::bigint * interval '1 millisecond')"
        );
        let c = &conn.client;
        let delete_params = [(&key as &(dyn ToSql + Sync), Type::TEXT)];
        let insert_params = [
            (&key as &(dyn ToSql + Sync), Type::TEXT),
            (&print, Type::BYTEA),
            (&owner, Type::TEXT),
            (&status, Type::INT2),
            (&names, Type::TEXT_ARRAY),
            (&values, Type::BYTEA_ARRAY),
            (&response.body, Type::BYTEA),
            (&ttl_ms, Type::INT8),
        ];
        let (deleted, inserted, committed) = tokio::join!(
            self.timed(
                "storing the response",
                c.query_typed(&delete, &delete_params)
            ),
            self.timed(
                "storing the response",
                c.query_typed(&insert, &insert_params)
            ),
            self.timed("committing", c.batch_execute("COMMIT")),
        );
        // A failed DELETE or INSERT aborted the transaction: the COMMIT
        // after it rolled back (PostgreSQL answers it without an error).
        let result = deleted.and(inserted).map(drop).and(committed);
        match result {
            Ok(()) => {
                self.checkin(conn);
                Ok(())
            }
            Err(error) => {
                self.discard(conn, &error);
                Err(error)
            }
        }
    }

    /// Deletes up to `limit` expired rows; returns how many.
    pub(crate) async fn sweep(&self, limit: i64) -> Result<u64, Error> {
        let conn = self.checkout(false).await?;
        let table = &self.table;
        let sql = format!(
            "DELETE FROM {table} WHERE ctid IN
                 (SELECT ctid FROM {table} WHERE expires_at <= now() LIMIT $1)"
        );
        let result = self
            .timed(
                "deleting expired keys",
                conn.client
                    .execute_typed(&sql, &[(&limit as &(dyn ToSql + Sync), Type::INT8)]),
            )
            .await;
        match result {
            Ok(n) => {
                self.checkin(conn);
                Ok(n)
            }
            Err(error) => {
                self.discard(conn, &error);
                Err(error)
            }
        }
    }
}
