//! The idempotency records in PostgreSQL, on the writer: one connection
//! that reconnects when it breaks (no pool: a pool would hide a dead writer
//! behind idle connections).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use crate::error::Error;

/// How long after a failed connection attempt requests fail at once.
const CONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// The state of a key found in the table.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The key was free (or expired): this request owns it under `owner`.
    Owned { owner: String },
    /// Another request owns it and has not finished.
    InProgress { same_fingerprint: bool },
    /// A request finished with this key: its stored response.
    Completed {
        same_fingerprint: bool,
        response: StoredResponse,
    },
}

/// A response as stored.
#[derive(Debug, Default)]
pub(crate) struct StoredResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    /// `None` when the body was over the size limit and not kept.
    pub(crate) body: Option<Vec<u8>>,
}

/// Where idempotency records live: a table on the writer.
pub(crate) struct Store {
    config: tokio_postgres::Config,
    table: String,
    connect_timeout: Duration,
    statement_timeout: Duration,
    client: Mutex<Option<Arc<Client>>>,
    /// The last failed connection attempt: for a second after it, requests
    /// fail at once rather than queue behind one connect timeout each.
    failed: std::sync::Mutex<Option<(std::time::Instant, String)>>,
    claims: AtomicU64,
    process: String,
}

impl Store {
    pub(crate) fn new(
        config: tokio_postgres::Config,
        table: String,
        connect_timeout: Duration,
        statement_timeout: Duration,
    ) -> Self {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        Store {
            config,
            table,
            connect_timeout,
            statement_timeout,
            client: Mutex::new(None),
            failed: std::sync::Mutex::new(None),
            claims: AtomicU64::new(0),
            process: format!("{}-{started:x}", std::process::id()),
        }
    }

