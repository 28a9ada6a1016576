//! Pub/sub as Redis 7.0 runs it over RESP2: PUBLISH, SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE,
//! PUNSUBSCRIBE, the sharded SPUBLISH, SSUBSCRIBE and SUNSUBSCRIBE, and PUBSUB CHANNELS,
//! NUMSUB, NUMPAT, SHARDCHANNELS and SHARDNUMSUB.
//!
//! A connection's subscriptions live in its `Client` ([`Subs`]), and each worker knows which
//! of its own connections subscribe to what ([`Registry`]). A PUBLISH runs on every worker of
//! the node (`Op::Publish`): each hands the message to its subscribers, behind the replies
//! they are owed, and answers how many received it; the sum is PUBLISH's reply. A connection
//! sends its next command only once the PUBLISH ran everywhere (it is a server command, see
//! `Worker::waits_for_order`), so one client's messages reach a subscriber in the order it
//! published them, and after its writes sent before them. While nobody on the node subscribes,
//! PUBLISH answers 0 at once (one atomic load).
//!
//! A subscriber that does not read is closed once its unread output passes 32 MiB, or 8 MiB
//! for 60 s, as Redis's default `client-output-buffer-limit pubsub 32mb 8mb 60`. As in
//! Redis, a subscribed RESP2 connection may only run the (un)subscribe commands, PING, QUIT
//! and RESET, and is never closed for being idle. Unlike Redis 7.0, the (un)subscribe
//! commands are refused inside MULTI: Redis queues them and then writes their replies into
//! EXEC's array, one too many, which no client library can read.
//!
//! In cluster mode a node's PUBLISH reaches the subscribers of that node, as in Redis Cluster
//! before the message is passed on over the cluster bus; a sharded channel belongs to its
//! slot (`Worker::cmd_publish`).
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use std::sync::Arc;
use std::time::Instant;

use super::conn::{Client, Gather, Output};
use super::dispatch::{Finisher, err};
use super::router::Op;
use super::worker::{FIRST_CONN, StreamLimit, Worker};
use crate::glob::glob_match;
use crate::resp::encode::{write_array_len, write_bulk, write_help, write_integer, write_null};

/// A subscriber is closed past these, as Redis's `client-output-buffer-limit pubsub`.
pub const LIMIT: StreamLimit = StreamLimit {
    soft: 8 << 20,
    hard: 32 << 20,
    soft_for: Duration::from_secs(60),
    what: "pub/sub",
    push: true,
};

/// What a subscription is to: a channel, a glob-style pattern of channels, or a shard
/// channel (SSUBSCRIBE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Channel,
    Pattern,
    Shard,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Channel, Kind::Pattern, Kind::Shard];

    fn index(self) -> usize {
        self as usize
    }

    /// The kind a (un)subscribe command is about, by its name.
    pub fn of_command(name: &str) -> Kind {
        match name {
            "psubscribe" | "punsubscribe" => Kind::Pattern,
            "ssubscribe" | "sunsubscribe" => Kind::Shard,
            _ => Kind::Channel,
        }
    }

    /// The name of a subscribe command's reply.
    pub fn subscribed(self) -> &'static [u8] {
        match self {
            Kind::Channel => b"subscribe",
            Kind::Pattern => b"psubscribe",
            Kind::Shard => b"ssubscribe",
        }
    }

    /// The name of an unsubscribe command's reply.
    pub fn unsubscribed(self) -> &'static [u8] {
        match self {
            Kind::Channel => b"unsubscribe",
            Kind::Pattern => b"punsubscribe",
            Kind::Shard => b"sunsubscribe",
        }
    }
}

/// Whether a command is one of the six (un)subscribe commands.
pub fn is_subscription_command(name: &str) -> bool {
    matches!(
        name,
        "subscribe" | "psubscribe" | "ssubscribe" | "unsubscribe" | "punsubscribe" | "sunsubscribe"
    )
}

