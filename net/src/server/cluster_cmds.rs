//! Replies to the Redis Cluster commands (CLUSTER SLOTS / SHARDS / NODES / INFO / MYID, the
//! `# Cluster` INFO section, ROLE) and the cluster key errors, built from a [`RouteTable`].
//!
//! Pure functions: the worker that answers owns the table. The formats are Redis 7.0's
//! (`cluster.c`: `clusterReplyMultiBulkSlots`/`addNodeToNodeReply`,
//! `addShardReplyForClusterShards`, `clusterGenNodeDescription`, `clusterCommand` INFO), so
//! `redis-cli -c`, redis-py's `RedisCluster` and the `redis` crate's cluster client route
//! with them unchanged.
//!
//! Mapping of simplekv onto Redis's model: a partition is a Redis *shard* owning the slot range
//! `Topology::slot_range(p)`; its leader is the shard's master and its other in-sync replicas
//! are the shard's replicas. A simplekv node leads some partitions and follows others, which
//! Redis (a node is either a master or a replica) cannot express: where a reply describes
//! *nodes* rather than shards (CLUSTER NODES, ROLE) every node is a `master` of the slots of
//! the partitions it leads. CLUSTER SLOTS lists only leaders too: clients take a node's role
//! from its first appearance there (redis-py counted a node first listed as a follower of
//! slots 0-1023 as a replica, and its scans, FLUSHDB and DBSIZE over the primaries then missed
//! the partitions that node leads), and followers serve no reads, READONLY or not. Clients
//! route by slot ranges, which these replies give exactly.
use std::fmt::Write as _;

use super::cluster::{NodeAddr, RouteTable};
use super::router::Topology;
use crate::resp::encode::{write_array_len, write_bulk, write_integer};

/// The error text (without `-`) for a slot whose partition has no leader at all (Redis's text
/// for an unserved slot).
pub const CLUSTERDOWN: &str = "CLUSTERDOWN Hash slot not served";
/// The error text for a multi-key command whose keys live in different slots.
pub const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// `MOVED <slot> <host:port>`: the client should send this and later commands for the slot
/// to `addr` (a [`NodeAddr::resp`]).
pub fn moved(slot: u16, addr: &str) -> String {
    format!("MOVED {slot} {addr}")
}

/// Slots of partition `p` as Redis prints them: `(first, last)`, both inclusive. `None` for a
/// partition that owns no slot (more partitions than slots cannot happen: creation refuses
/// P > 16384, but the table comes from outside).
fn slots_of(rt: &RouteTable, p: usize) -> Option<(u16, u16)> {
    let topo = Topology {
        partitions: rt.parts.len() as u32,
        workers: 1,
    };
    let (start, end) = topo.slot_range(p as u32);
    (end > start).then(|| (start, end - 1))
}

/// The leader of `p` if it can serve: registered (alive) and, when it is this node, not fenced
/// (a fenced node serves nothing, as [`RouteTable::leads`] says).
fn live_leader(rt: &RouteTable, p: usize) -> Option<&NodeAddr> {
    let l = rt.parts.get(p)?.leader?;
    if l == rt.me && rt.fenced {
        return None;
    }
    rt.nodes.get(&l)
}

/// `[host, port, name, {}]`, Redis 7.0's node entry in CLUSTER SLOTS. The fourth element is
/// the map of "other endpoints" (hostname...), empty as in Redis when nodes are known by IP.
fn write_slots_node(out: &mut Vec<u8>, n: &NodeAddr) {
    let (host, port) = n.resp_host_port();
    write_array_len(out, 4);
    write_bulk(out, host.as_bytes());
    write_integer(out, i64::from(port));
    write_bulk(out, NodeAddr::name(n.id).as_bytes());
    write_array_len(out, 0);
}

