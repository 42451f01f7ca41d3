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
}

pub fn sample(pid: u32) -> ProcSample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that ends the command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    ProcSample {
        cpu_secs: cpu(11) + cpu(12),
        rss_kb,
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
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
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
    let port = free_port().await?;
    let child = command(bin.as_os_str(), pin)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .args(extra)
        .env("CHAT_JWT_SECRET", secret)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {}{} (build it: cargo build --release -p conn-tier)",
                if pin.is_some() {
                    "taskset (util-linux) with "
                } else {
                    ""
                },
                bin.display()
            )
        })?;
    wait_port(port, "conn-tier").await?;
    Ok(Server {
        child,
        addr: format!("127.0.0.1:{port}"),
        _dir: dir,
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
        _dir: dir,
    })
}