/// Whether a subscribed connection may run the command (RESP2).
pub fn allowed_when_subscribed(name: &str) -> bool {
    is_subscription_command(name) || matches!(name, "ping" | "quit" | "reset")
}

/// The error a subscribed connection gets for any other command (`name` as Redis writes it:
/// `client|list` for a subcommand).
pub fn not_allowed_error(name: &str) -> String {
    format!(
        "ERR Can't execute '{name}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
         RESET are allowed in this context"
    )
}

/// A connection's subscriptions.
#[derive(Debug, Default)]
pub struct Subs {
    sets: [HashSet<Vec<u8>>; 3],
}

impl Subs {
    pub fn of(&self, kind: Kind) -> &HashSet<Vec<u8>> {
        &self.sets[kind.index()]
    }

    /// The count in a (un)subscribe reply, as Redis's: channels and patterns together, shard
    /// channels on their own.
    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Shard => self.sets[2].len(),
            _ => self.sets[0].len() + self.sets[1].len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sets.iter().all(HashSet::is_empty)
    }

    /// Adds a subscription: false if the connection had it already.
    fn insert(&mut self, kind: Kind, name: &[u8]) -> bool {
        let set = &mut self.sets[kind.index()];
        !set.contains(name) && set.insert(name.to_vec())
    }

    fn remove(&mut self, kind: Kind, name: &[u8]) -> bool {
        self.sets[kind.index()].remove(name)
    }
}

/// A message on its way to every worker's subscribers.
#[derive(Debug)]
pub struct Publication {
    /// SPUBLISH: to the subscribers of the shard channel only.
    pub shard: bool,
    pub channel: Vec<u8>,
    pub message: Vec<u8>,
}

/// A worker's subscriptions: by channel, pattern and shard channel, the tokens of its
/// connections that hold them.
#[derive(Debug, Default)]
pub struct Registry {
    maps: [HashMap<Vec<u8>, HashSet<usize>>; 3],
}

impl Registry {
    fn add(&mut self, kind: Kind, name: &[u8], token: usize) {
        self.maps[kind.index()]
            .entry(name.to_vec())
            .or_default()
            .insert(token);
    }

    fn remove(&mut self, kind: Kind, name: &[u8], token: usize) {
        let map = &mut self.maps[kind.index()];
        if let Some(tokens) = map.get_mut(name) {
            tokens.remove(&token);
            if tokens.is_empty() {
                map.remove(name);
            }
        }
    }

    /// The names of `kind` for which `pred` holds.
    fn names_where(&self, kind: Kind, pred: impl Fn(&[u8]) -> bool) -> Vec<Vec<u8>> {
        self.maps[kind.index()]
            .keys()
            .filter(|n| pred(n))
            .cloned()
            .collect()
    }

    /// Removes a name with all its subscribers, returned.
    fn take(&mut self, kind: Kind, name: &[u8]) -> Vec<usize> {
        self.maps[kind.index()]
            .remove(name)
            .map(|t| t.into_iter().collect())
            .unwrap_or_default()
    }

    /// Hands `p` to `send` once per subscription it reaches (the token and the message as
    /// the subscriber reads it): the channel's subscribers, then each matching pattern's
    /// (`pmessage`, once per pattern: a connection subscribed to both gets it twice, as in
    /// Redis), or, for SPUBLISH, the shard channel's (`smessage`).
    pub fn publish(&self, p: &Publication, mut send: impl FnMut(usize, &[u8])) {
        let (kind, name) = match p.shard {
            true => (Kind::Shard, &b"smessage"[..]),
            false => (Kind::Channel, &b"message"[..]),
        };
        if let Some(tokens) = self.maps[kind.index()].get(&p.channel) {
            let frame = message_frame(name, None, &p.channel, &p.message);
            for &t in tokens {
                send(t, &frame);
            }
        }
        if p.shard {
            return;
        }
        for (pattern, tokens) in &self.maps[Kind::Pattern.index()] {
            if glob_match(pattern, &p.channel, false) {
                let frame = message_frame(b"pmessage", Some(pattern), &p.channel, &p.message);
                for &t in tokens {
                    send(t, &frame);
                }
            }
        }
    }

