//! The server process: spawning it (or running it in-process), and reading
//! its CPU time and resident memory from /proc.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// CPU seconds (user + system) and RSS of a process.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProcSample {
    pub cpu_secs: f64,
    pub rss_kb: u64,
    /// The embedded store's writer thread (named `embedded-store-writer`;
    /// 0 if there is none): the one serial part of a send.
    pub writer_cpu_secs: f64,
}

/// User + system CPU seconds in a `/proc/.../stat` line.
fn stat_cpu(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the ")" that ends the command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    cpu(11) + cpu(12)
}

/// The CPU seconds of `pid`'s threads whose name begins with `prefix`.
fn threads_cpu(pid: u32, prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .map(|t| stat_cpu(&t.path().join("stat").display().to_string()))
        .sum()
}

pub fn sample(pid: u32) -> ProcSample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    ProcSample {
        cpu_secs: stat_cpu(&format!("/proc/{pid}/stat")),
        rss_kb,
        // Thread names are cut at 15 bytes.
        writer_cpu_secs: threads_cpu(pid, "embedded-store-"),
    }
}

/// Raises the open-file limit to its hard maximum (inherited by children).
pub fn raise_nofile() -> u64 {
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
        r.rlim_cur
    }
}

/// The CPUs this process may run on (`sched_getaffinity`), lowest first.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel writes at
    // most `size_of::<cpu_set_t>()` bytes into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Pins every thread of this process to `cpu` (`sched_setaffinity` per
/// thread, as it applies to one thread); threads started later inherit it.
pub fn pin_process(cpu: usize) -> std::io::Result<()> {
    let mut tids: Vec<libc::pid_t> = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::pid_t>().ok())
                .collect::<Vec<libc::pid_t>>()
        })
        .unwrap_or_default();
    if tids.is_empty() {
        tids.push(0); // the calling thread
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays within
    // it for cpu < CPU_SETSIZE (checked); the kernel only reads the set.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        for tid in tids {
            if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// The command that starts `program`, under `taskset -c CPU` when pinned
/// (taskset sets the affinity and execs it, so the pid is the server's).
fn command(program: &std::ffi::OsStr, pin: Option<usize>) -> tokio::process::Command {
    match pin {
        Some(cpu) => {
            let mut c = tokio::process::Command::new("taskset");
            c.arg("-c").arg(cpu.to_string()).arg(program);
            c
        }
        None => tokio::process::Command::new(program),
    }
}

/// A spawned server, killed on drop.
pub struct Server {
    pub child: tokio::process::Child,
    pub addr: String,
    /// Its data directory (removed when the server is dropped).
    pub dir: tempfile::TempDir,
    /// How it was started, to start it again on the same data (conn-tier).
    start: Option<Start>,
}

/// A conn-tier's command line: binary, secret, extra flags, pinning.
#[derive(Clone)]
struct Start {
    bin: PathBuf,
    secret: String,
    extra: Vec<String>,
    pin: Option<usize>,
    port: u16,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Stops the server (SIGKILL if `kill`, else SIGTERM and a wait for it
    /// to exit) and starts it again on the same data directory and port;
    /// how long the new process took to listen.
    pub async fn restart(&mut self, kill: bool) -> anyhow::Result<Duration> {
        let Some(start) = self.start.clone() else {
            bail!("only a conn-tier started by the bench restarts");
        };
        if kill {
            self.child.start_kill()?;
        } else if let Some(pid) = self.child.id() {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .context("the server did not stop within 60 s")??;
        let t = Instant::now();
        self.child = start.spawn(self.dir.path())?;
        wait_port(start.port, "conn-tier").await?;
        Ok(t.elapsed())
    }
}

impl Start {
    fn spawn(&self, dir: &Path) -> anyhow::Result<tokio::process::Child> {
        command(self.bin.as_os_str(), self.pin)
            .args([
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--data-dir",
            ])
            .arg(dir)
            .args(&self.extra)
            .env("CHAT_JWT_SECRET", &self.secret)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {}{} (build it: cargo build --release -p conn-tier)",
                    if self.pin.is_some() {
                        "taskset (util-linux) with "
                    } else {
                        ""
                    },
                    self.bin.display()
                )
            })
    }
}

/// The conn-tier binary next to this one (same cargo target dir).
pub fn default_server_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("conn-tier")))
        .unwrap_or_else(|| PathBuf::from("conn-tier"))
}

pub async fn free_port() -> anyhow::Result<u16> {
    Ok(tokio::net::TcpListener::bind("127.0.0.1:0")
        .await?
        .local_addr()?
        .port())
}

async fn wait_port(port: u16, what: &str) -> anyhow::Result<()> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{what} did not listen on {port} within 20 s")
}

/// Starts conn-tier (embedded store in a temp dir) and waits until it
/// listens; pinned to one CPU with `taskset` when `pin` is given.
pub async fn spawn_chat(
    bin: &Path,
    secret: &str,
    extra: &[&str],
    pin: Option<usize>,
) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let start = Start {
        bin: bin.to_path_buf(),
        secret: secret.to_string(),
        extra: extra.iter().map(|s| s.to_string()).collect(),
        pin,
        port: free_port().await?,
    };
    let child = start.spawn(dir.path())?;
    wait_port(start.port, "conn-tier").await?;
    Ok(Server {
        child,
        addr: format!("127.0.0.1:{}", start.port),
        dir,
        start: Some(start),
    })
}

/// Whether `mosquitto` is on the PATH.
pub fn have_mosquitto() -> bool {
    std::process::Command::new("sh")
        .args(["-c", "command -v mosquitto"])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|st| st.success())
}

/// Starts mosquitto with persistence on, on a free port; pinned to one CPU
/// with `taskset` when `pin` is given.
pub async fn spawn_mosquitto(pin: Option<usize>) -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let port = free_port().await?;
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_inflight_messages 0\nmax_queued_messages 0\nlog_type error\n",
            dir.path().display()
        ),
    )?;
    let child = command(std::ffi::OsStr::new("mosquitto"), pin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {}mosquitto (apt-get install mosquitto)",
                if pin.is_some() {
                    "taskset (util-linux) with "
                } else {
                    ""
                }
            )
        })?;
    wait_port(port, "mosquitto").await?;
    Ok(Server {
        child,
        addr: format!("127.0.0.1:{port}"),
        dir,
        start: None,
    })
}
