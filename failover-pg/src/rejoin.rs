//! Rejoin: turn an old primary into a streaming replica of the new one.
//!
//! This runs on the old primary's machine (an agent), on its data directory:
//! 1. stop the server cleanly if it runs (`pg_ctl stop -m fast`);
//! 2. `CHECKPOINT` on the new primary (a fresh promotion writes its new
//!    timeline to the control file only then, and pg_rewind reads it there),
//!    then `pg_rewind --target-pgdata=… --source-server=…` against it:
//!    it discards the WAL the old primary wrote after the timelines diverged
//!    (nothing acknowledged after a zero-loss switchover; the unreplicated tail
//!    after a failover). A target that crashed is first recovered by
//!    pg_rewind itself (PostgreSQL ≥ 13). Needs `wal_log_hints = on` or data
//!    checksums, and the old primary's WAL back to the last checkpoint before
//!    the divergence (keep it with `wal_keep_size`, or archive it);
//! 3. keep the node's own `postgresql.conf`, `pg_hba.conf` and `pg_ident.conf`
//!    (pg_rewind copies the source's, which carry the source's port and
//!    addresses), drop `primary_conninfo` and `default_transaction_read_only`
//!    and any `failover.*` setting from `postgresql.auto.conf`, set
//!    `primary_conninfo` to the new primary ([`standby_auto_conf`]: quotes,
//!    backslashes and newlines are escaped for the configuration file, so
//!    libpq reads the string exactly as given) and write `standby.signal`;
//! 4. start it (`pg_ctl start`) and wait until `pg_stat_wal_receiver` says
//!    `streaming`.
//!
//! The PostgreSQL binaries run as [`RejoinPlan::os_user`] through
//! `runuser -u USER --` (they refuse root).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cluster::{open, parse_dsn};
use crate::{PgError, WalReceiver};

/// Where the old primary lives and whom it should follow.
#[derive(Clone, Debug)]
pub struct RejoinPlan {
    /// Directory of `pg_ctl` and `pg_rewind` (`pg_config --bindir`).
    pub bindir: PathBuf,
    /// The old primary's data directory.
    pub data_dir: PathBuf,
    /// Run the binaries as this system user (`postgres`), `None` to run them
    /// as the current user.
    pub os_user: Option<String>,
    /// libpq conninfo of the new primary for `pg_rewind` (a superuser).
    /// Prefer a passfile (`~/.pgpass`) over a password in the string: the
    /// string is passed on pg_rewind's command line.
    pub source_conninfo: String,
    /// libpq conninfo the replica streams with (written as `primary_conninfo`).
    pub primary_conninfo: String,
    /// DSN of the local server once started, to verify that it streams.
    pub local_dsn: String,
    /// Server log file for `pg_ctl start -l`.
    pub log_file: Option<PathBuf>,
    /// Bound on each step (stop, rewind, start, streaming check).
    pub step_timeout: Duration,
}

/// What a rejoin did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejoinReport {
    /// False when pg_rewind found nothing to rewind.
    pub rewound: bool,
    /// The WAL receiver once streaming.
    pub wal_receiver: WalReceiver,
    /// Total time.
    pub elapsed: Duration,
}

fn rejoin_err(plan: &RejoinPlan, step: &'static str, reason: impl Into<String>) -> PgError {
    PgError::Rejoin {
        data_dir: plan.data_dir.display().to_string(),
        step,
        reason: reason.into(),
    }
}

async fn run(
    plan: &RejoinPlan,
    step: &'static str,
    program: &str,
    args: &[String],
) -> Result<std::process::Output, PgError> {
    let exe = plan.bindir.join(program);
    let mut cmd = match &plan.os_user {
        Some(user) => {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", user, "--"]).arg(&exe);
            c
        }
        None => tokio::process::Command::new(&exe),
    };
    cmd.args(args).kill_on_drop(true);
    // Not the arguments: --source-server may carry a password.
    tracing::info!(step, program, "rejoin step");
    match tokio::time::timeout(plan.step_timeout, cmd.output()).await {
        Err(_) => Err(rejoin_err(
            plan,
            step,
            format!("timed out after {:?}", plan.step_timeout),
        )),
        Ok(Err(e)) => Err(rejoin_err(
            plan,
            step,
            format!("cannot run {}: {e}", exe.display()),
        )),
        Ok(Ok(out)) => Ok(out),
    }
}

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}; stderr: {}; stdout: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    )
}