    /// The channels (patterns, shard channels) with a subscriber here, those matching
    /// `pattern` if one is given.
    pub fn names(&self, kind: Kind, pattern: Option<&[u8]>) -> Vec<Vec<u8>> {
        self.maps[kind.index()]
            .keys()
            .filter(|n| pattern.is_none_or(|p| glob_match(p, n, false)))
            .cloned()
            .collect()
    }

    /// How many of this worker's connections subscribe to `name`.
    pub fn subscribers(&self, kind: Kind, name: &[u8]) -> usize {
        self.maps[kind.index()].get(name).map_or(0, HashSet::len)
    }

    /// A fingerprint of each channel (pattern, shard channel) with a subscriber here: INFO
    /// counts the distinct ones over the workers without moving their names.
    pub fn fingerprints(&self, kind: Kind) -> Vec<u64> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let h = BuildHasherDefault::<DefaultHasher>::default();
        self.maps[kind.index()]
            .keys()
            .map(|n| h.hash_one(n))
            .collect()
    }
}

/// `*3 message <channel> <message>`, or `*4 pmessage <pattern> <channel> <message>`.
fn message_frame(name: &[u8], pattern: Option<&[u8]>, channel: &[u8], message: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(40 + channel.len() + message.len());
    write_array_len(&mut f, 3 + usize::from(pattern.is_some()));
    write_bulk(&mut f, name);
    if let Some(p) = pattern {
        write_bulk(&mut f, p);
    }
    write_bulk(&mut f, channel);
    write_bulk(&mut f, message);
    f
}

/// A (un)subscribe reply: `*3 <name> <channel> <count>` (a null channel when an unsubscribe
/// of everything found nothing to drop).
fn write_reply(r: &mut Vec<u8>, name: &[u8], channel: Option<&[u8]>, count: usize) {
    write_array_len(r, 3);
    write_bulk(r, name);
    match channel {
        Some(c) => write_bulk(r, c),
        None => write_null(r),
    }
    write_integer(r, count as i64);
}

/// PING on a subscribed connection: `*2 pong <message>` (empty without one), as Redis.
pub fn write_pong(r: &mut Vec<u8>, message: Option<&[u8]>) {
    write_array_len(r, 2);
    write_bulk(r, b"pong");
    write_bulk(r, message.unwrap_or_default());
}

impl Worker {
    /// SUBSCRIBE, PSUBSCRIBE or SSUBSCRIBE: one reply per name, with the connection's count
    /// after it. Subscribing twice to the same name is one subscription.
    pub(super) fn subscribe(
        &mut self,
        token: usize,
        client: &mut Client,
        kind: Kind,
        names: &[&[u8]],
        r: &mut Vec<u8>,
    ) {
        let subs = client.subs.get_or_insert_with(Default::default);
        for &name in names {
            if subs.insert(kind, name) {
                self.pubsub.add(kind, name, token);
                self.shared.subscriptions.add(self.id);
            }
            write_reply(r, kind.subscribed(), Some(name), subs.count(kind));
        }
    }

    /// UNSUBSCRIBE, PUNSUBSCRIBE or SUNSUBSCRIBE: the names given, or all of the kind.
    pub(super) fn unsubscribe(
        &mut self,
        token: usize,
        client: &mut Client,
        kind: Kind,
        names: &[&[u8]],
        r: &mut Vec<u8>,
    ) {
        let mut subs = client.subs.take().unwrap_or_default();
        let names: Vec<Vec<u8>> = match names.is_empty() {
            true => subs.of(kind).iter().cloned().collect(),
            false => names.iter().map(|n| n.to_vec()).collect(),
        };
        if names.is_empty() {
            write_reply(r, kind.unsubscribed(), None, subs.count(kind));
        }
        for name in &names {
            if subs.remove(kind, name) {
                self.pubsub.remove(kind, name, token);
                self.shared.subscriptions.remove(self.id);
            }
            write_reply(r, kind.unsubscribed(), Some(name), subs.count(kind));
        }
        if !subs.is_empty() {
            client.subs = Some(subs);
        }
    }