    /// The table's name.
    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// The connection, (re)connecting and creating the table if needed.
    async fn client(&self) -> Result<Arc<Client>, Error> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            if !client.is_closed() {
                return Ok(Arc::clone(client));
            }
        }
        *slot = None;
        if let Ok(failed) = self.failed.lock() {
            if let Some((at, reason)) = failed.as_ref() {
                if at.elapsed() < CONNECT_BACKOFF {
                    return Err(Error::Unavailable {
                        reason: reason.clone(),
                    });
                }
            }
        }
        let connected = tokio::time::timeout(self.connect_timeout, self.config.connect(NoTls))
            .await
            .map_err(|_| Error::DatabaseTimeout {
                what: "connecting",
                after: self.connect_timeout,
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
                    *failed = Some((std::time::Instant::now(), error.to_string()));
                }
                return Err(error);
            }
        };
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "idempotency store: connection to the writer ended");
            }
        });
        let table = &self.table;
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {table} (
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
            CREATE INDEX IF NOT EXISTS {table}_expires_at ON {table} (expires_at);"
        );
        let created = tokio::time::timeout(self.statement_timeout, client.batch_execute(&ddl))
            .await
            .map_err(|_| Error::DatabaseTimeout {
                what: "creating the table",
                after: self.statement_timeout,
            })?;
        if let Err(source) = created {
            // Two processes creating it at once: the loser sees a unique
            // violation on the catalog; the table exists all the same.
            if source.code() != Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                return Err(Error::Database {
                    what: "creating the table",
                    source,
                });
            }
        }
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    /// Runs `f` on the connection under the statement timeout; a failure
    /// drops the connection so that the next call reconnects (a fenced or
    /// demoted node refuses writes; the DSN's `target_session_attrs=read-write`
    /// then finds the new writer).
    async fn run<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, Error>
    where
        F: FnOnce(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let client = self.client().await?;
        let result =
            match tokio::time::timeout(self.statement_timeout, f(Arc::clone(&client))).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(source)) => Err(Error::Database { what, source }),
                Err(_) => Err(Error::DatabaseTimeout {
                    what,
                    after: self.statement_timeout,
                }),
            };
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, &client)) {
            *slot = None;
        }
        result
    }

    /// Claims `key` for a request with fingerprint input `print` (hashed
    /// with SHA-256 by the server), or reports who has it. An expired row is
    /// taken over as if free.
    pub(crate) async fn claim(
        &self,
        key: &str,
        print: &[u8],
        ttl: Duration,
    ) -> Result<Claim, Error> {
        let owner = format!(
            "{}-{}",
            self.process,
            self.claims.fetch_add(1, Ordering::Relaxed)
        );
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let table = &self.table;
        let insert = format!(
            "INSERT INTO {table} AS r (key, fingerprint, owner, state, expires_at)
             VALUES ($1, sha256($2), $3, 'in_progress', now() + $4::bigint * interval '1 millisecond')
             ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
                 owner = EXCLUDED.owner, state = 'in_progress', status = NULL,
                 header_names = NULL, header_values = NULL, body = NULL,
                 created_at = now(), expires_at = EXCLUDED.expires_at
             WHERE r.expires_at <= now()
             RETURNING 1"
        );
        let select = format!(
            "SELECT fingerprint = sha256($2), state, status, header_names, header_values, body
             FROM {table} WHERE key = $1 AND expires_at > now()"
        );
        // A row seen by neither statement was deleted or expired in between
        // (a failed request released it): try again, a few times.
        for _ in 0..3 {
            let owned = self
                .run("claiming a key", |c| {
                    let (insert, owner) = (insert.clone(), owner.clone());
                    async move { c.query_opt(&insert, &[&key, &print, &owner, &ttl_ms]).await }
                })
                .await?;
            if owned.is_some() {
                return Ok(Claim::Owned { owner });
            }
            let row = self
                .run("reading a key", |c| {
                    let select = select.clone();
                    async move { c.query_opt(&select, &[&key, &print]).await }
                })
                .await?;
            let Some(row) = row else { continue };
            let same_fingerprint: bool = row.get(0);
            let state: &str = row.get(1);
            if state == "in_progress" {
                return Ok(Claim::InProgress { same_fingerprint });
            }
            let status: Option<i16> = row.get(2);
            let names: Option<Vec<String>> = row.get(3);
            let values: Option<Vec<Vec<u8>>> = row.get(4);
            let body: Option<Vec<u8>> = row.get(5);
            let headers = names
                .unwrap_or_default()
                .into_iter()
                .zip(values.unwrap_or_default())
                .collect();
            return Ok(Claim::Completed {
                same_fingerprint,
                response: StoredResponse {
                    status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(500),
                    headers,
                    body,
                },
            });
        }
        Err(Error::KeyChurn)
    }

    /// Stores the response of the request that owns `key`.
    pub(crate) async fn complete(
        &self,
        key: &str,
        owner: &str,
        response: &StoredResponse,
    ) -> Result<(), Error> {
        let (names, values): (Vec<&str>, Vec<&[u8]>) = response
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .unzip();
        let status = i16::try_from(response.status).unwrap_or(i16::MAX);
        let sql = format!(
            "UPDATE {} SET state = 'completed', status = $3, header_names = $4,
                 header_values = $5, body = $6
             WHERE key = $1 AND owner = $2",
            self.table
        );
        self.run("storing a response", |c| async move {
            c.execute(
                &sql,
                &[&key, &owner, &status, &names, &values, &response.body],
            )
            .await
        })
        .await
        .map(drop)
    }

    /// Deletes the row `owner` holds for `key`, so that a retry runs again.
    pub(crate) async fn release(&self, key: &str, owner: &str) -> Result<(), Error> {
        let sql = format!("DELETE FROM {} WHERE key = $1 AND owner = $2", self.table);
        self.run("releasing a key", |c| async move {
            c.execute(&sql, &[&key, &owner]).await
        })
        .await
        .map(drop)
    }

    /// Deletes up to `limit` expired rows; returns how many.
    pub(crate) async fn sweep(&self, limit: i64) -> Result<u64, Error> {
        let table = &self.table;
        let sql = format!(
            "DELETE FROM {table} WHERE ctid IN
                 (SELECT ctid FROM {table} WHERE expires_at <= now() LIMIT $1)"
        );
        self.run("deleting expired keys", |c| async move {
            c.execute(&sql, &[&limit]).await
        })
        .await
    }
}
