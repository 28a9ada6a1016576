//! `simplekv server`: configuration from a TOML file, then flags, then `--set` overrides.
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use clap::Args;
use log::{LevelFilter, error, warn};
use simplekv_conf::Config;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// TOML configuration file (see conf/examples/).
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Address to listen on (server.bind).
    #[arg(long)]
    bind: Option<String>,
    /// RESP port (server.port).
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Data directory (storage.dir).
    #[arg(short, long)]
    dir: Option<PathBuf>,
    /// Worker threads, 0 = one per core (server.workers).
    #[arg(short, long, value_parser = clap::value_parser!(u32).range(0..=1024))]
    workers: Option<u32>,
    /// always | everysec | never (storage.fsync).
    #[arg(long)]
    fsync: Option<String>,
    /// Password clients must AUTH with (server.requirepass).
    #[arg(long)]
    requirepass: Option<String>,
    /// error | warn | info | debug | trace (server.log_level).
    #[arg(long)]
    log_level: Option<String>,
    /// Serve the gRPC KV service on this port (cluster.grpc_port; off unless set).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    grpc_port: Option<u16>,
    /// Do not pin workers to cores.
    #[arg(long)]
    no_pin: bool,
    /// Any setting, as NAME=VALUE (dotted or Redis name), repeatable: --set storage.partitions=32;
    /// applied after the flags above, so it wins when both name one setting
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
}

fn level(c: &Config) -> LevelFilter {
    c.server
        .log_level
        .to_string()
        .parse()
        .unwrap_or(LevelFilter::Info)
}

fn build_config(a: &ServerArgs) -> Result<Config, String> {
    let mut c = match &a.config {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let mut overrides: Vec<(String, String)> = Vec::new();
    let flag = |o: &mut Vec<(String, String)>, k: &str, v: Option<String>| {
        if let Some(v) = v {
            o.push((k.into(), v));
        }
    };
    flag(&mut overrides, "server.bind", a.bind.clone());
    flag(&mut overrides, "server.port", a.port.map(|p| p.to_string()));
    flag(
        &mut overrides,
        "storage.dir",
        a.dir.as_ref().map(|d| d.display().to_string()),
    );
    flag(
        &mut overrides,
        "server.workers",
        a.workers.map(|w| w.to_string()),
    );
    flag(&mut overrides, "storage.fsync", a.fsync.clone());
    flag(&mut overrides, "server.requirepass", a.requirepass.clone());
    flag(&mut overrides, "server.log_level", a.log_level.clone());
    flag(
        &mut overrides,
        "cluster.grpc_port",
        a.grpc_port.map(|p| p.to_string()),
    );
    if a.no_pin {
        overrides.push(("server.pin_workers".into(), "false".into()));
    }
    // The cluster secret from the environment keeps it off command lines (`ps`), e.g. for
    // the nodes `cluster local` starts, which inherit it.
    if let Some(v) = std::env::var_os(SECRET_ENV).filter(|v| !v.is_empty()) {
        let v = v
            .into_string()
            .map_err(|_| format!("{SECRET_ENV}: not valid UTF-8"))?;
        overrides.push(("cluster.secret".into(), v));
    }
    for s in &a.set {
        let (k, v) = Config::parse_override(s).map_err(|e| e.to_string())?;
        overrides.push((k.to_string(), v.to_string()));
    }
    // All at once: cross-field rules (cluster.zk needs cluster.node_id, ...) hold for the
    // whole set, not for each flag in turn.
    c.set_many(overrides).map_err(|e| e.to_string())?;
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

/// Environment variable that sets `cluster.secret` (for the server, and for `simplekv
/// cluster status`, which asks nodes for their log ends).
pub const SECRET_ENV: &str = "SIMPLEKV_CLUSTER_SECRET";

pub fn run(args: ServerArgs) -> ExitCode {
    let config = match build_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("simplekv: {e}");
            return ExitCode::from(2);
        }
    };
    crate::logger::init(level(&config));
    // gRPC's own messages through the same logger (they went to stderr in its format), its
    // errors only: its info lines are about its internals. gRPC reads the level once.
    let level = log::max_level();
    log::set_max_level(level.min(log::LevelFilter::Warn));
    grpcio::redirect_log();
    log::set_max_level(level);
    crate::signals::block();
    crate::signals::ignore_hangup();
    // Signals are taken from here on, also while the node starts: a cluster node waits for
    // ZooKeeper and for `cluster create` (up to an hour), a large data directory takes
    // seconds to open. Until the node serves, nothing has been acknowledged to anyone, so
    // stopping is exiting (what an interrupted start leaves on disk, a crash would too).
    let trigger = Arc::new(OnceLock::<simplekv_cluster::NodeShutdown>::new());
    let on_signal = trigger.clone();
    crate::signals::spawn_waiter(move || match on_signal.get() {
        Some(t) => t.fire(),
        None => {
            warn!("stopped while starting, before serving any client");
            std::process::exit(0);
        }
    });
    // One process per data directory, decided before anything else.
    let _dir_lock = match simplekv_net::server::lock_data_dir(&config.storage.dir) {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    // A cluster node checks whose data the directory holds before it registers anywhere.
    if config.is_cluster()
        && let Err(e) = simplekv_net::server::check_node_dir(
            &config.storage.dir,
            config.cluster.node_id.unwrap_or(0),
        )
    {
        error!("{e}");
        return ExitCode::from(1);
    }
    let node = match simplekv_cluster::Node::start(config, args.config.clone()) {
        Ok(n) => n,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    let _ = trigger.set(node.shutdown_trigger());
    node.join();
    ExitCode::SUCCESS
}
