//! Admin operations behind `simplekv cluster create` and `simplekv cluster status`.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::assign;
use crate::control::{election, registry};
use crate::zk::layout::{ClusterMeta, DecodeError, PartitionState, path};
use crate::zk::{Session, ZkFailure, ZkResult};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Zk(#[from] ZkFailure),
    #[error("{0}")]
    Refused(String),
}

fn decode<T>(p: &str, r: Result<T, DecodeError>) -> Result<T, ZkFailure> {
    r.map_err(|e| ZkFailure::Decode {
        path: p.to_string(),
        reason: e.to_string(),
    })
}

/// Creates the cluster once: places `partitions` partitions with `rf` replicas each over the
/// live nodes and writes their states, then `/meta` (written last: its presence means the
/// states are complete, so an interrupted create can simply be run again).
pub fn create(
    connect: &str,
    partitions: u32,
    rf: u32,
    timeout: Duration,
) -> Result<ClusterMeta, AdminError> {
    if partitions == 0 || partitions > 16384 {
        return Err(AdminError::Refused(format!(
            "--partitions {partitions} is outside 1..=16384"
        )));
    }
    let s = Session::connect(connect, timeout)?;
    if s.get(path::META)?.is_some() {
        return Err(AdminError::Refused(format!(
            "a cluster already exists at {connect}; `simplekv cluster status` shows it"
        )));
    }
    let live = registry::live_brokers(&s)?;
    let brokers: Vec<u32> = live.iter().map(|b| b.id).collect();
    if brokers.is_empty() {
        // Most often a root that names no node's cluster (a typo in the name).
        return Err(AdminError::Refused(format!(
            "no node is registered at {connect}: start the nodes first, with cluster.zk and cluster.name naming this root (cluster.zk + \"/\" + cluster.name)"
        )));
    }
    let replicas = assign::assign(partitions, &brokers, rf).map_err(AdminError::Refused)?;
    for (p, r) in replicas.into_iter().enumerate() {
        // Until a follower has caught up it is not in sync: the ISR starts with the leader.
        let isr_storage = live
            .iter()
            .filter(|b| b.id == r[0])
            .filter_map(|b| Some((b.id, b.storage?)))
            .collect();
        let state = PartitionState {
            leader: Some(r[0]),
            leader_epoch: 1,
            isr: vec![r[0]],
            replicas: r,
            controller_epoch: 0,
            isr_storage,
        };
        let sp = path::partition_state(p as u32);
        s.create_all(&format!("{}/{p}", path::PARTITIONS))?;
        match s.get(&sp)? {
            Some((_, stat)) => {
                s.set(&sp, state.encode(), Some(stat.version))?;
            }
            None => s.create(&sp, state.encode(), false)?,
        }
    }
    let meta = ClusterMeta {
        partitions,
        replication_factor: rf,
        cluster_id: Some(ClusterMeta::new_cluster_id()),
    };
    s.create(path::META, meta.encode(), false)?;
    s.close();
    Ok(meta)
}

