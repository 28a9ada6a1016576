//! PUBLISH in cluster mode: a message published on this node goes to every other live node
//! (`Publish` calls), whose workers hand it to their subscribers, as Redis Cluster passes
//! PUBLISH over its bus. The PUBLISH itself answers with this node's count, as in Redis
//! Cluster.
//!
//! Each other node has a queue here and at most one call in flight, which carries what was
//! queued meanwhile (up to [`BATCH_BYTES`]): messages arrive in the order this node's
//! workers handed them over, and one client's in the order it published them. A receiving
//! node answers a call once its workers have handed the messages to their subscribers, so a
//! node that cannot keep up makes the queue here grow, not its own channels.
//!
//! Delivery is best effort, as over Redis Cluster's bus, and every loss is logged (at most
//! a line per node every [`LOG_EVERY`], with the counts held back meanwhile):
//! - a call that could not connect (the node is restarting, its port not open yet) is sent
//!   again at the next tick, its messages first, while the node stays live;
//! - a call that failed otherwise (a timeout: the node may have delivered it) is dropped;
//! - past [`QUEUE_BYTES`] queued for a node that does not keep up, new messages for it are
//!   dropped;
//! - a node that leaves the live set (its ZooKeeper session ended) takes what was queued
//!   for it, and gets nothing published while it is out.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::{ChannelBuilder, RpcStatusCode};
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

/// How a call ended.
#[derive(Debug)]
pub enum CallEnd {
    Delivered,
    /// The node did not take the call: its messages may go again.
    NotTaken(String),
    /// Failed otherwise: the node may or may not have delivered them.
    Failed(String),
}

/// Messages a node lost since the last log line, by cause.
#[derive(Default)]
struct Losses {
    queue_full: u64,
    failed: u64,
    last_error: String,
    /// When the last line was written.
    logged: Option<Instant>,
}

impl Losses {
    fn pending(&self) -> bool {
        self.queue_full + self.failed > 0
    }

    /// Writes the line if there is something to say and the last one is old enough (or
    /// `now_anyway`: the peer is going).
    fn log(&mut self, node: u32, addr: &str, now_anyway: bool) {
        if !self.pending() || !(now_anyway || self.logged.is_none_or(|t| t.elapsed() >= LOG_EVERY))
        {
            return;
        }
        let mut why = Vec::new();
        if self.queue_full > 0 {
            why.push(format!(
                "{} dropped with more than 64 MiB queued for it",
                self.queue_full
            ));
        }
        if self.failed > 0 {
            why.push(format!(
                "{} in calls that failed (last: {})",
                self.failed, self.last_error
            ));
        }
        warn!(
            "pub/sub: messages published here may not have reached node {node} ({addr}): {}",
            why.join("; ")
        );
        *self = Losses {
            logged: Some(Instant::now()),
            ..Default::default()
        };
    }
}