/// CLUSTER SLOTS: one entry per partition with a live leader, `[start, end_inclusive,
/// leader]`, the node as `[host, port, name, {}]`. No replicas: see the module docs (CLUSTER
/// SHARDS names every replica of a partition with its role and health). Partitions without a
/// live leader are left out, as Redis leaves out unassigned slots; one entry per partition
/// even when neighbours share their leader (valid, and keeps the entries in step with
/// `simplekv cluster status`).
pub fn cluster_slots(rt: &RouteTable, out: &mut Vec<u8>) {
    let entries: Vec<(u16, u16, &NodeAddr)> = (0..rt.parts.len())
        .filter_map(|p| {
            let (a, b) = slots_of(rt, p)?;
            Some((a, b, live_leader(rt, p)?))
        })
        .collect();
    write_array_len(out, entries.len());
    for (a, b, leader) in entries {
        write_array_len(out, 3);
        write_integer(out, i64::from(a));
        write_integer(out, i64::from(b));
        write_slots_node(out, leader);
    }
}

/// CLUSTER SHARDS (Redis 7.0): one shard per partition, each a map (a flat array in RESP2)
/// `slots` → `[start, end]` and `nodes` → one map per replica this node can address (live):
/// `id`, `port`, `ip`, `endpoint`, `role` (`master` for the leader, else `replica`),
/// `replication-offset` (0: offsets are not in the route table) and `health`: `online` for a
/// serving leader or an in-sync follower, `loading` for a follower still catching up (outside
/// the ISR; Redis says `loading` for a replica that is syncing), `failed` for a leader that
/// cannot serve (this node, fenced). The leader comes first. Replicas that are down are left
/// out: their addresses are only known while they are registered.
pub fn cluster_shards(rt: &RouteTable, out: &mut Vec<u8>) {
    let shards: Vec<(usize, u16, u16)> = (0..rt.parts.len())
        .filter_map(|p| slots_of(rt, p).map(|(a, b)| (p, a, b)))
        .collect();
    write_array_len(out, shards.len());
    for (p, a, b) in shards {
        let part = &rt.parts[p];
        write_array_len(out, 4);
        write_bulk(out, b"slots");
        write_array_len(out, 2);
        write_integer(out, i64::from(a));
        write_integer(out, i64::from(b));
        write_bulk(out, b"nodes");

        // Leader first, then the other replicas in preference order.
        let mut ids: Vec<u32> = part.leader.into_iter().collect();
        ids.extend(part.replicas.iter().filter(|&&r| Some(r) != part.leader));
        let nodes: Vec<(&NodeAddr, &str, &str)> = ids
            .iter()
            .filter_map(|id| {
                let n = rt.nodes.get(id)?;
                let is_leader = Some(*id) == part.leader;
                let role = if is_leader { "master" } else { "replica" };
                let health = if is_leader {
                    if live_leader(rt, p).is_some() {
                        "online"
                    } else {
                        "failed"
                    }
                } else if part.isr.contains(id) {
                    "online"
                } else {
                    "loading"
                };
                Some((n, role, health))
            })
            .collect();
        write_array_len(out, nodes.len());
        for (n, role, health) in nodes {
            let (host, port) = n.resp_host_port();
            write_array_len(out, 14);
            write_bulk(out, b"id");
            write_bulk(out, NodeAddr::name(n.id).as_bytes());
            write_bulk(out, b"port");
            write_integer(out, i64::from(port));
            write_bulk(out, b"ip");
            write_bulk(out, host.as_bytes());
            write_bulk(out, b"endpoint");
            write_bulk(out, host.as_bytes());
            write_bulk(out, b"role");
            write_bulk(out, role.as_bytes());
            write_bulk(out, b"replication-offset");
            write_integer(out, 0);
            write_bulk(out, b"health");
            write_bulk(out, health.as_bytes());
        }
    }
}

/// Slot ranges of the partitions `id` leads and can serve, adjacent ranges merged.
fn led_ranges(rt: &RouteTable, id: u32) -> Vec<(u16, u16)> {
    let mut ranges: Vec<(u16, u16)> = Vec::new();
    for p in 0..rt.parts.len() {
        if live_leader(rt, p).is_none_or(|l| l.id != id) {
            continue;
        }
        let Some((a, b)) = slots_of(rt, p) else {
            continue;
        };
        match ranges.last_mut() {
            Some(last) if u32::from(last.1) + 1 == u32::from(a) => last.1 = b,
            _ => ranges.push((a, b)),
        }
    }
    ranges
}

