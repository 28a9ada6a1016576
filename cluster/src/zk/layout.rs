//! Where the cluster keeps its state in ZooKeeper, and how each node's content is encoded.
//! The layout is documented node by node in `cluster/ZOOKEEPER.md`.
//!
//! Content is UTF-8 text, one `key=value` per line: readable with `zkCli.sh get`, and strict
//! to parse (unknown keys are kept out, missing keys are an error naming the node).
use std::collections::BTreeMap;

/// Paths, relative to the cluster's chroot (e.g. `/simplekv/<cluster>`).
pub mod path {
    pub const META: &str = "/meta";
    pub const BROKERS: &str = "/brokers/ids";
    pub const CONTROLLER: &str = "/controller";
    pub const CONTROLLER_EPOCH: &str = "/controller_epoch";
    pub const PARTITIONS: &str = "/partitions";
    /// Children: ephemeral `<id>` of each node in a controlled shutdown.
    pub const ADMIN_SHUTDOWN: &str = "/admin/shutdown";
    /// Present while a preferred-leader election is asked for; the controller deletes it.
    pub const PREFERRED_ELECTION: &str = "/admin/preferred_election";

    /// Children: ephemeral `<id>-<partition>-<leader epoch>` of each leadership a node was
    /// given and could not take up or keep (its log could not begin the epoch, or its writes
    /// failed on the disk: a full or failing disk), so that the controller elects another
    /// in-sync replica.
    pub const CANNOT_LEAD: &str = "/admin/cannot_lead";

    pub fn shutdown(id: u32) -> String {
        format!("{ADMIN_SHUTDOWN}/{id}")
    }

    pub fn cannot_lead(id: u32, partition: u32, leader_epoch: u32) -> String {
        format!("{CANNOT_LEAD}/{id}-{partition}-{leader_epoch}")
    }

    /// `(id, partition, leader epoch)` of a child name of [`CANNOT_LEAD`].
    pub fn parse_cannot_lead(child: &str) -> Option<(u32, u32, u32)> {
        let mut it = child.split('-').map(|x| x.parse::<u32>().ok());
        match (it.next(), it.next(), it.next(), it.next()) {
            (Some(Some(id)), Some(Some(p)), Some(Some(e)), None) => Some((id, p, e)),
            _ => None,
        }
    }

    pub fn broker(id: u32) -> String {
        format!("{BROKERS}/{id}")
    }

    pub fn partition_state(p: u32) -> String {
        format!("{PARTITIONS}/{p}/state")
    }
}

/// Why a node's content did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct DecodeError {
    pub what: &'static str,
    pub reason: String,
}

fn fields(what: &'static str, data: &[u8]) -> Result<BTreeMap<String, String>, DecodeError> {
    let text = std::str::from_utf8(data).map_err(|_| DecodeError {
        what,
        reason: "not UTF-8".into(),
    })?;
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line.split_once('=').ok_or_else(|| DecodeError {
            what,
            reason: format!("line {line:?} is not key=value"),
        })?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

fn field<T: std::str::FromStr>(
    what: &'static str,
    f: &BTreeMap<String, String>,
    key: &str,
) -> Result<T, DecodeError> {
    let v = f.get(key).ok_or_else(|| DecodeError {
        what,
        reason: format!("missing {key}"),
    })?;
    v.parse().map_err(|_| DecodeError {
        what,
        reason: format!("bad {key} {v:?}"),
    })
}

fn id_list(
    what: &'static str,
    f: &BTreeMap<String, String>,
    key: &str,
) -> Result<Vec<u32>, DecodeError> {
    let v: String = field(what, f, key)?;
    if v.is_empty() {
        return Ok(Vec::new());
    }
    v.split(',')
        .map(|s| {
            s.trim().parse().map_err(|_| DecodeError {
                what,
                reason: format!("bad {key} {v:?}"),
            })
        })
        .collect()
}

fn join(ids: &[u32]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `/meta`: fixed when the cluster is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMeta {
    pub partitions: u32,
    pub replication_factor: u32,
    /// Random, given at create; each node's data directory records it (with the node's id)
    /// so that data of another cluster, or of another node, is never taken for this node's.
    /// `None` for a cluster created before it existed.
    pub cluster_id: Option<String>,
}

impl ClusterMeta {
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!(
            "format=1\npartitions={}\nreplication_factor={}\n",
            self.partitions, self.replication_factor
        );
        if let Some(id) = &self.cluster_id {
            s.push_str(&format!("cluster_id={id}\n"));
        }
        s.into_bytes()
    }

    /// A new cluster id: 128 random bits, in hex.
    pub fn new_cluster_id() -> String {
        format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
    }

    pub fn decode(data: &[u8]) -> Result<ClusterMeta, DecodeError> {
        let f = fields("meta", data)?;
        let format: u32 = field("meta", &f, "format")?;
        if format != 1 {
            return Err(DecodeError {
                what: "meta",
                reason: format!("format {format} is newer than this simplekv understands"),
            });
        }
        let cluster_id = match f.get("cluster_id") {
            Some(id) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Some(id.clone())
            }
            Some(id) => {
                return Err(DecodeError {
                    what: "meta",
                    reason: format!("bad cluster_id {id:?}"),
                });
            }
            None => None,
        };
        Ok(ClusterMeta {
            partitions: field("meta", &f, "partitions")?,
            replication_factor: field("meta", &f, "replication_factor")?,
            cluster_id,
        })
    }
}

