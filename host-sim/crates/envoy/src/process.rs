//! Starting, watching and stopping the Envoy process. Envoy picks its own
//! ports (admin and listeners bind port 0); the admin address comes back
//! through `--admin-address-path`, the listeners' through `/listeners`.
//! The process is killed when [`EnvoyProcess`] drops.

use super::logs::LOG_FORMAT;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A failure of the machine, not of the scenario: no Envoy binary, Envoy
/// could not be started or did not become ready, the servers around it
/// could not start. Callers tell it apart with `downcast_ref` (the CLI
/// exits 3 on it).
#[derive(Debug)]
pub struct EnvironmentError(pub String);

impl std::fmt::Display for EnvironmentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EnvironmentError {}

/// Marks an error as the environment's, keeping its message.
pub fn environment(e: anyhow::Error) -> anyhow::Error {
    EnvironmentError(format!("{e:#}")).into()
}

pub struct EnvoyProcess {
    child: Option<Child>,
    pub log_path: PathBuf,
    admin_path: PathBuf,
}

pub enum Readiness {
    Ready {
        admin: SocketAddr,
        listeners: HashMap<String, u16>,
    },
    /// Envoy exited before it was ready (a configuration it rejected).
    Exited(ExitStatus),
}

impl EnvoyProcess {
    pub fn spawn(
        binary: &Path,
        workdir: &Path,
        config: &Path,
        concurrency: u32,
        extra_args: &[String],
    ) -> Result<Self> {
        let log_path = workdir.join("envoy.log");
        let admin_path = workdir.join("admin-address.txt");
        let stderr = std::fs::File::create(&log_path)?;
        let stdout = std::fs::File::create(workdir.join("envoy.stdout"))?;
        let mut cmd = Command::new(binary);
        cmd.arg("-c")
            .arg(config)
            .arg("--concurrency")
            .arg(concurrency.to_string())
            // Plugin logs at every level, and the trace of every ABI call
            // (used to attribute local replies, calls and traps to plugins).
            .args(["--log-level", "info", "--component-log-level", "wasm:trace"])
            .args(["--log-format", LOG_FORMAT])
            .arg("--admin-address-path")
            .arg(&admin_path)
            // Access-log lines reach the file quickly.
            .args(["--file-flush-interval-msec", "20"])
            // No shared memory: several engines may run at once.
            .arg("--disable-hot-restart")
            .args(extra_args)
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = cmd.spawn().with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { child: Some(child), log_path, admin_path })
    }

    /// Waits until Envoy serves: admin up, `/ready` LIVE, every listener in
    /// `expected` bound. Bounded by `timeout`.
    pub fn wait_ready(&mut self, expected: &[String], timeout: Duration) -> Result<Readiness> {
        let deadline = Instant::now() + timeout;
        let step = Duration::from_millis(50);
        let mut admin: Option<SocketAddr> = None;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Ok(Readiness::Exited(status));
            }
            if admin.is_none() {
                admin = std::fs::read_to_string(&self.admin_path).ok().and_then(|s| s.trim().parse().ok());
            }
            if let Some(addr) = admin {
                let short = Duration::from_secs(2);
                if let Ok((200, body)) = super::http::get(addr, "/ready", short) {
                    if body.trim() == "LIVE" {
                        if let Ok((200, body)) = super::http::get(addr, "/listeners?format=json", short) {
                            let ports = listener_ports(&body);
                            if expected.iter().all(|l| ports.get(l).is_some_and(|p| *p != 0)) {
                                return Ok(Readiness::Ready { admin: addr, listeners: ports });
                            }
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "Envoy was not ready after {:.0} s (admin address: {:?}). {}",
                    timeout.as_secs_f64(),
                    admin,
                    self.log_tail_section(30)
                );
            }
            std::thread::sleep(step);
        }
    }

    /// Whether Envoy has exited (crashed or was stopped).
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(c) => !matches!(c.try_wait(), Ok(None)),
        }
    }

    /// Bytes of log written so far.
    pub fn log_len(&self) -> usize {
        std::fs::metadata(&self.log_path).map(|m| m.len() as usize).unwrap_or(0)
    }

    /// The log from byte `from` to the current end.
    pub fn log_from(&self, from: usize) -> String {
        read_from(&self.log_path, from)
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = read_from(&self.log_path, 0);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The last `n` log lines under a heading, for error messages; says so
    /// when Envoy wrote nothing (rather than ending in an empty heading).
    pub fn log_tail_section(&self, n: usize) -> String {
        let tail = self.log_tail(n);
        if tail.trim().is_empty() {
            format!("Envoy wrote no log lines ({}).", self.log_path.display())
        } else {
            format!("Last log lines:\n{tail}")
        }
    }

    /// Stops Envoy the way a pod does: SIGTERM (Envoy shuts down at once and
    /// plugins' root contexts get `proxy_on_done`/`proxy_on_delete`), then
    /// SIGKILL if it is still there after `grace`. Idempotent.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut c) = self.child.take() else { return };
        if matches!(c.try_wait(), Ok(None)) {
            let termed = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            let deadline = Instant::now() + grace;
            while termed && Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for EnvoyProcess {
    /// Kills Envoy outright (an error or panic left it running).
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn read_from(path: &Path, from: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    if f.seek(SeekFrom::Start(from as u64)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    byte_preserving_text(&buf)
}

/// Text with each byte of an invalid UTF-8 sequence replaced by `?`, so
/// byte offsets in the text are byte offsets in the file.
pub fn byte_preserving_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        out.extend(std::iter::repeat_n('?', chunk.invalid().len()));
    }
    out
}

/// `/listeners?format=json` → listener name to bound port.
pub fn listener_ports(body: &str) -> HashMap<String, u16> {
    let mut out = HashMap::new();
    let Ok(v) = serde_json::from_str::<Value>(body) else { return out };
    for l in v["listener_statuses"].as_array().into_iter().flatten() {
        let (Some(name), Some(port)) =
            (l["name"].as_str(), l["local_address"]["socket_address"]["port_value"].as_u64())
        else {
            continue;
        };
        out.insert(name.to_string(), port as u16);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_keeps_offsets() {
        let t = byte_preserving_text(b"a\xff\xfeb\xc3\xa9\n");
        assert_eq!(t, "a??b\u{e9}\n");
        assert_eq!(t.len(), 7);
    }

    #[test]
    fn listener_ports_from_admin_json() {
        let body = r#"{"listener_statuses":[{"name":"inbound","local_address":{"socket_address":{"address":"127.0.0.1","port_value":41234}}},{"name":"x"}]}"#;
        let ports = listener_ports(body);
        assert_eq!(ports.get("inbound"), Some(&41234));
        assert_eq!(ports.len(), 1);
        assert!(listener_ports("not json").is_empty());
    }
}