/// Highest leader epoch among the partitions `id` leads (0 when it leads none): stands for
/// Redis's per-node config epoch, which also grows with every change of ownership.
fn node_epoch(rt: &RouteTable, id: u32) -> u64 {
    (0..rt.parts.len())
        .filter(|&p| live_leader(rt, p).is_some_and(|l| l.id == id))
        .map(|p| u64::from(rt.parts[p].leader_epoch))
        .max()
        .unwrap_or(0)
}

/// CLUSTER NODES: one line per live node, Redis's
/// `<name> <host>:<port>@<cport> <flags> <master> <ping-sent> <pong-recv> <config-epoch>
/// <link-state> <slot ranges...>`, each line ending in `\n`; send it as a bulk string.
///
/// simplekv → Redis mapping: every node is a `master` (`myself,master` for this node) with
/// master column `-`, because a node leads some partitions and follows others and Redis's
/// model has no such node. Its slots are those of the partitions it leads (adjacent ranges
/// merged into `a-b`, a single slot printed alone, as Redis does); a node that leads nothing
/// is a master without slots, which clients ignore for routing. `cport` (Redis's cluster bus
/// port) is the gRPC port, simplekv's node-to-node port. The config epoch is the highest
/// leader epoch among the partitions it leads. Ping/pong times are 0 and every listed node
/// is `connected`: the list holds only nodes registered in ZooKeeper, i.e. alive.
pub fn cluster_nodes(rt: &RouteTable) -> String {
    let mut o = String::new();
    for n in rt.nodes.values() {
        let (host, port) = n.resp_host_port();
        let cport = n
            .grpc
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .unwrap_or(0);
        let flags = if n.id == rt.me {
            "myself,master"
        } else {
            "master"
        };
        let _ = write!(
            o,
            "{} {host}:{port}@{cport} {flags} - 0 0 {} connected",
            NodeAddr::name(n.id),
            node_epoch(rt, n.id)
        );
        for (a, b) in led_ranges(rt, n.id) {
            if a == b {
                let _ = write!(o, " {a}");
            } else {
                let _ = write!(o, " {a}-{b}");
            }
        }
        o.push('\n');
    }
    o
}

/// CLUSTER INFO, Redis's fields with `\r\n` line ends (send as a bulk string):
/// `cluster_state` is `ok` when every partition has a leader that can serve and this node is
/// not fenced (a node cut off from ZooKeeper says `fail`, as a Redis node in a minority
/// partition does). Slots are `assigned` when their partition has a leader at all, `ok` when
/// that leader is alive, `fail` when it is not (`pfail` is always 0: liveness comes from
/// ZooKeeper, which has no "possibly failed"). `cluster_size` counts nodes leading at least
/// one partition; `cluster_current_epoch` is the controller epoch; `cluster_my_epoch` this
/// node's highest leader epoch. simplekv adds `cluster_partitions`, `cluster_controller`
/// (id, or `none`) and `cluster_fenced` (0/1).
pub fn cluster_info(rt: &RouteTable) -> String {
    let (mut assigned, mut ok, mut fail) = (0u32, 0u32, 0u32);
    let mut all_served = !rt.parts.is_empty();
    for p in 0..rt.parts.len() {
        let n = slots_of(rt, p).map_or(0, |(a, b)| u32::from(b - a) + 1);
        if rt.parts[p].leader.is_some() {
            assigned += n;
            if live_leader(rt, p).is_some() {
                ok += n;
            } else {
                fail += n;
            }
        }
        if live_leader(rt, p).is_none() {
            all_served = false;
        }
    }
    let state = if all_served && !rt.fenced {
        "ok"
    } else {
        "fail"
    };
    let size = rt
        .nodes
        .keys()
        .filter(|&&id| !led_ranges(rt, id).is_empty())
        .count();
    let (controller, current_epoch) = match rt.controller {
        Some((id, epoch)) => (id.to_string(), epoch),
        None => ("none".to_string(), 0),
    };
    let mut o = String::new();
    let _ = write!(
        o,
        "cluster_state:{state}\r\n\
         cluster_slots_assigned:{assigned}\r\n\
         cluster_slots_ok:{ok}\r\n\
         cluster_slots_pfail:0\r\n\
         cluster_slots_fail:{fail}\r\n\
         cluster_known_nodes:{}\r\n\
         cluster_size:{size}\r\n\
         cluster_current_epoch:{current_epoch}\r\n\
         cluster_my_epoch:{}\r\n\
         cluster_stats_messages_sent:0\r\n\
         cluster_stats_messages_received:0\r\n\
         total_cluster_links_buffer_limit_exceeded:0\r\n\
         cluster_partitions:{}\r\n\
         cluster_controller:{controller}\r\n\
         cluster_fenced:{}\r\n",
        rt.nodes.len(),
        node_epoch(rt, rt.me),
        rt.parts.len(),
        u8::from(rt.fenced),
    );
    o
}

