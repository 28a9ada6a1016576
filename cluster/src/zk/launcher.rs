//! Runs a ZooKeeper server (the Debian `zookeeper` package's jars and a JRE) on a free
//! loopback port, for `simplekv cluster local` and for tests. Stopped (and its data removed,
//! when it owns a temporary directory) on drop.
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CLASSPATH: &str = "/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar";

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(
        "ZooKeeper is not installed ({0} missing): run scripts/setup.sh (Debian package `zookeeper`)"
    )]
    NotInstalled(String),
    #[error("cannot start ZooKeeper: {0}")]
    Spawn(std::io::Error),
    #[error("ZooKeeper exited during startup; see {log}")]
    Died { log: PathBuf },
    #[error("ZooKeeper did not become ready within {secs} s; see {log}")]
    Timeout { secs: u64, log: PathBuf },
    #[error("ZooKeeper's port {port} on {host} is taken: {source}")]
    PortTaken {
        host: Ipv4Addr,
        port: u16,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct LocalZooKeeper {
    child: Option<Child>,
    /// Stopped (SIGTERM) by the kernel when the thread that started it exits.
    tied: bool,
    host: Ipv4Addr,
    port: u16,
    dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

fn free_port(host: Ipv4Addr) -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind((host, 0))?.local_addr()?.port())
}

/// The `srvr` four-letter word, with a timeout: ZooKeeper 3.8 never closes a 4lw socket that
/// arrives before its database is loaded.
fn srvr(host: Ipv4Addr, port: u16) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&SocketAddr::from((host, port)), Duration::from_millis(500))
            .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(b"srvr").ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    Some(out)
}

impl LocalZooKeeper {
    /// Starts a server on 127.0.0.1 with its data under `dir` (a temporary directory when
    /// `None`).
    pub fn start(dir: Option<&Path>) -> Result<LocalZooKeeper, LaunchError> {
        Self::start_on(dir, Ipv4Addr::LOCALHOST)
    }

    /// As [`LocalZooKeeper::start`], but the server gets SIGTERM when the calling thread exits,
    /// however it exits (`PR_SET_PDEATHSIG`): for a supervisor such as `simplekv cluster local`,
    /// so that a SIGKILLed supervisor does not leave ZooKeeper running. Call it from a thread
    /// that lives as long as the server should. `port`: its client port (a free one when
    /// `None`).
    pub fn start_tied(
        dir: Option<&Path>,
        port: Option<u16>,
    ) -> Result<LocalZooKeeper, LaunchError> {
        Self::start_inner(dir, Ipv4Addr::LOCALHOST, true, port)
    }

    /// Starts a server listening on `host` (an address of this machine, e.g. a test bridge's
    /// that nodes in network namespaces reach).
    pub fn start_on(dir: Option<&Path>, host: Ipv4Addr) -> Result<LocalZooKeeper, LaunchError> {
        Self::start_inner(dir, host, false, None)
    }

    fn start_inner(
        dir: Option<&Path>,
        host: Ipv4Addr,
        tied: bool,
        port: Option<u16>,
    ) -> Result<LocalZooKeeper, LaunchError> {
        for jar in CLASSPATH.split(':') {
            if !Path::new(jar).exists() {
                return Err(LaunchError::NotInstalled(jar.into()));
            }
        }
        let (dir, tmp) = match dir {
            Some(d) => (d.to_path_buf(), None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("simplekv-zk-")
                    .tempdir()
                    .map_err(|source| LaunchError::Io {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LaunchError::Io { path, source }
        };
        std::fs::create_dir_all(dir.join("data")).map_err(io(&dir))?;
        let port = match port {
            // A server already there would answer the readiness check in this one's place.
            Some(port) => match std::net::TcpListener::bind((host, port)) {
                Ok(_) => port,
                Err(source) => return Err(LaunchError::PortTaken { host, port, source }),
            },
            None => free_port(host).map_err(io(&dir))?,
        };
        let cfg = dir.join("zoo.cfg");
        // maxSessionTimeout: ZooKeeper's default (20 ticks, 10 s here) would cut every
        // `cluster.session_timeout_ms` above it short; this server grants the whole range
        // simplekv accepts.
        std::fs::write(
            &cfg,
            format!(
                "tickTime=500\nmaxSessionTimeout=600000\ndataDir={}\nclientPort={port}\nclientPortAddress={host}\nmaxClientCnxns=0\nadmin.enableServer=false\n4lw.commands.whitelist=srvr,ruok,stat,mntr\n",
                dir.join("data").display()
            ),
        )
        .map_err(io(&cfg))?;
        let log_path = dir.join("zk.log");
        std::fs::write(&log_path, b"").map_err(io(&log_path))?;
        let mut zk = LocalZooKeeper {
            child: None,
            tied,
            host,
            port,
            dir,
            _tmp: tmp,
        };
        zk.launch()?;
        Ok(zk)
    }

    /// Starts a server that was stopped, on the same port and with the same data (sessions
    /// survive it if it was down for less than their timeout): for tests of connection loss.
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.stop();
        self.launch()
    }

    fn launch(&mut self) -> Result<(), LaunchError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LaunchError::Io { path, source }
        };
        let cfg = self.dir.join("zoo.cfg");
        let log_path = self.dir.join("zk.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        let log2 = log.try_clone().map_err(io(&log_path))?;
        let mut cmd = Command::new("java");
        if self.tied {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let child = cmd
            .args([
                "-Xmx256m",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-Dzookeeper.admin.enableServer=false",
                "-cp",
                CLASSPATH,
                "org.apache.zookeeper.server.ZooKeeperServerMain",
            ])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    LaunchError::NotInstalled("java".into())
                } else {
                    LaunchError::Spawn(e)
                }
            })?;
        self.child = Some(child);
        let limit = Duration::from_secs(30);
        let start = Instant::now();
        loop {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return Err(LaunchError::Died { log: log_path });
            }
            if srvr(self.host, self.port).is_some_and(|s| s.contains("Mode: standalone")) {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(LaunchError::Timeout {
                    secs: limit.as_secs(),
                    log: log_path,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `HOST:PORT` (`127.0.0.1:PORT` unless started with [`LocalZooKeeper::start_on`]).
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child process.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for LocalZooKeeper {
    fn drop(&mut self) {
        self.stop();
    }
}