    /// Every subscription of a connection that resets or closes.
    pub(super) fn drop_subscriptions(&mut self, token: usize, client: &mut Client) {
        if let Some(subs) = client.subs.take() {
            self.forget_subscriptions(token, &subs);
        }
    }

    /// Takes the subscriptions `subs` of connection `token` out of the registry.
    pub(super) fn forget_subscriptions(&mut self, token: usize, subs: &Subs) {
        for kind in Kind::ALL {
            for name in subs.of(kind) {
                self.pubsub.remove(kind, name, token);
                self.shared.subscriptions.remove(self.id);
            }
        }
    }

    /// `Op::Publish`: hands the message to this worker's subscribers; the number of
    /// subscriptions it reached.
    pub(super) fn deliver_publication(&mut self, p: &Publication) -> i64 {
        let mut reached = 0;
        let mut behind = Vec::new();
        let Worker {
            pubsub,
            conns,
            dirty_conns,
            ..
        } = self;
        pubsub.publish(p, |token, frame| {
            let Some(c) = conns
                .get_mut(token - FIRST_CONN)
                .and_then(Option::as_mut)
                .filter(|c| !c.client.closing)
            else {
                return;
            };
            reached += 1;
            if !super::worker::feed_stream(c, dirty_conns, token, frame, &LIMIT) {
                behind.push(token);
            }
        });
        behind.dedup();
        for token in behind {
            self.close_conn(token);
        }
        reached
    }

    /// The six (un)subscribe commands.
    pub(super) fn cmd_subscription(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &mut Client,
        name: &str,
        args: &[&[u8]],
    ) {
        if self.tx_plan.is_some() {
            // Refused as it was queued (`queue_command`); a plan cannot stream replies.
            return err(out, &in_multi_error(name));
        }
        let kind = Kind::of_command(name);
        let names = &args[1..];
        let mut r = Vec::new();
        if name.contains("unsub") {
            self.unsubscribe(token, client, kind, names, &mut r);
        } else {
            if kind == Kind::Shard
                && let Some(e) = self.shard_refusal(names)
            {
                return err(out, &e);
            }
            self.subscribe(token, client, kind, names, &mut r);
        }
        // Push output, as in Redis: CLIENT REPLY OFF and SKIP do not drop it.
        out.push_unsilenced(&r);
    }

    /// PUBLISH and SPUBLISH: to the node's subscribers, on the workers that have some.
    ///
    /// A worker's part counts as run once sent (`Output::ran` here, `ran_noted` in its
    /// answer): what matters for order is that it is queued behind this connection's earlier
    /// messages to that worker, so a pipeline of PUBLISHes goes on without waiting for each
    /// one's count. A PUBLISH still waits for the connection's other commands in flight
    /// (`waits_for_order`), so its message follows the writes sent before it.
    pub(super) fn cmd_publish(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &Client,
        name: &str,
        args: &[&[u8]],
    ) {
        let shard = name == "spublish";
        if shard && let Some(e) = self.shard_refusal(&args[1..2]) {
            return err(out, &e);
        }
        let in_tx = self.tx_plan.is_some();
        if !in_tx && self.cluster.is_none() && !self.shared.subscriptions.active() {
            return out.push_reply(b":0\r\n");
        }
        let p = Arc::new(Publication {
            shard,
            channel: args[1].to_vec(),
            message: args[2].to_vec(),
        });
        if in_tx {
            // Every worker's part of the transaction; the first worker's passes it on to the
            // other nodes as it runs, so that a transaction that does not run publishes
            // nothing anywhere.
            let g = self.collect_gather(Finisher::Sum { max: i64::MAX });
            let first = std::cell::Cell::new(true);
            return self.broadcast(token, out, client, g, || Op::Publish {
                p: p.clone(),
                forward: first.replace(false),
            });
        }
        self.forward_publication(&p);
        let workers: Vec<usize> = self.shared.subscriptions.workers().collect();
        match workers.as_slice() {
            [] => out.push_reply(b":0\r\n"),
            [w] if *w == self.id => {
                let mut r = Vec::new();
                write_integer(&mut r, self.deliver_publication(&p));
                out.push_reply(&r);
            }
            _ => {
                let g = self.collect_gather_of(Finisher::Sum { max: i64::MAX }, workers.len());
                self.broadcast_to(token, out, client, g, &workers, || Op::Publish {
                    p: p.clone(),
                    forward: false,
                });
            }
        }
    }

