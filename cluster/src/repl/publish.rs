//! PUBLISH in cluster mode: a message published on this node goes to every other live node
//! (`Publish` calls), whose workers hand it to their subscribers, as Redis Cluster passes
//! PUBLISH over its bus. The PUBLISH itself answers with this node's count, as in Redis
//! Cluster.
//!
//! Each other node has a queue here and at most one call in flight, which carries what was
//! queued meanwhile (up to [`BATCH_BYTES`]): messages arrive in the order this node's
//! workers handed them over, and one client's in the order it published them. Delivery is
//! best effort: a call that fails (the node is down or restarting) loses its messages, and a
//! node that cannot keep up loses the newest past [`QUEUE_BYTES`] queued; both are logged.
//! A receiving node answers a call once its workers have handed the messages to their
//! subscribers, so a node that cannot keep up makes the queue here grow, not its own
//! channels.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::ChannelBuilder;
use log::warn;
use simplekv_net::server::cluster::RouteTable;
use simplekv_net::server::pubsub::Publication;
use simplekv_proto::replication::{Publication as PbPublication, PublishRequest};
use simplekv_proto::replication_grpc::ReplicationClient;

use super::{Dial, Event, EventTx};

/// Bytes of messages one call carries at most (a larger message goes alone).
const BATCH_BYTES: usize = 1 << 20;
/// Bytes queued for one node past which new messages for it are dropped.
const QUEUE_BYTES: usize = 64 << 20;
/// A node's lost messages are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// A call that has not finished after this long counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

struct Peer {
    /// Numbers this node's peers, so that the end of a call made to an earlier one (the
    /// node left the routes, or came back at another address, meanwhile) is not taken for
    /// the end of this one's.
    generation: u64,
    addr: String,
    client: ReplicationClient,
    queue: VecDeque<Arc<Publication>>,
    queued_bytes: usize,
    in_flight: bool,
    /// Messages lost since the last log line, why, and when that line was written.
    lost: u64,
    lost_why: String,
    logged: Option<Instant>,
}

impl Peer {
    fn lose(&mut self, node: u32, n: u64, why: &str) {
        self.lost += n;
        self.lost_why = why.to_string();
        if self.logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            warn!(
                "pub/sub: {} message(s) published here may not have reached node {node} ({}): {}",
                self.lost, self.addr, self.lost_why
            );
            self.lost = 0;
            self.logged = Some(Instant::now());
        }
    }
}

/// The other nodes' queues of published messages.
#[derive(Default)]
pub(super) struct Forwarder {
    peers: BTreeMap<u32, Peer>,
    next_generation: u64,
}

/// What a queued message costs: its bytes and its bookkeeping (a tiny message is not free).
fn size(p: &Publication) -> usize {
    p.channel.len() + p.message.len() + 128
}

impl Forwarder {
    /// Queues `p` for every other live node and sends what can go.
    pub(super) fn publish(
        &mut self,
        p: Arc<Publication>,
        routes: &RouteTable,
        dial: &Dial,
        events: &EventTx,
    ) {
        self.peers
            .retain(|id, _| routes.nodes.contains_key(id) && *id != routes.me);
        for (&id, node) in &routes.nodes {
            if id == routes.me {
                continue;
            }
            let generation = &mut self.next_generation;
            let peer = self
                .peers
                .entry(id)
                .or_insert_with(|| new_peer(&node.grpc, dial, generation));
            if peer.addr != node.grpc {
                // The node came back elsewhere: its old queue was for the old process.
                *peer = new_peer(&node.grpc, dial, generation);
            }
            if peer.queued_bytes + size(&p) > QUEUE_BYTES && !peer.queue.is_empty() {
                peer.lose(id, 1, "more than 64 MiB queued for it");
                continue;
            }
            peer.queued_bytes += size(&p);
            peer.queue.push_back(p.clone());
            pump(id, peer, routes.me, dial, events);
        }
    }

    /// The call to `node`'s peer of `generation` finished (`error`: how it failed); the
    /// next one goes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn done(
        &mut self,
        node: u32,
        generation: u64,
        sent: u64,
        error: Option<String>,
        me: u32,
        dial: &Dial,
        events: &EventTx,
    ) {
        let Some(peer) = self
            .peers
            .get_mut(&node)
            .filter(|p| p.generation == generation)
        else {
            return;
        };
        peer.in_flight = false;
        if let Some(e) = error {
            peer.lose(node, sent, &e);
        }
        pump(node, peer, me, dial, events);
    }
}

fn new_peer(addr: &str, dial: &Dial, generation: &mut u64) -> Peer {
    *generation += 1;
    let ch = ChannelBuilder::new(dial.env.clone())
        .http2_bdp_probe(false)
        .max_send_message_len(-1)
        .connect(addr);
    Peer {
        generation: *generation,
        addr: addr.to_string(),
        client: ReplicationClient::new(ch),
        queue: VecDeque::new(),
        queued_bytes: 0,
        in_flight: false,
        lost: 0,
        lost_why: String::new(),
        logged: None,
    }
}

/// Sends the next batch of `peer`'s queue unless a call is in flight.
fn pump(node: u32, peer: &mut Peer, me: u32, dial: &Dial, events: &EventTx) {
    if peer.in_flight || peer.queue.is_empty() {
        return;
    }
    let mut req = PublishRequest::new();
    req.from_node = me;
    let mut bytes = 0;
    while let Some(p) = peer.queue.front() {
        if !req.messages.is_empty() && bytes + size(p) > BATCH_BYTES {
            break;
        }
        let Some(p) = peer.queue.pop_front() else {
            break;
        };
        bytes += size(&p);
        let mut m = PbPublication::new();
        m.channel = p.channel.clone();
        m.message = p.message.clone();
        req.messages.push(m);
    }
    peer.queued_bytes -= bytes;
    let sent = req.messages.len() as u64;
    let call = match peer
        .client
        .publish_async_opt(&req, dial.opt().timeout(CALL_TIMEOUT))
    {
        Ok(call) => call,
        Err(e) => {
            peer.lose(node, sent, &e.to_string());
            return;
        }
    };
    peer.in_flight = true;
    let ev = events.clone();
    let generation = peer.generation;
    peer.client.spawn(async move {
        let error = call.await.err().map(|e| e.to_string());
        let _ = ev.send(Event::Published {
            node,
            generation,
            sent,
            error,
        });
    });
}
