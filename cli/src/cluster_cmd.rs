//! `simplekv cluster ...`: admin verbs on a cluster's state in ZooKeeper, and `local`, which
//! runs a whole cluster on this machine.
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Create the cluster once: place P partitions with R replicas each over the live nodes.
    Create {
        /// ZooKeeper connect string with the cluster's root, e.g. 127.0.0.1:2181/simplekv/main
        #[arg(long)]
        zk: String,
        /// Number of partitions (fixed for the life of the cluster).
        #[arg(long)]
        partitions: u32,
        /// Replicas per partition (at most the number of live nodes).
        #[arg(long)]
        replication_factor: u32,
    },
    /// Show nodes, the controller, and per partition its slots, leader, epoch, replicas, ISR
    /// (and each replica's log end and high watermark; with a cluster.secret, give it in
    /// SIMPLEKV_CLUSTER_SECRET).
    Status {
        /// ZooKeeper connect string with the cluster's root, e.g. 127.0.0.1:2181/simplekv/main
        #[arg(long)]
        zk: String,
    },
    /// Move leadership back to each partition's preferred replica where it is live and in
    /// sync (the controller acts on the request asynchronously; `status` shows the result).
    Rebalance {
        /// ZooKeeper connect string with the cluster's root, e.g. 127.0.0.1:2181/simplekv/main
        #[arg(long)]
        zk: String,
    },
    /// Run a whole cluster on loopback in the foreground: a ZooKeeper and N nodes (Ctrl-C
    /// stops them all).
    Local(crate::local::LocalArgs),
}

const TIMEOUT: Duration = Duration::from_secs(10);

pub fn run(args: ClusterArgs) -> ExitCode {
    let result = match args.verb {
        Verb::Create {
            zk,
            partitions,
            replication_factor,
        } => {
            simplekv_cluster::admin::create(&zk, partitions, replication_factor, TIMEOUT).map(|m| {
                let mut out = format!(
                    "created: {} partitions, replication factor {}",
                    m.partitions, m.replication_factor
                );
                if m.replication_factor < 2 {
                    out.push_str(
                        "\nnote: with one replica, acks=all writes need \
                         cluster.min_insync_replicas=1 on the nodes (the default, 2, refuses them \
                         with NOREPLICAS)",
                    );
                }
                out
            })
        }
        Verb::Status { zk } => {
            let secret = std::env::var(crate::server_cmd::SECRET_ENV).ok();
            simplekv_cluster::admin::status(
                &zk,
                TIMEOUT,
                secret.as_deref().filter(|s| !s.is_empty()),
            )
        }
        Verb::Rebalance { zk } => simplekv_cluster::admin::request_preferred_election(&zk, TIMEOUT)
            .map(|()| {
                "preferred-leader election requested; the controller moves leaders back to \
                 their preferred replicas where those are in sync (see `simplekv cluster status`)"
                    .to_string()
            }),
        Verb::Local(a) => return crate::local::run(a),
    };
    match result {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("simplekv cluster: {e}");
            ExitCode::from(1)
        }
    }
}