struct Peer {
    /// Numbers this node's peers, so that the end of a call made to an earlier one (the
    /// node left the routes, or came back at another address, meanwhile) is not taken for
    /// the end of this one's.
    generation: u64,
    addr: String,
    client: ReplicationClient,
    queue: VecDeque<Arc<Publication>>,
    queued_bytes: usize,
    /// The messages of the call in flight.
    in_flight: Option<Vec<Arc<Publication>>>,
    /// The node did not take the last call: wait for the next tick before sending again.
    backoff: bool,
    losses: Losses,
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
        self.follow_routes(routes, dial);
        for (&id, peer) in &mut self.peers {
            if peer.queued_bytes + size(&p) > QUEUE_BYTES && !peer.queue.is_empty() {
                peer.losses.queue_full += 1;
                peer.losses.log(id, &peer.addr, false);
                continue;
            }
            peer.queued_bytes += size(&p);
            peer.queue.push_back(p.clone());
            pump(id, peer, routes.me, dial, events);
        }
    }

    /// The call to `node`'s peer of `generation` finished; the next one goes (at the next
    /// tick if the node did not take it).
    pub(super) fn done(
        &mut self,
        node: u32,
        generation: u64,
        end: CallEnd,
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
        let sent = peer.in_flight.take().unwrap_or_default();
        match end {
            CallEnd::Delivered => {}
            CallEnd::NotTaken(e) => {
                // First again, in their order.
                for p in sent.into_iter().rev() {
                    peer.queued_bytes += size(&p);
                    peer.queue.push_front(p);
                }
                peer.losses.last_error = e;
                peer.backoff = true;
                return;
            }
            CallEnd::Failed(e) => {
                peer.losses.failed += sent.len() as u64;
                peer.losses.last_error = e;
                peer.losses.log(node, &peer.addr, false);
            }
        }
        pump(node, peer, me, dial, events);
    }

    /// Every tick: calls the nodes did not take go again, and losses held back are logged.
    pub(super) fn tick(&mut self, routes: &RouteTable, dial: &Dial, events: &EventTx) {
        if self.peers.is_empty() {
            return;
        }
        self.follow_routes(routes, dial);
        for (&id, peer) in &mut self.peers {
            peer.backoff = false;
            peer.losses.log(id, &peer.addr, false);
            pump(id, peer, routes.me, dial, events);
        }
    }

    /// A peer for each other live node; one that left the live set, or came back at
    /// another address, loses what was queued for it (logged).
    fn follow_routes(&mut self, routes: &RouteTable, dial: &Dial) {
        let gone: Vec<u32> = self
            .peers
            .iter()
            .filter(|(id, p)| routes.nodes.get(id).is_none_or(|n| n.grpc != p.addr))
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            if let Some(mut p) = self.peers.remove(&id) {
                let queued = p.queue.len() + p.in_flight.as_ref().map_or(0, Vec::len);
                if queued > 0 {
                    p.losses.failed += queued as u64;
                    p.losses.last_error = "the node left the cluster's live nodes".into();
                }
                p.losses.log(id, &p.addr, true);
            }
        }
        for (&id, node) in &routes.nodes {
            if id != routes.me && !self.peers.contains_key(&id) {
                self.next_generation += 1;
                let peer = new_peer(&node.grpc, dial, self.next_generation);
                self.peers.insert(id, peer);
            }
        }
    }
}

fn new_peer(addr: &str, dial: &Dial, generation: u64) -> Peer {
    // A node that restarts opens its port a moment after it is live again: try again soon.
    let ch = ChannelBuilder::new(dial.env.clone())
        .http2_bdp_probe(false)
        .max_send_message_len(-1)
        .initial_reconnect_backoff(Duration::from_millis(50))
        .max_reconnect_backoff(Duration::from_millis(500))
        .connect(addr);
    Peer {
        generation,
        addr: addr.to_string(),
        client: ReplicationClient::new(ch),
        queue: VecDeque::new(),
        queued_bytes: 0,
        in_flight: None,
        backoff: false,
        losses: Losses::default(),
    }
}

/// Sends the next batch of `peer`'s queue unless a call is in flight or the node did not
/// take the last one this tick.
fn pump(node: u32, peer: &mut Peer, me: u32, dial: &Dial, events: &EventTx) {
    if peer.in_flight.is_some() || peer.backoff || peer.queue.is_empty() {
        return;
    }
    let mut req = PublishRequest::new();
    req.from_node = me;
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(p) = peer.queue.front() {
        if !batch.is_empty() && bytes + size(p) > BATCH_BYTES {
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
        batch.push(p);
    }
    peer.queued_bytes -= bytes;
    let call = match peer
        .client
        .publish_async_opt(&req, dial.opt().timeout(CALL_TIMEOUT))
    {
        Ok(call) => call,
        Err(e) => {
            peer.losses.failed += batch.len() as u64;
            peer.losses.last_error = e.to_string();
            peer.losses.log(node, &peer.addr, false);
            return;
        }
    };
    peer.in_flight = Some(batch);
    let ev = events.clone();
    let generation = peer.generation;
    peer.client.spawn(async move {
        let end = match call.await {
            Ok(_) => CallEnd::Delivered,
            // The connection could not be made: the node has not seen the call.
            Err(grpcio::Error::RpcFailure(s))
                if s.code() == RpcStatusCode::UNAVAILABLE
                    && s.message().to_ascii_lowercase().contains("connect") =>
            {
                CallEnd::NotTaken(s.message().to_string())
            }
            Err(e) => CallEnd::Failed(e.to_string()),
        };
        let _ = ev.send(Event::Published {
            node,
            generation,
            end,
        });
    });
}