/// `/brokers/ids/<id>` (ephemeral): how to reach a live node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: u32,
    /// RESP address clients are redirected to (`host:port`).
    pub resp: String,
    /// gRPC address (replication, KV service, controller requests).
    pub grpc: String,
    /// The id of the node's data (`DIR/simplekv.storage`): random, new whenever the node
    /// starts from a directory that may lack what it held (a new or wiped one, missing
    /// partitions, `storage.repair`). `None` from nodes that predate it.
    pub storage: Option<u64>,
}

impl BrokerInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("id={}\nresp={}\ngrpc={}\n", self.id, self.resp, self.grpc);
        if let Some(id) = self.storage {
            s.push_str(&format!("storage={id:016x}\n"));
        }
        s.into_bytes()
    }

    pub fn decode(data: &[u8]) -> Result<BrokerInfo, DecodeError> {
        let f = fields("broker", data)?;
        let storage = match f.get("storage") {
            Some(v) => Some(storage_id("broker", v)?),
            None => None,
        };
        Ok(BrokerInfo {
            id: field("broker", &f, "id")?,
            resp: field("broker", &f, "resp")?,
            grpc: field("broker", &f, "grpc")?,
            storage,
        })
    }
}

fn storage_id(what: &'static str, v: &str) -> Result<u64, DecodeError> {
    u64::from_str_radix(v, 16).map_err(|_| DecodeError {
        what,
        reason: format!("bad storage id {v:?}"),
    })
}

/// `/partitions/<p>/state`: who leads, in which leader epoch, who is in sync. Written only
/// with a conditional write on its znode version, by the controller (elections) or the
/// leader (ISR changes); every write carries the writer's epochs so stale writers are fenced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionState {
    /// Leader node id; `None` while no replica can lead.
    pub leader: Option<u32>,
    pub leader_epoch: u32,
    pub isr: Vec<u32>,
    /// All replicas, the preferred leader first.
    pub replicas: Vec<u32>,
    /// Epoch of the controller that wrote the state last.
    pub controller_epoch: u64,
    /// The storage id (`BrokerInfo::storage`) each in-sync replica had when it joined the
    /// ISR: one registered with another id since has lost what it held (a wiped disk) and is
    /// not in sync, whatever the ISR says. Members without an entry joined before ids were
    /// recorded. Entries exist only for ISR members.
    pub isr_storage: BTreeMap<u32, u64>,
}

impl PartitionState {
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!(
            "leader={}\nleader_epoch={}\nisr={}\nreplicas={}\ncontroller_epoch={}\n",
            self.leader
                .map(|l| l.to_string())
                .unwrap_or_else(|| "none".into()),
            self.leader_epoch,
            join(&self.isr),
            join(&self.replicas),
            self.controller_epoch
        );
        if !self.isr_storage.is_empty() {
            let ids: Vec<String> = self
                .isr_storage
                .iter()
                .map(|(b, id)| format!("{b}:{id:016x}"))
                .collect();
            s.push_str(&format!("isr_storage={}\n", ids.join(",")));
        }
        s.into_bytes()
    }

    /// True when in-sync replica `b`, registered with storage id `now`, has lost what it had
    /// when it joined the ISR.
    pub fn lost_storage(&self, b: u32, now: Option<u64>) -> bool {
        matches!((self.isr_storage.get(&b), now), (Some(had), Some(now)) if *had != now)
    }

    pub fn decode(data: &[u8]) -> Result<PartitionState, DecodeError> {
        let what = "partition state";
        let f = fields(what, data)?;
        let leader: String = field(what, &f, "leader")?;
        let leader = match leader.as_str() {
            "none" => None,
            v => Some(v.parse().map_err(|_| DecodeError {
                what,
                reason: format!("bad leader {v:?}"),
            })?),
        };
        let s = PartitionState {
            leader,
            leader_epoch: field(what, &f, "leader_epoch")?,
            isr: id_list(what, &f, "isr")?,
            replicas: id_list(what, &f, "replicas")?,
            controller_epoch: field(what, &f, "controller_epoch")?,
            isr_storage: storage_map(what, f.get("isr_storage").map(String::as_str))?,
        };
        if s.replicas.is_empty() {
            return Err(DecodeError {
                what,
                reason: "no replicas".into(),
            });
        }
        if let Some(x) = s.isr.iter().find(|i| !s.replicas.contains(i)) {
            return Err(DecodeError {
                what,
                reason: format!("ISR member {x} is not a replica"),
            });
        }
        if let Some(x) = s.isr_storage.keys().find(|i| !s.isr.contains(i)) {
            return Err(DecodeError {
                what,
                reason: format!("isr_storage names {x}, which is not in the ISR"),
            });
        }
        Ok(s)
    }

    pub fn preferred_leader(&self) -> u32 {
        self.replicas[0]
    }
}