/// CLUSTER MYID: this node's 40-character name.
pub fn myid(rt: &RouteTable) -> String {
    NodeAddr::name(rt.me)
}

/// The INFO `# Cluster` section, ending with an empty line like the other sections.
/// Standalone: `cluster_enabled:0`, as Redis. Cluster mode adds `cluster_node_id` (the name
/// CLUSTER MYID gives), `cluster_name`, `cluster_partitions_led` and
/// `cluster_partitions_followed` (replicas held but not led) and `cluster_controller`.
pub fn info_cluster_section(rt: Option<&RouteTable>) -> String {
    let Some(rt) = rt else {
        return "# Cluster\r\ncluster_enabled:0\r\n\r\n".to_string();
    };
    let led = (0..rt.parts.len() as u32).filter(|&p| rt.leads(p)).count();
    let followed = (0..rt.parts.len() as u32)
        .filter(|&p| rt.replicates(p) && !rt.leads(p))
        .count();
    let controller = rt
        .controller
        .map_or_else(|| "none".to_string(), |(id, _)| id.to_string());
    format!(
        "# Cluster\r\ncluster_enabled:1\r\ncluster_node_id:{}\r\ncluster_name:{}\r\ncluster_partitions_led:{led}\r\ncluster_partitions_followed:{followed}\r\ncluster_controller:{controller}\r\ncluster_unclean_elections:{}\r\n\r\n",
        myid(rt),
        rt.name.replace(['\r', '\n'], " "),
        rt.unclean_elections,
    )
}

/// ROLE.
///
/// Standalone: Redis's master form, `["master", 0, []]`.
///
/// Cluster mode: Redis's ROLE has no per-partition form, so the first three elements keep
/// the master form and a fourth carries the detail:
/// `["master", <offset>, [], [[partition, "leader"|"follower", leader_epoch, log_end]...]]`.
/// `offset` is the sum of the log ends of the partitions this node leads (0 when it leads
/// none: it is still `master`, since it would take writes for any partition it came to lead,
/// and the `slave` form names a single master, which a node following many leaders has not);
/// the replica list is empty because followers' offsets live in the leaders' replication
/// state, not in the route table. The fourth element lists every partition this node holds a
/// replica of, in partition order, with its log end from `log_ends` (`(partition, log_end)`,
/// 0 when missing). Clients reading only three elements see a master with no replicas.
pub fn role_reply(rt: Option<&RouteTable>, log_ends: &[(u32, u64)], out: &mut Vec<u8>) {
    let Some(rt) = rt else {
        write_array_len(out, 3);
        write_bulk(out, b"master");
        write_integer(out, 0);
        write_array_len(out, 0);
        return;
    };
    let log_end = |p: u32| {
        log_ends
            .iter()
            .find(|(q, _)| *q == p)
            .map_or(0, |&(_, end)| end)
    };
    let held: Vec<u32> = (0..rt.parts.len() as u32)
        .filter(|&p| rt.replicates(p) || rt.leads(p))
        .collect();
    let offset: u64 = held
        .iter()
        .filter(|&&p| rt.leads(p))
        .map(|&p| log_end(p))
        .sum();
    write_array_len(out, 4);
    write_bulk(out, b"master");
    write_integer(out, clamp_i64(offset));
    write_array_len(out, 0);
    write_array_len(out, held.len());
    for p in held {
        write_array_len(out, 4);
        write_integer(out, i64::from(p));
        let role: &[u8] = if rt.leads(p) { b"leader" } else { b"follower" };
        write_bulk(out, role);
        write_integer(out, i64::from(rt.parts[p as usize].leader_epoch));
        write_integer(out, clamp_i64(log_end(p)));
    }
}

