//! `failoverctl`: the operator's command line for a failover controller, a
//! client of its admin API (`RuntimeBuilder::admin`, feature `admin`).
//!
//! ```text
//! failoverctl status                       # regions, weights, writer, nodes
//! failoverctl drain us-east --reason "kernel upgrade"
//! failoverctl undrain us-east
//! failoverctl switchover --to pg-west
//! failoverctl pause | resume | abort
//! failoverctl history --limit 20
//! ```
//!
//! The URL comes from `--url` or `FAILOVERCTL_URL` (default
//! `http://127.0.0.1:9850`), the token from `--token` or `FAILOVERCTL_TOKEN`;
//! `--ca FILE` trusts a PEM CA for an `https://` URL. `--json` prints the
//! server's JSON answer as it is.
//!
//! Exit codes: 0 done; 1 the server refused or failed (its error is
//! printed); 2 usage error; 3 the server could not be reached.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// Exit code: the server refused the request or failed.
const EXIT_REFUSED: u8 = 1;
/// Exit code: bad arguments (clap uses 2 for its own usage errors too).
const EXIT_USAGE: u8 = 2;
/// Exit code: the server could not be reached (connection, TLS, time-out).
const EXIT_UNREACHABLE: u8 = 3;

/// Operate a failover controller through its admin API.
#[derive(Parser, Debug)]
#[command(
    name = "failoverctl",
    version,
    after_help = "Exit codes: 0 done; 1 the server refused or failed; 2 usage error; 3 the server could not be reached."
)]
struct Cli {
    /// The admin API's URL (http:// or https://).
    #[arg(long, env = "FAILOVERCTL_URL", default_value = "http://127.0.0.1:9850")]
    url: String,
    /// The bearer token (prefer the environment variable: arguments show in `ps`).
    #[arg(long, env = "FAILOVERCTL_TOKEN", hide_env_values = true)]
    token: String,
    /// A PEM file with the CA certificate(s) that signed an https:// server's certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Print the server's JSON answer instead of a table or a sentence.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on a request after this many seconds.
    #[arg(long, default_value_t = 15)]
    timeout: u64,
    #[command(subcommand)]
    command: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// Regions with their health and weights, the writer and the database nodes.
    Status,
    /// Take a region out of rotation, whatever its health.
    Drain {
        /// The region, as named in the configuration.
        region: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Return a drained region to health-driven routing.
    Undrain {
        /// The region, as named in the configuration.
        region: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Planned, zero-loss move of the writer to a replica.
    Switchover {
        /// The replica that becomes the writer.
        #[arg(long)]
        to: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Promote a node now, without proof that the old writer stopped.
    ForcePromote {
        /// The replica to promote.
        node: String,
        /// Required: you confirmed the old writer is powered off or cut off.
        #[arg(long)]
        i_accept_split_brain_risk: bool,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Stop automatic decisions (health is still tracked).
    Pause {
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume automatic decisions.
    Resume {
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Abandon the promotion or switchover in progress.
    Abort {
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Operator commands, events and actions, from the audit log.
    History {
        /// How many records, newest last.
        #[arg(long, default_value_t = 30)]
        limit: u32,
    },
}

/// Why a run failed, and the exit code that says so.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }
    fn unreachable(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_UNREACHABLE,
            message: message.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("failoverctl: cannot start: {e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("failoverctl: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let server = Server::new(&cli)?;
    let (path, body) = match &cli.command {
        Action::Status => ("/status".to_owned(), None),
        Action::History { limit } => (format!("/history?limit={limit}"), None),
        Action::Drain { region, reason } => (
            "/commands/drain".into(),
            Some(json!({"region": region, "reason": reason})),
        ),
        Action::Undrain { region, reason } => (
            "/commands/undrain".into(),
            Some(json!({"region": region, "reason": reason})),
        ),
        Action::Switchover { to, reason } => (
            "/commands/switchover".into(),
            Some(json!({"to": to, "reason": reason})),
        ),
        Action::ForcePromote {
            node,
            i_accept_split_brain_risk,
            reason,
        } => {
            if !i_accept_split_brain_risk {
                return Err(Failure::usage(
                    "force-promote promotes without proof that the old writer stopped: confirm it is powered off or cut off, then pass --i-accept-split-brain-risk",
                ));
            }
            (
                "/commands/force-promote".into(),
                Some(json!({"node": node, "reason": reason})),
            )
        }
        Action::Pause { reason } => ("/commands/pause".into(), Some(json!({"reason": reason}))),
        Action::Resume { reason } => ("/commands/resume".into(), Some(json!({"reason": reason}))),
        Action::Abort { reason } => ("/commands/abort".into(), Some(json!({"reason": reason}))),
    };
    let (status, answer) = server.request(&path, body.as_ref()).await?;
    let parsed: Option<Value> = serde_json::from_str(&answer).ok();
    if !(200..300).contains(&status) {
        if cli.json {
            println!("{answer}");
        }
        let error = parsed
            .as_ref()
            .and_then(|v| v["error"].as_str())
            .map_or_else(|| answer.trim().to_owned(), str::to_owned);
        // A follower names the leader's admin API: say how to reach it.
        let hint = parsed
            .as_ref()
            .and_then(|v| v["current_leader"]["admin"].as_str())
            .map(|admin| format!("\nthe leader answers at {admin}: retry with --url {admin}"))
            .unwrap_or_default();
        return Err(Failure {
            code: EXIT_REFUSED,
            message: format!("the server answered {status}: {error}{hint}"),
        });
    }
    let Some(value) = parsed else {
        return Err(Failure {
            code: EXIT_REFUSED,
            message: format!("the server's answer is not JSON: {answer}"),
        });
    };
    if cli.json {
        println!("{value:#}");
        return Ok(());
    }
    match &cli.command {
        Action::Status => print!("{}", status_table(&value)),
        Action::History { .. } => print!("{}", history_lines(&value)),
        _ => println!(
            "accepted: {} (watch `failoverctl status` for its effect)",
            value["accepted"].as_str().unwrap_or("?")
        ),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Rendering

/// `value` as text for a table cell: strings bare, null as `-`.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "no".into(),
        other => other.to_string(),
    }
}

/// A table with a header row, columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let rule: String = widths
        .iter()
        .map(|w| "-".repeat(w + 2))
        .collect::<Vec<_>>()
        .join("+");
    let line = |cells: Vec<String>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!(" {c:<w$} "))
            .collect();
        format!("|{}|\n", padded.join("|"))
    };
    let mut out = format!("+{rule}+\n");
    out += &line(header.iter().map(|h| (*h).to_owned()).collect());
    out += &format!("+{rule}+\n");
    for row in rows {
        out += &line(row.clone());
    }
    out += &format!("+{rule}+\n");
    out
}

fn status_table(status: &Value) -> String {
    let leader = &status["leader"];
    let leading = if leader["leading"] == true {
        "this controller"
    } else {
        "another controller (send commands there)"
    };
    let mut out = format!(
        "+ Service: {} (writer: {}, epoch: {}, leader: {}{}, paused: {}, promotion: {})\n",
        cell(&status["service"]),
        cell(&status["writer"]),
        cell(&status["epoch"]),
        leading,
        if leader["coordinated"] == true {
            ""
        } else {
            ", single controller"
        },
        cell(&status["paused"]),
        cell(&status["promotion"]["phase"]),
    );
    let plan = &status["plan"];
    out += &format!(
        "+ Plan: desired generation {}, applied {}{}\n",
        cell(&plan["desired_generation"]),
        cell(&plan["applied_generation"]),
        if plan["applied"] == true {
            ""
        } else {
            " (not applied yet)"
        }
    );
    if status["health"] != "ok" {
        out += &format!("+ Runtime health: {}\n", cell(&status["health"]));
    }
    let regions: Vec<Vec<String>> = status["regions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                cell(&r["name"]),
                cell(&r["health"]),
                cell(&r["desired_weight"]),
                cell(&r["applied_weight"]),
                cell(&r["drained"]),
            ]
        })
        .collect();
    out += &table(
        &[
            "Region",
            "Health",
            "Desired weight",
            "Applied weight",
            "Drained",
        ],
        &regions,
    );
    let nodes: Vec<Vec<String>> = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let role = match (n["writer"] == true, n["role"].as_str(), n["fenced"] == true) {
                (_, Some("primary"), true) => "Primary (fenced)".to_owned(),
                (true, Some("primary"), false) => "Leader".to_owned(),
                (_, Some(role), _) => {
                    let mut role = role.to_owned();
                    if let Some(first) = role.get_mut(..1) {
                        first.make_ascii_uppercase();
                    }
                    role
                }
                _ => "-".to_owned(),
            };
            let delay = n["replay_delay_s"]
                .as_f64()
                .map_or("-".to_owned(), |s| format!("{s:.1} s"));
            vec![
                cell(&n["name"]),
                cell(&n["region"]),
                role,
                cell(&n["lag_bytes"]),
                delay,
            ]
        })
        .collect();
    if !nodes.is_empty() {
        out += &table(
            &["Member", "Region", "Role", "Lag (bytes)", "Replay delay"],
            &nodes,
        );
    }
    out
}

fn history_lines(history: &Value) -> String {
    let mut out = String::new();
    for record in history["records"].as_array().into_iter().flatten() {
        let when = record["unix_ms"].as_u64().map_or("-".to_owned(), |ms| {
            format!("{}.{:03}", ms / 1000, ms % 1000)
        });
        let kind = cell(&record["record"]);
        let what = match kind.as_str() {
            "admin_command" => format!(
                "{} by {} from {}: {}{}",
                cell(&record["command"]),
                cell(&record["caller"]),
                cell(&record["peer"]),
                cell(&record["outcome"]),
                record["reason"]
                    .as_str()
                    .map_or(String::new(), |r| format!(" (reason: {r})")),
            ),
            "command" => cell(&record["command"]),
            "event" => cell(&record["event"]),
            "action" => {
                let target = record
                    .get("node")
                    .or_else(|| record.get("generation"))
                    .map(cell)
                    .unwrap_or_default();
                format!(
                    "{} {} (action {})",
                    cell(&record["type"]),
                    target,
                    cell(&record["action"])
                )
            }
            _ => {
                let mut rest = record.clone();
                if let Some(map) = rest.as_object_mut() {
                    map.remove("unix_ms");
                    map.remove("record");
                }
                rest.to_string()
            }
        };
        out += &format!("{when}  {kind:<13}  {what}\n");
    }
    out
}

// ---------------------------------------------------------------------------
// The HTTP client

/// Where the admin API is and how to reach it.
struct Server {
    host: String,
    port: u16,
    authority: String,
    tls: Option<tokio_rustls::TlsConnector>,
    token: String,
    timeout: Duration,
}

impl Server {
    fn new(cli: &Cli) -> Result<Server, Failure> {
        let uri: http::Uri = cli
            .url
            .parse()
            .map_err(|e| Failure::usage(format!("--url {}: {e}", cli.url)))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(Failure::usage(format!(
                    "--url {}: the scheme must be http:// or https://",
                    cli.url
                )))
            }
        };
        if !matches!(uri.path(), "" | "/") {
            return Err(Failure::usage(format!(
                "--url {}: give the server only (scheme, host, port), without a path",
                cli.url
            )));
        }
        let host = uri
            .host()
            .ok_or_else(|| Failure::usage(format!("--url {}: no host", cli.url)))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map_or_else(|| host.clone(), |a| a.as_str().to_owned());
        if cli.token.is_empty() {
            return Err(Failure::usage(
                "the token is empty: pass --token or set FAILOVERCTL_TOKEN",
            ));
        }
        let tls = match (https, &cli.ca) {
            (false, None) => None,
            (false, Some(_)) => {
                return Err(Failure::usage("--ca is for an https:// --url"));
            }
            (true, None) => {
                return Err(Failure::usage(
                    "an https:// --url needs --ca FILE, the PEM CA that signed the server's certificate",
                ))
            }
            (true, Some(path)) => Some(tls_connector(path)?),
        };
        Ok(Server {
            host,
            port,
            authority,
            tls,
            token: cli.token.clone(),
            timeout: Duration::from_secs(cli.timeout.max(1)),
        })
    }

    /// GET `path`, or POST `body` to it; the status and the answer's text.
    async fn request(&self, path: &str, body: Option<&Value>) -> Result<(u16, String), Failure> {
        let what = format!("{}:{}", self.host, self.port);
        tokio::time::timeout(self.timeout, self.exchange(path, body))
            .await
            .map_err(|_| {
                Failure::unreachable(format!(
                    "{what} did not answer within {} s",
                    self.timeout.as_secs()
                ))
            })?
    }

    async fn exchange(&self, path: &str, body: Option<&Value>) -> Result<(u16, String), Failure> {
        let place = format!("{}:{}", self.host, self.port);
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| Failure::unreachable(format!("cannot connect to {place}: {e}")))?;
        let method = if body.is_some() { "POST" } else { "GET" };
        let bytes = body.map_or_else(Vec::new, |b| b.to_string().into_bytes());
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.authority)
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| Failure::usage(format!("cannot build the request: {e}")))?;
        match &self.tls {
            None => send(TokioIo::new(tcp), request, &place).await,
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| Failure::usage(format!("--url host {}: {e}", self.host)))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| Failure::unreachable(format!("TLS with {place} failed: {e}")))?;
                send(TokioIo::new(stream), request, &place).await
            }
        }
    }
}

async fn send<IO>(
    io: TokioIo<IO>,
    request: http::Request<Full<Bytes>>,
    place: &str,
) -> Result<(u16, String), Failure>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| Failure::unreachable(format!("HTTP with {place} failed: {e}")))?;
    let conn = tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| Failure::unreachable(format!("no answer from {place}: {e}")))?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::unreachable(format!("the answer from {place} broke off: {e}")))?
        .to_bytes();
    conn.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn tls_connector(ca: &std::path::Path) -> Result<tokio_rustls::TlsConnector, Failure> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| Failure::usage(format!("--ca {}: {e}", ca.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| Failure::usage(format!("--ca {}: {e}", ca.display())))?;
        roots
            .add(cert)
            .map_err(|e| Failure::usage(format!("--ca {}: {e}", ca.display())))?;
    }
    if roots.is_empty() {
        return Err(Failure::usage(format!(
            "--ca {}: no certificate in it",
            ca.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::usage(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