    /// Cluster mode: a PUBLISH goes to every other node too, through the replication
    /// thread (in the order this node's workers hand them over), as Redis Cluster passes
    /// it over its bus. Sharded messages stay with their slot's leader.
    pub(super) fn forward_publication(&self, p: &Arc<Publication>) {
        if p.shard {
            return;
        }
        if let Some(c) = self.cluster.as_ref() {
            let _ = c.feed.send(super::replica::FeedMsg::Publish(p.clone()));
        }
    }

    /// PUBSUB CHANNELS, NUMSUB, NUMPAT, SHARDCHANNELS, SHARDNUMSUB, HELP: over the node's
    /// workers, as Redis Cluster answers for the node asked.
    pub(super) fn cmd_pubsub(
        &mut self,
        token: usize,
        out: &mut Output,
        client: &Client,
        args: &[&[u8]],
    ) {
        let sub = String::from_utf8_lossy(args[1]).to_ascii_lowercase();
        let pattern = args.get(2).map(|p| p.to_vec());
        let names: Vec<Vec<u8>> = args[2..].iter().map(|n| n.to_vec()).collect();
        let (g, make): (Gather, Box<dyn Fn() -> Op>) = match sub.as_str() {
            "channels" | "shardchannels" if args.len() <= 3 => {
                let kind = match sub.as_str() {
                    "channels" => Kind::Channel,
                    _ => Kind::Shard,
                };
                let g = self.collect_gather(Finisher::Distinct { count: false });
                let make = move || Op::PubSubNames {
                    kind,
                    pattern: pattern.clone(),
                };
                (g, Box::new(make))
            }
            "numpat" if args.len() == 2 => {
                let g = self.collect_gather(Finisher::Distinct { count: true });
                let make = || Op::PubSubNames {
                    kind: Kind::Pattern,
                    pattern: None,
                };
                (g, Box::new(make))
            }
            "numsub" | "shardnumsub" => {
                let kind = match sub.as_str() {
                    "numsub" => Kind::Channel,
                    _ => Kind::Shard,
                };
                let g = self.collect_gather(Finisher::NumSub {
                    names: names.clone(),
                });
                let make = move || Op::NumSub {
                    kind,
                    names: names.clone(),
                };
                (g, Box::new(make))
            }
            "help" if args.len() == 2 => {
                let mut r = Vec::new();
                write_help(&mut r, HELP);
                return out.push_reply(&r);
            }
            _ => return super::dispatch::subcommand_syntax_error(out, "pubsub", args[1]),
        };
        self.broadcast(token, out, client, g, make);
    }

    /// Cluster mode: SSUBSCRIBE and SPUBLISH are the business of the leader of their
    /// channels' slot, which must be one (`CROSSSLOT`); elsewhere `MOVED` (or `TRYAGAIN`
    /// while the leadership moves), as Redis Cluster sends a shard channel's clients to its
    /// slot's node.
    fn shard_refusal(&self, channels: &[&[u8]]) -> Option<String> {
        let c = self.cluster.as_ref()?;
        let first = channels.first()?;
        let slot = crate::slot::key_slot(first);
        if channels.iter().any(|ch| crate::slot::key_slot(ch) != slot) {
            return Some(super::cluster_cmds::CROSSSLOT.into());
        }
        let p = self.topo.partition_of(first);
        if c.routes.leads(p) && !c.routes.fenced {
            return None;
        }
        Some(
            c.refusal(p, first, Instant::now())
                .unwrap_or_else(|| "TRYAGAIN the partition is changing leader".to_string()),
        )
    }

