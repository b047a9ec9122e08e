//! The load tool, `oha`, over a UNIX socket: one run's summary from its JSON output, and
//! children that are killed by their pid when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A child this benchmark started, killed by its pid when dropped.
pub struct Kill(pub Child);

impl Kill {
    /// Stops the child with SIGINT (oha then prints its summary) and returns its stdout.
    pub fn interrupt(mut self) -> Vec<u8> {
        // SAFETY: signalling a child this benchmark started, by its pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let mut out = Vec::new();
        if let Some(mut s) = self.0.stdout.take() {
            use std::io::Read;
            let _ = s.read_to_end(&mut out);
        }
        out
    }
}

impl Drop for Kill {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            // SAFETY: killing a child this benchmark started, by its pid.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGKILL) };
        }
        let _ = self.0.wait();
    }
}

/// The load tool.
pub struct Oha {
    pub bin: PathBuf,
}

impl Oha {
    fn command(&self, sock: &Path, path: &str, conns: usize, secs: u64) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["--no-tui", "-w", "--output-format", "json", "-c"])
            .arg(conns.to_string())
            .arg("-z")
            .arg(format!("{secs}s"))
            .arg("--unix-socket")
            .arg(sock)
            .arg(format!("http://localhost{path}"))
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        c
    }

    pub fn run(&self, sock: &Path, path: &str, conns: usize, secs: u64) -> Run {
        let out = self
            .command(sock, path, conns, secs)
            .output()
            .expect("running oha");
        assert!(out.status.success(), "oha failed: {}", out.status);
        Run::parse(&out.stdout).unwrap_or_else(|| {
            panic!(
                "oha printed no summary: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    pub fn spawn(&self, sock: &Path, path: &str, conns: usize, secs: u64) -> Child {
        self.command(sock, path, conns, secs)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting oha")
    }
}

/// One oha run's summary; latencies in milliseconds.
pub struct Run {
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
    pub ok: u64,
    pub total: u64,
    /// Statuses and errors other than 200, for the message when a run does not count.
    pub other: String,
}

impl Run {
    pub fn parse(json: &[u8]) -> Option<Run> {
        let v: serde_json::Value = serde_json::from_slice(json).ok()?;
        let codes = v["statusCodeDistribution"].as_object()?;
        let total: u64 = codes.values().filter_map(|n| n.as_u64()).sum::<u64>()
            + v["errorDistribution"]
                .as_object()
                .map(|e| e.values().filter_map(|n| n.as_u64()).sum())
                .unwrap_or(0);
        Some(Run {
            rps: v["summary"]["requestsPerSec"].as_f64()?,
            p50: v["latencyPercentiles"]["p50"].as_f64().unwrap_or(f64::NAN) * 1000.0,
            p99: v["latencyPercentiles"]["p99"].as_f64().unwrap_or(f64::NAN) * 1000.0,
            ok: codes.get("200").and_then(|n| n.as_u64()).unwrap_or(0),
            total,
            other: format!(
                "{} {}",
                serde_json::Value::Object(codes.clone()),
                v["errorDistribution"]
            ),
        })
    }

    /// A figure counts only if every request was answered 200.
    pub fn check(&self, what: &str) {
        assert!(
            self.total > 0 && self.ok == self.total,
            "{what}: {} of {} requests answered 200 ({})",
            self.ok,
            self.total,
            self.other
        );
    }
}

pub fn find_oha() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("oha"))
        .find(|p| p.is_file())
}
