//! A real Route 53 API server for tests: `moto_server` (moto in server
//! mode, from a Python virtualenv that `scripts/test` creates) on a free
//! 127.0.0.1 port. It can be stopped and started again on the same port;
//! it is killed when the handle drops, also when a test panics.
//!
//! moto keeps its state in memory, so a restart forgets every hosted zone.
//! [`MotoServer::seed`] seeds moto's random ids: a test that seeds the same
//! value before creating its zone gets the same zone id after a restart.
//!
//! Which `moto_server`: `$FAILOVER_MOTO_SERVER` if set, else the one
//! `scripts/test` installs ([`DEFAULT_VENV`]`/bin/moto_server`), else
//! `moto_server` on `PATH`.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `scripts/test` creates the virtualenv with moto.
pub const DEFAULT_VENV: &str = "/tmp/failover-moto-venv";

/// How long moto may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `moto_server` on 127.0.0.1.
#[derive(Debug)]
pub struct MotoServer {
    port: u16,
    program: PathBuf,
    log: tempfile::NamedTempFile,
    child: Option<Child>,
    check_credentials: bool,
}

/// The `moto_server` program to run.
pub fn moto_program() -> io::Result<PathBuf> {
    if let Some(path) = std::env::var_os("FAILOVER_MOTO_SERVER") {
        return Ok(PathBuf::from(path));
    }
    let venv = PathBuf::from(DEFAULT_VENV).join("bin/moto_server");
    if venv.exists() {
        return Ok(venv);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("moto_server"))
            .find(|p| p.exists())
    });
    on_path.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("moto_server not found: run scripts/test (it creates {DEFAULT_VENV} with `pip install 'moto[server]'`) or set FAILOVER_MOTO_SERVER"),
        )
    })
}

impl MotoServer {
    /// Starts `moto_server` on a free port and waits (bounded) until it
    /// answers HTTP. It accepts any credentials.
    pub fn start() -> io::Result<Self> {
        Self::start_inner(false)
    }

    /// Like [`start`](Self::start), but moto checks every request's
    /// credentials against its (empty) IAM: any access key is unknown, so
    /// every call is refused with `InvalidClientTokenId` (HTTP 403).
    pub fn start_checking_credentials() -> io::Result<Self> {
        Self::start_inner(true)
    }

    fn start_inner(check_credentials: bool) -> io::Result<Self> {
        let program = moto_program()?;
        let mut last_error = None;
        // A port that was free when probed can be taken before moto binds it.
        for _ in 0..3 {
            let mut server = MotoServer {
                port: free_port()?,
                program: program.clone(),
                log: tempfile::Builder::new()
                    .prefix("failover-moto-")
                    .suffix(".log")
                    .tempfile_in("/tmp")?,
                child: None,
                check_credentials,
            };
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    server.stop();
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("moto_server did not start")))
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The endpoint URL to give an AWS SDK client, like `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Seeds moto's random generator (`POST /moto-api/seed?a=N`), so the ids
    /// it hands out next (hosted zones, changes) are the same after a restart.
    pub fn seed(&self, seed: u64) -> io::Result<()> {
        let reply = http_request(self.addr(), &format!("POST /moto-api/seed?a={seed} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"))?;
        if reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "moto refused to seed: {}",
                reply.lines().next().unwrap_or("")
            )))
        }
    }

    /// Kills `moto_server` and waits for it. Its state (zones) is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `moto_server` again, empty, on the same port and waits until
    /// it answers.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                // The old process's socket may linger for a moment.
                Err(e) if Instant::now() < deadline => {
                    self.stop();
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The last lines moto logged (one line per request), for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn spawn_and_wait(&mut self) -> io::Result<()> {
        let log = self.log.reopen()?;
        let mut command = Command::new(&self.program);
        if self.check_credentials {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let child = command
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run {}: {e}", self.program.display()),
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(io::Error::other(format!(
                        "moto_server exited ({status}) on port {}:\n{}",
                        self.port,
                        self.log_tail()
                    )));
                }
            }
            let probe = http_request(
                self.addr(),
                "GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n",
            );
            if matches!(&probe, Ok(reply) if reply.starts_with("HTTP/")) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "moto_server did not answer on port {} within {START_TIMEOUT:?}:\n{}",
                        self.port,
                        self.log_tail()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends one HTTP/1.0 request and returns the whole reply.
fn http_request(addr: SocketAddr, request: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(request.as_bytes())?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

/// A 127.0.0.1 TCP port free right now.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}