    /// Cluster mode, from the worker's cron: shard channels whose slot another node leads
    /// now lose their subscribers here, each told with a `sunsubscribe` message, as Redis
    /// Cluster tells them when their slot leaves the node; they subscribe again at the new
    /// leader. Not while the route table names no other leader (an election, or this node
    /// renewing its ZooKeeper session): the slot may well stay here.
    pub(super) fn drop_moved_shard_channels(&mut self) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        let rt = &c.routes;
        let topo = self.topo;
        let moved = self.pubsub.names_where(Kind::Shard, |ch| {
            rt.leader_addr(topo.partition_of(ch))
                .is_some_and(|a| a.id != rt.me)
        });
        let mut behind = Vec::new();
        for ch in moved {
            for token in self.pubsub.take(Kind::Shard, &ch) {
                let Some(conn) = self
                    .conns
                    .get_mut(token - FIRST_CONN)
                    .and_then(Option::as_mut)
                else {
                    continue;
                };
                let Some(subs) = conn.client.subs.as_mut() else {
                    continue;
                };
                subs.remove(Kind::Shard, &ch);
                self.shared.subscriptions.remove(self.id);
                let mut r = Vec::new();
                let count = subs.count(Kind::Shard);
                write_reply(&mut r, Kind::Shard.unsubscribed(), Some(&ch), count);
                if subs.is_empty() {
                    conn.client.subs = None;
                }
                if !super::worker::feed_stream(conn, &mut self.dirty_conns, token, &r, &LIMIT) {
                    behind.push(token);
                }
            }
        }
        behind.dedup();
        for token in behind {
            self.close_conn(token);
        }
    }
}

const HELP: &[&str] = &[
    "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "CHANNELS [<pattern>]",
    "    Return the currently active channels matching a <pattern> (default: '*').",
    "NUMPAT",
    "    Return number of subscriptions to patterns.",
    "NUMSUB [<channel> ...]",
    "    Return the number of subscribers for the specified channels, excluding",
    "    pattern subscriptions(default: no channels).",
    "SHARDCHANNELS [<pattern>]",
    "    Return the currently active shard level channels matching a <pattern> (default: '*').",
    "SHARDNUMSUB [<shardchannel> ...]",
    "    Return the number of subscribers for the specified shard level channel(s)",
];

