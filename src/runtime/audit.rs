//! The append-only JSON-lines audit log: one line per input that changed
//! something, per action issued, and per action completion or failure.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::RuntimeError;

/// Sends records to the writer task; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct AuditLog {
    tx: Option<mpsc::UnboundedSender<Value>>,
}

impl AuditLog {
    /// A log that writes nothing.
    pub(crate) fn disabled() -> Self {
        AuditLog { tx: None }
    }

    /// Opens `path` for appending and starts the writer task. Lines are written
    /// and flushed one at a time, so a crash loses at most the line in flight.
    pub(crate) async fn open(
        path: &Path,
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
        let task = tokio::spawn(write_lines(file, rx, path.to_owned()));
        Ok((AuditLog { tx: Some(tx) }, task))
    }

    /// Appends one record; `kind` says what it is, `fields` the rest.
    pub(crate) fn record(&self, kind: &str, mut fields: Value) {
        let Some(tx) = &self.tx else { return };
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        if let Value::Object(map) = &mut fields {
            map.insert("unix_ms".into(), json!(unix_ms));
            map.insert("record".into(), json!(kind));
        }
        // The writer only stops when every sender is gone, so this cannot fail
        // while the runtime runs.
        let _ = tx.send(fields);
    }
}

async fn write_lines(
    mut file: tokio::fs::File,
    mut rx: mpsc::UnboundedReceiver<Value>,
    path: PathBuf,
) {
    while let Some(value) = rx.recv().await {
        let mut line = value.to_string();
        line.push('\n');
        if let Err(error) = file.write_all(line.as_bytes()).await {
            tracing::error!(path = %path.display(), %error, "audit log write failed; record lost");
            continue;
        }
        if let Err(error) = file.flush().await {
            tracing::error!(path = %path.display(), %error, "audit log flush failed");
        }
    }
    let _ = file.sync_all().await;
}
