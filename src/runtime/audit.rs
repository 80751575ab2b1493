//! The append-only JSON-lines audit log: one line per operator command, per
//! event, per action issued, per failed attempt, and per action's end
//! (`action_done`, `action_failed` or `action_abandoned`).
//!
//! Records are stamped and queued under one lock, so the file's `unix_ms`
//! never goes backwards, even when records come from several threads or the
//! wall clock steps back. A single writer task appends them, flushes after
//! each batch and, with `fsync` on, calls `fdatasync` too; it drains every
//! queued record and syncs the file before it ends.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::RuntimeError;

/// Sends records to the writer task; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct AuditLog {
    queue: Option<Arc<Mutex<Queue>>>,
}

#[derive(Debug)]
struct Queue {
    tx: mpsc::UnboundedSender<Value>,
    last_ms: u64,
}

impl AuditLog {
    /// A log that writes nothing.
    pub(crate) fn disabled() -> Self {
        AuditLog { queue: None }
    }

    /// Opens `path` for appending and starts the writer task, which ends
    /// once every clone of the log is dropped. With `fsync`, each batch of
    /// lines is on disk before the next is written.
    pub(crate) async fn open(
        path: &Path,
        fsync: bool,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), RuntimeError> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .map_err(|source| RuntimeError::AuditLog {
                path: path.to_owned(),
                source,
            })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(write_lines(file, rx, path.to_owned(), fsync));
        let queue = Queue { tx, last_ms: 0 };
        Ok((
            AuditLog {
                queue: Some(Arc::new(Mutex::new(queue))),
            },
            task,
        ))
    }

    /// Appends one record; `kind` says what it is, `fields` the rest.
    pub(crate) fn record(&self, kind: &str, mut fields: Value) {
        let Some(queue) = &self.queue else { return };
        let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // Stamped and queued under the lock: the file's order is the stamps' order.
        let unix_ms = now_ms.max(queue.last_ms);
        queue.last_ms = unix_ms;
        if let Value::Object(map) = &mut fields {
            map.insert("unix_ms".into(), json!(unix_ms));
            map.insert("record".into(), json!(kind));
        }
        // The writer only stops when every sender is gone, so this cannot fail
        // while the runtime runs.
        let _ = queue.tx.send(fields);
    }
}

async fn write_lines(
    mut file: tokio::fs::File,
    mut rx: mpsc::UnboundedReceiver<Value>,
    path: PathBuf,
    fsync: bool,
) {
    let mut batch = String::new();
    while let Some(value) = rx.recv().await {
        batch.clear();
        push_line(&mut batch, &value);
        while let Ok(value) = rx.try_recv() {
            push_line(&mut batch, &value);
        }
        if let Err(error) = file.write_all(batch.as_bytes()).await {
            tracing::error!(path = %path.display(), %error, "audit log write failed; records lost");
            metrics::counter!("failover_audit_write_errors_total").increment(1);
            continue;
        }
        if let Err(error) = file.flush().await {
            tracing::error!(path = %path.display(), %error, "audit log flush failed");
            metrics::counter!("failover_audit_write_errors_total").increment(1);
        }
        if fsync {
            if let Err(error) = file.sync_data().await {
                tracing::error!(path = %path.display(), %error, "audit log fsync failed");
                metrics::counter!("failover_audit_write_errors_total").increment(1);
            }
        }
    }
    if let Err(error) = file.sync_all().await {
        tracing::error!(path = %path.display(), %error, "audit log final sync failed");
    }
}

fn push_line(batch: &mut String, value: &Value) {
    batch.push_str(&value.to_string());
    batch.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four threads record at once; the file's timestamps never go back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn timestamps_in_the_file_are_ordered_when_threads_race() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.jsonl");
        let (audit, writer) = AuditLog::open(&path, true).await.expect("audit log");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let audit = audit.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        audit.record("probe", json!({"thread": t, "i": i}));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("recording thread");
        }
        drop(audit);
        writer.await.expect("writer ends after the last sender");
        let text = std::fs::read_to_string(&path).expect("audit log");
        let stamps: Vec<u64> = text
            .lines()
            .map(|line| {
                let value: Value = serde_json::from_str(line).expect("JSON line");
                value["unix_ms"].as_u64().expect("unix_ms")
            })
            .collect();
        assert_eq!(stamps.len(), 80_000, "every record is in the file");
        let back = stamps.windows(2).filter(|w| w[0] > w[1]).count();
        assert_eq!(
            back, 0,
            "{back} records are stamped before the one above them"
        );
    }
}