/// The error for an (un)subscribe command inside MULTI.
pub fn in_multi_error(name: &str) -> String {
    format!(
        "ERR {} inside MULTI is not allowed",
        name.to_ascii_uppercase()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(shard: bool, channel: &[u8], message: &[u8]) -> Publication {
        Publication {
            shard,
            channel: channel.to_vec(),
            message: message.to_vec(),
        }
    }

    fn deliveries(r: &Registry, p: &Publication) -> Vec<(usize, String)> {
        let mut got = Vec::new();
        r.publish(p, |t, f| {
            got.push((t, String::from_utf8_lossy(f).into_owned()))
        });
        got.sort();
        got
    }

    #[test]
    fn a_message_reaches_the_channel_and_each_matching_pattern() {
        let mut r = Registry::default();
        r.add(Kind::Channel, b"news.tech", 10);
        r.add(Kind::Channel, b"news.tech", 11);
        r.add(Kind::Pattern, b"news.*", 11);
        r.add(Kind::Pattern, b"sport.*", 12);
        r.add(Kind::Shard, b"news.tech", 13);
        let got = deliveries(&r, &publication(false, b"news.tech", b"hi"));
        assert_eq!(
            got,
            vec![
                (
                    10,
                    "*3\r\n$7\r\nmessage\r\n$9\r\nnews.tech\r\n$2\r\nhi\r\n".into()
                ),
                (
                    11,
                    "*3\r\n$7\r\nmessage\r\n$9\r\nnews.tech\r\n$2\r\nhi\r\n".into()
                ),
                (
                    11,
                    "*4\r\n$8\r\npmessage\r\n$6\r\nnews.*\r\n$9\r\nnews.tech\r\n$2\r\nhi\r\n"
                        .into()
                ),
            ]
        );
        // SPUBLISH: the shard channel's subscribers only, no pattern.
        let got = deliveries(&r, &publication(true, b"news.tech", b"x"));
        assert_eq!(
            got,
            vec![(
                13,
                "*3\r\n$8\r\nsmessage\r\n$9\r\nnews.tech\r\n$1\r\nx\r\n".into()
            )]
        );
        assert!(deliveries(&r, &publication(false, b"weather", b"x")).is_empty());
    }

    #[test]
    fn the_registry_forgets_a_name_with_its_last_subscriber() {
        let mut r = Registry::default();
        r.add(Kind::Channel, b"a", 10);
        r.add(Kind::Channel, b"a", 11);
        r.add(Kind::Channel, b"b", 11);
        assert_eq!(r.subscribers(Kind::Channel, b"a"), 2);
        r.remove(Kind::Channel, b"a", 10);
        assert_eq!(r.subscribers(Kind::Channel, b"a"), 1);
        r.remove(Kind::Channel, b"a", 11);
        assert_eq!(r.subscribers(Kind::Channel, b"a"), 0);
        let mut names = r.names(Kind::Channel, None);
        names.sort();
        assert_eq!(names, vec![b"b".to_vec()]);
        assert!(r.names(Kind::Channel, Some(b"x*")).is_empty());
        assert_eq!(r.fingerprints(Kind::Channel).len(), 1);
        assert!(r.names(Kind::Pattern, None).is_empty());
    }

    #[test]
    fn fingerprints_agree_between_registries() {
        let (mut a, mut b) = (Registry::default(), Registry::default());
        a.add(Kind::Pattern, b"p*", 10);
        b.add(Kind::Pattern, b"p*", 20);
        b.add(Kind::Pattern, b"q*", 20);
        let mut all = a.fingerprints(Kind::Pattern);
        all.extend(b.fingerprints(Kind::Pattern));
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn counts_and_names_are_as_redis_gives_them() {
        let mut s = Subs::default();
        assert!(s.insert(Kind::Channel, b"a"));
        assert!(!s.insert(Kind::Channel, b"a"));
        assert!(s.insert(Kind::Pattern, b"a*"));
        assert!(s.insert(Kind::Shard, b"a"));
        assert_eq!(s.count(Kind::Channel), 2);
        assert_eq!(s.count(Kind::Pattern), 2);
        assert_eq!(s.count(Kind::Shard), 1);
        assert!(s.remove(Kind::Shard, b"a"));
        assert!(!s.remove(Kind::Shard, b"a"));
        assert!(!s.is_empty());
        for (name, kind) in [
            ("subscribe", Kind::Channel),
            ("unsubscribe", Kind::Channel),
            ("psubscribe", Kind::Pattern),
            ("punsubscribe", Kind::Pattern),
            ("ssubscribe", Kind::Shard),
            ("sunsubscribe", Kind::Shard),
        ] {
            assert_eq!(Kind::of_command(name), kind, "{name}");
            assert!(is_subscription_command(name));
        }
        assert!(allowed_when_subscribed("ping"));
        assert!(!allowed_when_subscribed("publish"));
        let mut r = Vec::new();
        write_reply(&mut r, b"unsubscribe", None, 0);
        assert_eq!(r, b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n");
        r.clear();
        write_pong(&mut r, None);
        assert_eq!(r, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    }
}