fn clamp_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::resp::encode::{Reply, parse_reply};
    use crate::server::cluster::PartRoute;

    /// Parses exactly one reply that fills `buf`.
    fn parse_all(buf: &[u8]) -> Reply {
        let (r, n) = parse_reply(buf)
            .expect("valid RESP")
            .expect("complete reply");
        assert_eq!(n, buf.len(), "trailing bytes after the reply");
        r
    }

    fn arr(r: &Reply) -> &[Reply] {
        match r {
            Reply::Array(a) => a,
            other => panic!("expected an array, got {other:?}"),
        }
    }

    fn int(r: &Reply) -> i64 {
        match r {
            Reply::Integer(n) => *n,
            other => panic!("expected an integer, got {other:?}"),
        }
    }

    fn s(r: &Reply) -> String {
        match r {
            Reply::Bulk(b) => String::from_utf8(b.clone()).expect("utf8"),
            other => panic!("expected a bulk string, got {other:?}"),
        }
    }

    fn node(id: u32) -> NodeAddr {
        NodeAddr {
            id,
            resp: format!("127.0.0.1:{}", 7000 + id),
            grpc: format!("127.0.0.1:{}", 7100 + id),
        }
    }

    /// 3 nodes, 6 partitions, RF 3, placed as `assign` does (preferred leader rotates);
    /// partition p's replicas start at node `p mod 3 + 1`.
    fn table(me: u32) -> RouteTable {
        let parts = (0..6u32)
            .map(|p| {
                let replicas: Vec<u32> = (0..3).map(|k| (p + k) % 3 + 1).collect();
                PartRoute {
                    leader: Some(replicas[0]),
                    leader_epoch: p + 1,
                    isr: replicas.clone(),
                    replicas,
                    state_version: 0,
                }
            })
            .collect();
        RouteTable {
            me,
            name: "test".into(),
            nodes: (1..=3).map(|i| (i, node(i))).collect::<BTreeMap<_, _>>(),
            parts,
            controller: Some((2, 7)),
            fenced: false,
            version: 1,
            unclean_elections: 0,
            shutting_down: Default::default(),
            cannot_lead: Default::default(),
        }
    }

    const P6: [(i64, i64); 6] = [
        (0, 2730),
        (2731, 5461),
        (5462, 8191),
        (8192, 10922),
        (10923, 13653),
        (13654, 16383),
    ];

    #[test]
    fn slots_cover_every_slot_once_with_the_leader_alone() {
        let rt = table(1);
        let mut out = Vec::new();
        cluster_slots(&rt, &mut out);
        let r = parse_all(&out);
        let entries = arr(&r);
        assert_eq!(entries.len(), 6);
        let mut next = 0;
        for (p, e) in entries.iter().enumerate() {
            let e = arr(e);
            assert_eq!(e.len(), 3, "start, end, leader (no replicas)");
            assert_eq!((int(&e[0]), int(&e[1])), P6[p]);
            assert_eq!(int(&e[0]), next);
            next = int(&e[1]) + 1;
            let leader = arr(&e[2]);
            assert_eq!(leader.len(), 4);
            let lid = p as u32 % 3 + 1;
            assert_eq!(s(&leader[0]), "127.0.0.1");
            assert_eq!(int(&leader[1]), 7000 + i64::from(lid));
            assert_eq!(s(&leader[2]), NodeAddr::name(lid));
            assert_eq!(s(&leader[2]).len(), 40);
            assert!(arr(&leader[3]).is_empty());
        }
        assert_eq!(next, 16384);
    }

    #[test]
    fn slots_exact_bytes_for_one_partition() {
        let rt = RouteTable {
            me: 1,
            nodes: [(1, node(1))].into_iter().collect(),
            parts: vec![PartRoute {
                leader: Some(1),
                leader_epoch: 1,
                replicas: vec![1],
                isr: vec![1],
                state_version: 0,
            }],
            ..RouteTable::default()
        };
        let mut out = Vec::new();
        cluster_slots(&rt, &mut out);
        let want = format!(
            "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:7001\r\n$40\r\n{}\r\n*0\r\n",
            NodeAddr::name(1)
        );
        assert_eq!(String::from_utf8_lossy(&out), want);
    }

    #[test]
    fn slots_leave_out_partitions_without_a_live_leader() {
        let mut rt = table(1);
        rt.parts[0].leader = None;
        rt.parts[1].leader = Some(9); // not registered: dead
        rt.nodes.remove(&3);
        rt.parts[3].isr = vec![1]; // partition 3: leader 1, followers 2 and 3 out of sync
        let mut out = Vec::new();
        cluster_slots(&rt, &mut out);
        let r = parse_all(&out);
        let entries = arr(&r);
        // Partitions 2 (leader 3, dead) also goes: 3, 4, 5 remain.
        let starts: Vec<i64> = entries.iter().map(|e| int(&arr(e)[0])).collect();
        assert_eq!(starts, vec![P6[3].0, P6[4].0]);
        assert_eq!(int(&arr(&arr(&entries[0])[2])[1]), 7001);
        assert_eq!(int(&arr(&arr(&entries[1])[2])[1]), 7002);
    }

    #[test]
    fn fenced_node_serves_no_slot() {
        let mut rt = table(1);
        rt.fenced = true;
        let mut out = Vec::new();
        cluster_slots(&rt, &mut out);
        assert_eq!(arr(&parse_all(&out)).len(), 4);
        let info = cluster_info(&rt);
        assert!(info.contains("cluster_state:fail\r\n"), "{info}");
        assert!(info.contains("cluster_fenced:1\r\n"), "{info}");
    }

    #[test]
    fn shards_are_redis7_maps() {
        let mut rt = table(2);
        rt.parts[5].isr = vec![3, 1]; // node 2 lags in partition 5
        let mut out = Vec::new();
        cluster_shards(&rt, &mut out);
        let r = parse_all(&out);
        let shards = arr(&r);
        assert_eq!(shards.len(), 6);
        for (p, sh) in shards.iter().enumerate() {
            let sh = arr(sh);
            assert_eq!(sh.len(), 4);
            assert_eq!(s(&sh[0]), "slots");
            let slots = arr(&sh[1]);
            assert_eq!((int(&slots[0]), int(&slots[1])), P6[p]);
            assert_eq!(s(&sh[2]), "nodes");
            let nodes = arr(&sh[3]);
            assert_eq!(nodes.len(), 3);
            for (k, n) in nodes.iter().enumerate() {
                let n = arr(n);
                let keys: Vec<String> = n.iter().step_by(2).map(s).collect();
                assert_eq!(
                    keys,
                    [
                        "id",
                        "port",
                        "ip",
                        "endpoint",
                        "role",
                        "replication-offset",
                        "health"
                    ]
                );
                let want_id = (p as u32 + k as u32) % 3 + 1;
                assert_eq!(s(&n[1]), NodeAddr::name(want_id));
                assert_eq!(int(&n[3]), 7000 + i64::from(want_id));
                assert_eq!(s(&n[5]), "127.0.0.1");
                assert_eq!(s(&n[9]), if k == 0 { "master" } else { "replica" });
                assert_eq!(int(&n[11]), 0);
                let health = if p == 5 && want_id == 2 {
                    "loading"
                } else {
                    "online"
                };
                assert_eq!(s(&n[13]), health, "partition {p} node {want_id}");
            }
        }
    }

    #[test]
    fn nodes_lines_follow_redis_format() {
        let rt = table(2);
        let text = cluster_nodes(&rt);
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert!(text.ends_with('\n'));
        assert_eq!(lines.len(), 3);
        for (i, line) in lines.iter().enumerate() {
            let id = i as u32 + 1;
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f[0], NodeAddr::name(id));
            assert_eq!(f[1], format!("127.0.0.1:{}@{}", 7000 + id, 7100 + id));
            assert_eq!(f[2], if id == 2 { "myself,master" } else { "master" });
            assert_eq!(&f[3..6], ["-", "0", "0"]);
            // Node id leads partitions id-1 and id+2: epochs id and id+3.
            assert_eq!(f[6], (id + 3).to_string());
            assert_eq!(f[7], "connected");
            let p = (id - 1) as usize;
            assert_eq!(
                &f[8..],
                [
                    format!("{}-{}", P6[p].0, P6[p].1),
                    format!("{}-{}", P6[p + 3].0, P6[p + 3].1)
                ]
            );
        }
    }

    #[test]
    fn nodes_merge_adjacent_ranges_and_print_single_slots_alone() {
        let mut rt = table(1);
        for part in &mut rt.parts[..3] {
            part.leader = Some(1);
        }
        let text = cluster_nodes(&rt);
        let first = text.lines().next().expect("a line");
        // Node 1 already led partition 3: 0..=3 become one range.
        assert!(
            first.ends_with(&format!("connected 0-{}", P6[3].1)),
            "{first}"
        );
        // 16384 partitions: one slot each.
        let parts = (0..16384)
            .map(|p| PartRoute {
                leader: Some(if p == 5 || p == 9 || p == 10 { 1 } else { 2 }),
                ..PartRoute::default()
            })
            .collect();
        let rt = RouteTable {
            me: 1,
            nodes: (1..=2).map(|i| (i, node(i))).collect(),
            parts,
            ..RouteTable::default()
        };
        let text = cluster_nodes(&rt);
        let mut lines = text.lines();
        assert!(lines.next().expect("node 1").ends_with("connected 5 9-10"));
        assert!(
            lines
                .next()
                .expect("node 2")
                .ends_with("connected 0-4 6-8 11-16383")
        );
    }

    #[test]
    fn info_fields() {
        let mut rt = table(3);
        let info = cluster_info(&rt);
        assert!(info.ends_with("\r\n") && !info.contains("\r\n\r\n"));
        let get = |info: &str, k: &str| -> String {
            info.split("\r\n")
                .find_map(|l| l.strip_prefix(&format!("{k}:")).map(str::to_string))
                .unwrap_or_else(|| panic!("{k} missing in {info}"))
        };
        assert_eq!(get(&info, "cluster_state"), "ok");
        assert_eq!(get(&info, "cluster_slots_assigned"), "16384");
        assert_eq!(get(&info, "cluster_slots_ok"), "16384");
        assert_eq!(get(&info, "cluster_slots_pfail"), "0");
        assert_eq!(get(&info, "cluster_slots_fail"), "0");
        assert_eq!(get(&info, "cluster_known_nodes"), "3");
        assert_eq!(get(&info, "cluster_size"), "3");
        assert_eq!(get(&info, "cluster_current_epoch"), "7");
        assert_eq!(get(&info, "cluster_my_epoch"), "6");
        assert_eq!(get(&info, "cluster_partitions"), "6");
        assert_eq!(get(&info, "cluster_controller"), "2");
        assert_eq!(get(&info, "cluster_fenced"), "0");

        rt.nodes.remove(&1); // leads partitions 0 and 3
        rt.parts[1].leader = None;
        rt.controller = None;
        let info = cluster_info(&rt);
        assert_eq!(get(&info, "cluster_state"), "fail");
        let n = |p: usize| (P6[p].1 - P6[p].0 + 1).to_string();
        let sum = |ps: &[usize]| {
            ps.iter()
                .map(|&p| P6[p].1 - P6[p].0 + 1)
                .sum::<i64>()
                .to_string()
        };
        assert_eq!(get(&info, "cluster_slots_assigned"), sum(&[0, 2, 3, 4, 5]));
        assert_eq!(get(&info, "cluster_slots_ok"), sum(&[2, 4, 5]));
        assert_eq!(get(&info, "cluster_slots_fail"), sum(&[0, 3]));
        assert_ne!(n(0), "0");
        assert_eq!(get(&info, "cluster_known_nodes"), "2");
        assert_eq!(get(&info, "cluster_size"), "2");
        assert_eq!(get(&info, "cluster_controller"), "none");
        assert_eq!(get(&info, "cluster_current_epoch"), "0");
    }

    #[test]
    fn myid_and_info_section() {
        let rt = table(3);
        assert_eq!(myid(&rt), NodeAddr::name(3));
        assert_eq!(
            info_cluster_section(None),
            "# Cluster\r\ncluster_enabled:0\r\n\r\n"
        );
        let sec = info_cluster_section(Some(&rt));
        assert!(
            sec.starts_with("# Cluster\r\ncluster_enabled:1\r\n"),
            "{sec}"
        );
        assert!(
            sec.contains(&format!("cluster_node_id:{}\r\n", NodeAddr::name(3))),
            "{sec}"
        );
        assert!(sec.contains("cluster_partitions_led:2\r\n"), "{sec}");
        assert!(sec.contains("cluster_partitions_followed:4\r\n"), "{sec}");
        assert!(sec.contains("cluster_controller:2\r\n"), "{sec}");
        assert!(sec.ends_with("\r\n\r\n"));
    }

    #[test]
    fn role_standalone_and_cluster() {
        let mut out = Vec::new();
        role_reply(None, &[], &mut out);
        assert_eq!(out, b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n");

        let mut rt = table(1);
        rt.parts[4].replicas = vec![2, 3]; // node 1 holds no replica of partition 4
        rt.parts[4].isr = vec![2, 3];
        let ends: Vec<(u32, u64)> = (0..6).map(|p| (p, 100 * u64::from(p) + 1)).collect();
        let mut out = Vec::new();
        role_reply(Some(&rt), &ends, &mut out);
        let r = parse_all(&out);
        let r = arr(&r);
        assert_eq!(r.len(), 4);
        assert_eq!(s(&r[0]), "master");
        assert_eq!(int(&r[1]), 1 + 301, "node 1 leads partitions 0 and 3");
        assert!(arr(&r[2]).is_empty());
        let parts: Vec<(i64, String, i64, i64)> = arr(&r[3])
            .iter()
            .map(|e| {
                let e = arr(e);
                (int(&e[0]), s(&e[1]), int(&e[2]), int(&e[3]))
            })
            .collect();
        assert_eq!(
            parts,
            vec![
                (0, "leader".into(), 1, 1),
                (1, "follower".into(), 2, 101),
                (2, "follower".into(), 3, 201),
                (3, "leader".into(), 4, 301),
                (5, "follower".into(), 6, 501),
            ]
        );
    }

    #[test]
    fn key_errors() {
        assert_eq!(moved(3999, "127.0.0.1:6381"), "MOVED 3999 127.0.0.1:6381");
        assert_eq!(CLUSTERDOWN, "CLUSTERDOWN Hash slot not served");
        assert_eq!(
            CROSSSLOT,
            "CROSSSLOT Keys in request don't hash to the same slot"
        );
    }

    #[test]
    fn empty_table_is_valid_everywhere() {
        let rt = RouteTable::default();
        let mut out = Vec::new();
        cluster_slots(&rt, &mut out);
        assert_eq!(out, b"*0\r\n");
        out.clear();
        cluster_shards(&rt, &mut out);
        assert_eq!(out, b"*0\r\n");
        assert_eq!(cluster_nodes(&rt), "");
        assert!(cluster_info(&rt).starts_with("cluster_state:fail\r\n"));
        out.clear();
        role_reply(Some(&rt), &[], &mut out);
        assert_eq!(out, b"*4\r\n$6\r\nmaster\r\n:0\r\n*0\r\n*0\r\n");
    }
}