/// Writes `text` to `path` and gives it to `os_user`.
async fn write_owned(plan: &RejoinPlan, path: &Path, text: &str) -> Result<(), PgError> {
    tokio::fs::write(path, text)
        .await
        .map_err(|e| rejoin_err(plan, "write config", format!("{}: {e}", path.display())))?;
    if let Some(user) = &plan.os_user {
        let out = tokio::process::Command::new("chown")
            .arg(format!("{user}:"))
            .arg(path)
            .output()
            .await
            .map_err(|e| rejoin_err(plan, "chown", e.to_string()))?;
        if !out.status.success() {
            return Err(rejoin_err(plan, "chown", output_text(&out)));
        }
    }
    Ok(())
}

const KEPT_FILES: [&str; 3] = ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"];

/// The `postgresql.auto.conf` of a node that becomes a standby of the
/// primary reached with `primary_conninfo` (a libpq string; build one with
/// [`conninfo`](crate::conninfo::conninfo)): `old` without its
/// `primary_conninfo`, its fence (`default_transaction_read_only`) and any
/// `failover.*` setting (a promotion intent copied from the source by
/// pg_rewind), plus `primary_conninfo` quoted with
/// [`conf_value`](crate::conninfo::conf_value) so that quotes,
/// backslashes and newlines reach libpq unchanged.
pub fn standby_auto_conf(old: &str, primary_conninfo: &str) -> String {
    let mut conf: String = old
        .lines()
        .filter(|l| {
            let key = l.trim_start();
            !key.starts_with("primary_conninfo")
                && !key.starts_with("default_transaction_read_only")
                && !key.starts_with("failover.")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    conf.push_str(&format!(
        "primary_conninfo = {}\n",
        crate::conninfo::conf_value(primary_conninfo)
    ));
    conf
}

/// Runs the whole rejoin; see the [module docs](self).
pub async fn rejoin(plan: &RejoinPlan) -> Result<RejoinReport, PgError> {
    let started = Instant::now();
    let data = plan.data_dir.display().to_string();
    let local = parse_dsn(&format!("{data} (local_dsn)"), &plan.local_dsn)?;

    // 1. Stop cleanly if running (pg_ctl status exits 0 only when it runs).
    let status = run(
        plan,
        "pg_ctl status",
        "pg_ctl",
        &["-D".into(), data.clone(), "status".into()],
    )
    .await?;
    if status.status.success() {
        let args = ["-D", &data, "-m", "fast", "-w", "-t", "60", "stop"].map(String::from);
        let out = run(plan, "pg_ctl stop", "pg_ctl", &args).await?;
        if !out.status.success() {
            // It may have died between the two calls (a crash): pg_rewind
            // recovers a crashed target itself, so only a live one is fatal.
            let again = run(
                plan,
                "pg_ctl status",
                "pg_ctl",
                &["-D".into(), data.clone(), "status".into()],
            )
            .await?;
            if again.status.success() {
                return Err(rejoin_err(plan, "pg_ctl stop", output_text(&out)));
            }
            tracing::warn!(data_dir = %data, "server died while being stopped; continuing");
        }
    }

    // 2. Keep the node's own config, then rewind.
    let mut kept = Vec::new();
    for f in KEPT_FILES {
        let path = plan.data_dir.join(f);
        if let Ok(text) = tokio::fs::read_to_string(&path).await {
            kept.push((path, text));
        }
    }
    checkpoint_source(plan).await?;
    let args = [
        format!("--target-pgdata={data}"),
        format!("--source-server={}", plan.source_conninfo),
    ];
    let out = run(plan, "pg_rewind", "pg_rewind", &args).await?;
    if !out.status.success() {
        return Err(rejoin_err(plan, "pg_rewind", output_text(&out)));
    }
    let rewound = !String::from_utf8_lossy(&out.stdout).contains("no rewind required")
        && !String::from_utf8_lossy(&out.stderr).contains("no rewind required");

    // 3. Restore the node's config and make it a standby of the new primary.
    for (path, text) in &kept {
        write_owned(plan, path, text).await?;
    }
    let auto = plan.data_dir.join("postgresql.auto.conf");
    let old = tokio::fs::read_to_string(&auto).await.unwrap_or_default();
    let conf = standby_auto_conf(&old, &plan.primary_conninfo);
    write_owned(plan, &auto, &conf).await?;
    write_owned(plan, &plan.data_dir.join("standby.signal"), "").await?;

    // 4. Start and wait for streaming.
    let mut args = vec![
        "-D".to_string(),
        data.clone(),
        "-w".into(),
        "-t".into(),
        "60".into(),
    ];
    if let Some(log) = &plan.log_file {
        args.push("-l".into());
        args.push(log.display().to_string());
    }
    args.push("start".into());
    let out = run(plan, "pg_ctl start", "pg_ctl", &args).await?;
    if !out.status.success() {
        return Err(rejoin_err(plan, "pg_ctl start", output_text(&out)));
    }
    let wal_receiver = wait_streaming(plan, &local).await?;
    let elapsed = started.elapsed();
    tracing::warn!(data_dir = %data, rewound, ?elapsed, "old primary rejoined as replica");
    Ok(RejoinReport {
        rewound,
        wal_receiver,
        elapsed,
    })
}

/// A freshly promoted source still has the old timeline in its control file
/// until its first checkpoint, and pg_rewind would then see "no rewind
/// required". A CHECKPOINT on the source updates it.
async fn checkpoint_source(plan: &RejoinPlan) -> Result<(), PgError> {
    let (cfg, tls) = parse_dsn(
        &format!("{} (source_conninfo)", plan.data_dir.display()),
        &plan.source_conninfo,
    )?;
    let step = "CHECKPOINT on the new primary";
    let (client, task) = tokio::time::timeout(plan.step_timeout, open(&cfg, &tls))
        .await
        .map_err(|_| rejoin_err(plan, step, "connect timed out"))?
        .map_err(|e| rejoin_err(plan, step, e.to_string()))?;
    let r = tokio::time::timeout(plan.step_timeout, client.batch_execute("CHECKPOINT")).await;
    task.abort();
    r.map_err(|_| rejoin_err(plan, step, "timed out"))?
        .map_err(|e| rejoin_err(plan, step, e.to_string()))
}

async fn wait_streaming(
    plan: &RejoinPlan,
    local: &(tokio_postgres::Config, Option<crate::tls::RustlsConnect>),
) -> Result<WalReceiver, PgError> {
    let deadline = Instant::now() + plan.step_timeout;
    let mut last = String::from("not checked");
    while Instant::now() < deadline {
        match check_streaming(local).await {
            Ok(Some(w)) => return Ok(w),
            Ok(None) => last = "WAL receiver not streaming yet".into(),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(rejoin_err(plan, "verify streaming", last))
}

async fn check_streaming(
    local: &(tokio_postgres::Config, Option<crate::tls::RustlsConnect>),
) -> Result<Option<WalReceiver>, String> {
    let (client, task) = tokio::time::timeout(Duration::from_secs(5), open(&local.0, &local.1))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        client.query(
            "SELECT pg_is_in_recovery(), status, received_tli, sender_host, sender_port, \
             latest_end_lsn::text FROM pg_stat_wal_receiver",
            &[],
        ),
    )
    .await;
    task.abort();
    let rows = result
        .map_err(|_| "query timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let in_recovery: bool = r.try_get(0).map_err(|e| e.to_string())?;
    let status: Option<String> = r.try_get(1).map_err(|e| e.to_string())?;
    if !in_recovery || status.as_deref() != Some("streaming") {
        return Ok(None);
    }
    let tli: Option<i32> = r.try_get(2).map_err(|e| e.to_string())?;
    let port: Option<i32> = r.try_get(4).map_err(|e| e.to_string())?;
    let end: Option<String> = r.try_get(5).map_err(|e| e.to_string())?;
    Ok(Some(WalReceiver {
        status: status.unwrap_or_default(),
        received_timeline: tli.and_then(|t| u32::try_from(t).ok()),
        sender_host: r.try_get(3).map_err(|e| e.to_string())?,
        sender_port: port.and_then(|p| u16::try_from(p).ok()),
        latest_end_lsn: end.and_then(|e| e.parse().ok()),
        last_message_age: None,
    }))
}