/// A status report of the cluster, as text tables.
/// `secret`: the cluster's `cluster.secret`, without which nodes that have one do not tell
/// their log ends.
pub fn status(
    connect: &str,
    timeout: Duration,
    secret: Option<&str>,
) -> Result<String, AdminError> {
    let s = Session::connect(connect, timeout)?;
    let (meta_raw, _) = s.get(path::META)?.ok_or_else(|| {
        AdminError::Refused(format!(
            "no cluster at {connect}: create one with `simplekv cluster create`"
        ))
    })?;
    let meta = decode(path::META, ClusterMeta::decode(&meta_raw))?;
    let brokers = registry::live_brokers(&s)?;
    let controller = election::current(&s)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster at {connect}: {} partitions, replication factor {}, controller: {}",
        meta.partitions,
        meta.replication_factor,
        controller
            .map(|c| format!("node {} (epoch {})", c.id, c.epoch))
            .unwrap_or_else(|| "none".into())
    );
    let _ = writeln!(out, "\nnodes:");
    let _ = writeln!(out, "  {:>4}  {:<22} {:<22}", "id", "resp", "grpc");
    for b in &brokers {
        let _ = writeln!(out, "  {:>4}  {:<22} {:<22}", b.id, b.resp, b.grpc);
    }
    // Each live node's log end and high watermark per partition it holds.
    let positions: BTreeMap<u32, BTreeMap<u32, (u64, u64)>> = brokers
        .iter()
        .filter_map(|b| probe_positions(&b.grpc, meta.partitions, secret).map(|m| (b.id, m)))
        .collect();
    let _ = writeln!(out, "\npartitions:");
    let _ = writeln!(
        out,
        "  {:>5}  {:<13} {:>6} {:>6}  {:<12} {:<12} {:>5}  log end/high watermark by replica",
        "part", "slots", "leader", "epoch", "replicas", "isr", "lag"
    );
    let live: Vec<u32> = brokers.iter().map(|b| b.id).collect();
    for p in 0..meta.partitions {
        let sp = path::partition_state(p);
        let Some((raw, _)) = s.get(&sp)? else {
            let _ = writeln!(out, "  {p:>5}  (missing state)");
            continue;
        };
        let st = decode(&sp, PartitionState::decode(&raw))?;
        let (lo, hi) = slot_range(meta.partitions, p);
        let leader = match st.leader {
            Some(l) if live.contains(&l) => l.to_string(),
            Some(l) => format!("{l}(down)"),
            None => "none".into(),
        };
        let ids = |v: &[u32]| {
            v.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let pos = |r: u32| positions.get(&r).and_then(|m| m.get(&p)).copied();
        let leader_end = st.leader.and_then(pos).map(|(e, _)| e);
        let lag = st
            .replicas
            .iter()
            .filter_map(|&r| Some(leader_end?.saturating_sub(pos(r)?.0)))
            .max()
            .map_or_else(|| "-".to_string(), |l| l.to_string());
        let by_replica = st
            .replicas
            .iter()
            .map(|&r| match pos(r) {
                Some((end, hw)) => format!("{r}:{end}/{hw}"),
                None => format!("{r}:-"),
            })
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "  {p:>5}  {:<13} {leader:>6} {:>6}  {:<12} {:<12} {lag:>5}  {by_replica}",
            format!("{lo}-{}", hi.saturating_sub(1)),
            st.leader_epoch,
            ids(&st.replicas),
            ids(&st.isr)
        );
    }
    s.close();
    Ok(out)
}

/// Asks the controller for a preferred-leader election: every partition whose preferred
/// replica (the first) is live and in sync is led by it again. The controller deletes the
/// request znode once it has acted; asking again before that is the same request.
pub fn request_preferred_election(connect: &str, timeout: Duration) -> Result<(), AdminError> {
    let s = Session::connect(connect, timeout)?;
    require_meta(&s)?;
    s.create_all("/admin")?;
    let r = match s.create(path::PREFERRED_ELECTION, Vec::new(), false) {
        Err(ZkFailure::Op {
            source: zookeeper::ZkError::NodeExists,
            ..
        }) => Ok(()),
        r => r,
    };
    s.close();
    Ok(r?)
}

/// A node's (log end, high watermark) by partition, over its replication service; `None`
/// when it does not answer within a second.
fn probe_positions(
    grpc: &str,
    partitions: u32,
    secret: Option<&str>,
) -> Option<BTreeMap<u32, (u64, u64)>> {
    let env = std::sync::Arc::new(grpcio::Environment::new(1));
    let ch = grpcio::ChannelBuilder::new(env).connect(grpc);
    let client = simplekv_proto::replication_grpc::ReplicationClient::new(ch);
    let mut req = simplekv_proto::replication::LogEndsRequest::new();
    req.status = true;
    req.partitions = (0..partitions).collect();
    let opt = crate::grpc::secret_opt(secret).timeout(Duration::from_secs(1));
    let r = client.log_ends_opt(&req, opt).ok()?;
    Some(
        r.ends
            .iter()
            .filter(|e| e.present)
            .map(|e| (e.partition, (e.log_end, e.high_watermark)))
            .collect(),
    )
}

/// Slots of a partition, `[start, end)` (the same rule as the data plane's router).
pub fn slot_range(partitions: u32, p: u32) -> (u32, u32) {
    let start = (p as u64 * 16384).div_ceil(partitions as u64) as u32;
    let end = ((p as u64 + 1) * 16384).div_ceil(partitions as u64) as u32;
    (start, end.min(16384))
}

/// Fails unless a cluster exists (for commands that need one).
pub fn require_meta(s: &Session) -> ZkResult<ClusterMeta> {
    let (raw, _) = s.get(path::META)?.ok_or_else(|| ZkFailure::Decode {
        path: path::META.into(),
        reason: "no cluster has been created here (create one with `simplekv cluster create`)"
            .into(),
    })?;
    decode(path::META, ClusterMeta::decode(&raw))
}