/// `b:hex,b:hex` (absent: empty).
fn storage_map(what: &'static str, v: Option<&str>) -> Result<BTreeMap<u32, u64>, DecodeError> {
    let mut out = BTreeMap::new();
    for item in v
        .unwrap_or_default()
        .split(',')
        .filter(|i| !i.trim().is_empty())
    {
        let bad = || DecodeError {
            what,
            reason: format!("bad isr_storage entry {item:?}"),
        };
        let (b, id) = item.split_once(':').ok_or_else(bad)?;
        let b: u32 = b.trim().parse().map_err(|_| bad())?;
        let id = u64::from_str_radix(id.trim(), 16).map_err(|_| bad())?;
        out.insert(b, id);
    }
    Ok(out)
}

/// `/controller` (ephemeral): the node that currently acts as controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    pub id: u32,
    pub epoch: u64,
}

impl ControllerInfo {
    pub fn encode(&self) -> Vec<u8> {
        format!("id={}\nepoch={}\n", self.id, self.epoch).into_bytes()
    }

    pub fn decode(data: &[u8]) -> Result<ControllerInfo, DecodeError> {
        let f = fields("controller", data)?;
        Ok(ControllerInfo {
            id: field("controller", &f, "id")?,
            epoch: field("controller", &f, "epoch")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cannot_lead_names_round_trip_and_strangers_are_skipped() {
        let name = path::cannot_lead(3, 17, 42);
        let child = name.rsplit('/').next().unwrap();
        assert_eq!(path::parse_cannot_lead(child), Some((3, 17, 42)));
        for bad in ["", "3", "3-17", "3-17-42-1", "a-17-42", "3--42", "-1-2-3"] {
            assert_eq!(path::parse_cannot_lead(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn every_node_kind_round_trips() {
        let mut m = ClusterMeta {
            partitions: 16,
            replication_factor: 3,
            cluster_id: None,
        };
        assert_eq!(ClusterMeta::decode(&m.encode()).unwrap(), m);
        m.cluster_id = Some(ClusterMeta::new_cluster_id());
        assert_eq!(ClusterMeta::decode(&m.encode()).unwrap(), m);
        assert!(
            ClusterMeta::decode(b"format=1\npartitions=1\nreplication_factor=1\ncluster_id=a/b\n")
                .is_err()
        );
        let b = BrokerInfo {
            id: 2,
            resp: "127.0.0.1:7001".into(),
            grpc: "127.0.0.1:8001".into(),
            storage: None,
        };
        assert_eq!(BrokerInfo::decode(&b.encode()).unwrap(), b);
        let b = BrokerInfo {
            storage: Some(0x00ab_cdef_0123_4567),
            ..b
        };
        assert_eq!(BrokerInfo::decode(&b.encode()).unwrap(), b);
        let mut s = PartitionState {
            leader: Some(1),
            leader_epoch: 4,
            isr: vec![1, 3],
            replicas: vec![1, 2, 3],
            controller_epoch: 9,
            isr_storage: BTreeMap::new(),
        };
        assert_eq!(PartitionState::decode(&s.encode()).unwrap(), s);
        s.isr_storage = BTreeMap::from([(1, 7), (3, u64::MAX)]);
        assert_eq!(PartitionState::decode(&s.encode()).unwrap(), s);
        let none = PartitionState {
            leader: None,
            isr: vec![],
            isr_storage: BTreeMap::new(),
            ..s.clone()
        };
        assert_eq!(PartitionState::decode(&none.encode()).unwrap(), none);
        let c = ControllerInfo { id: 3, epoch: 12 };
        assert_eq!(ControllerInfo::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn damaged_content_names_the_node_and_the_field() {
        let e = PartitionState::decode(
            b"leader=1\nleader_epoch=x\nisr=1\nreplicas=1\ncontroller_epoch=1\n",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "partition state: bad leader_epoch \"x\"");
        let e = PartitionState::decode(
            b"leader=1\nleader_epoch=1\nisr=4\nreplicas=1\ncontroller_epoch=1\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("ISR member 4"), "{e}");
        let e = PartitionState::decode(
            b"leader=1\nleader_epoch=1\nisr=1\nreplicas=1,2\ncontroller_epoch=1\nisr_storage=2:ab\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("names 2"), "{e}");
        let e = PartitionState::decode(
            b"leader=1\nleader_epoch=1\nisr=1\nreplicas=1\ncontroller_epoch=1\nisr_storage=1:zz\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("isr_storage entry"), "{e}");
        assert!(BrokerInfo::decode(b"id=1\nresp=x\ngrpc=y\nstorage=q\n").is_err());
        let e = ClusterMeta::decode(b"format=2\npartitions=1\nreplication_factor=1\n").unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
        assert!(BrokerInfo::decode(b"id=1\nresp=x\n").is_err());
        assert!(BrokerInfo::decode(&[0xff, 0xfe]).is_err());
    }
}
