//! Keyspace notifications, as Redis's `notify-keyspace-events`: each change to a key is
//! published on `__keyspace@0__:<key>` (flag `K`, the event as message) and on
//! `__keyevent@0__:<event>` (flag `E`, the key as message), for the classes the flags name.
//!
//! The events are Redis 7.0's for the commands simplekv has: `set` (SET, SETNX, SETEX,
//! PSETEX, GETSET, MSET, MSETNX, BITOP), `expire` (the EXPIRE family, GETEX, and SET / SETEX
//! / PSETEX with an expiry, after `set`), `persist`, `del` (DEL, UNLINK, GETDEL, an expiry in
//! the past, BITOP with an empty result), `append`, `setrange`, `incrby` (INCR, DECR, INCRBY,
//! DECRBY), `incrbyfloat`, `setbit` (SETBIT, BITFIELD), `rename_from` / `rename_to`,
//! `copy_to`, `expired`, `new` (a key created; flag `n`) and `keymiss` (a read of a missing
//! key; flag `m`).
//!
//! Where they come from: the engine records what each local write did to its key while the
//! flags ask for a write's event (`Store::set_change_tap`); the worker that ran the write
//! turns the records into events right after the command (it knows which command), in the
//! order the writes ran (`Change::seq`), and hands them to the subscribers, its own at once
//! and those of other workers by message. While nobody on the node subscribes to anything,
//! the records are dropped unread. Any record a command path did not take itself is published at the end of the
//! worker's turn under its generic event (`set`, `del`, `expire`, `persist`).
//!
//! `expired` is published when the key's tombstone is written: by active expiry, or by a
//! write that finds the value expired (as Redis's lazy expiry on a write). A read of an
//! expired key hides it without deleting it, so it publishes nothing until then.
//!
//! As in Redis, a notification is sent when the write runs, before the reply waits for its
//! fsync (`fsync = always`) or its replicas (`acks = all`): a subscriber may hear of a write
//! a crash then loses. In cluster mode each node publishes the writes it runs as leader, to
//! its own subscribers (Redis Cluster's notifications are local to a node too).
use std::sync::Arc;

use simplekv_conf::notify as flag;
use simplekv_engine::{Change, ChangeKind, Prior};

use super::pubsub::Publication;
use super::router::{Msg, Op};
use super::worker::Worker;

/// The events (class, name) of one change made by command `cmd` (lowercase; "" when not
/// known). `sets_expiry`: the command gave the key an expiry along with its value (SET with
/// EX/PX/EXAT/PXAT, SETEX, PSETEX).
pub fn events_of(
    cmd: &str,
    kind: ChangeKind,
    sets_expiry: bool,
    out: &mut Vec<(u32, &'static str)>,
) {
    match kind {
        ChangeKind::Set { prior } => {
            if prior == Prior::Expired {
                out.push((flag::EXPIRED, "expired"));
            }
            if prior != Prior::Live {
                out.push((flag::NEW, "new"));
            }
            out.push(match cmd {
                "append" => (flag::STRING, "append"),
                "setrange" => (flag::STRING, "setrange"),
                "incr" | "decr" | "incrby" | "decrby" => (flag::STRING, "incrby"),
                "incrbyfloat" => (flag::STRING, "incrbyfloat"),
                "setbit" | "bitfield" => (flag::STRING, "setbit"),
                "rename" | "renamenx" => (flag::GENERIC, "rename_to"),
                "copy" => (flag::GENERIC, "copy_to"),
                _ => (flag::STRING, "set"),
            });
            if sets_expiry {
                out.push((flag::GENERIC, "expire"));
            }
        }
        ChangeKind::Deleted { was_visible: false } => out.push((flag::EXPIRED, "expired")),
        ChangeKind::Deleted { was_visible: true } => out.push(match cmd {
            "rename" | "renamenx" => (flag::GENERIC, "rename_from"),
            "expired" => (flag::EXPIRED, "expired"),
            _ => (flag::GENERIC, "del"),
        }),
        ChangeKind::Expire => out.push((flag::GENERIC, "expire")),
        ChangeKind::Persist => out.push((flag::GENERIC, "persist")),
    }
}

/// RENAME, RENAMENX and COPY, as Redis publishes them: the destination is deleted and added
/// again (`new`, whether it existed or not), then `rename_from` for the source, then
/// `rename_to` (or `copy_to`) for the destination.
fn move_events(cmd: &str, changes: &[Change], out: &mut Vec<(u32, &'static str, usize)>) {
    let to = if cmd == "copy" {
        "copy_to"
    } else {
        "rename_to"
    };
    for (i, c) in changes.iter().enumerate() {
        if let ChangeKind::Set { prior } = c.kind {
            if prior == Prior::Expired {
                out.push((flag::EXPIRED, "expired", i));
            }
            out.push((flag::NEW, "new", i));
        }
    }
    for (i, c) in changes.iter().enumerate() {
        match c.kind {
            ChangeKind::Set { .. } => {}
            ChangeKind::Deleted { was_visible: true } => {
                out.push((flag::GENERIC, "rename_from", i))
            }
            kind => {
                let mut own = Vec::new();
                events_of("", kind, false, &mut own);
                out.extend(own.into_iter().map(|(class, e)| (class, e, i)));
            }
        }
    }
    for (i, c) in changes.iter().enumerate() {
        if matches!(c.kind, ChangeKind::Set { .. }) {
            out.push((flag::GENERIC, to, i));
        }
    }
}

/// Whether a keyed command sets an expiry along with the value.
pub fn sets_expiry(cmd: &str, args: &[&[u8]]) -> bool {
    match cmd {
        "setex" | "psetex" => true,
        "set" => args.iter().skip(3).any(|a| {
            [&b"ex"[..], b"px", b"exat", b"pxat"]
                .iter()
                .any(|o| a.eq_ignore_ascii_case(o))
        }),
        _ => false,
    }
}

/// The command an op runs, for its events ("" when the op does not say).
pub fn op_command(op: &Op) -> (&'static str, bool) {
    match op {
        Op::Keyed { args, .. } => {
            let slices = args.slices();
            match crate::cmd::lookup(slices[0]) {
                Some(spec) => (spec.name, sets_expiry(spec.name, &slices)),
                None => ("", false),
            }
        }
        // The table's lowercase name of DEL, UNLINK, MSET or MSETNX.
        Op::Del { kind, .. } | Op::MSet { kind, .. } => (
            crate::cmd::lookup(kind.name()).map_or("", |s| s.name),
            false,
        ),
        Op::MSetNx { .. } => ("msetnx", false),
        Op::Move { kind, .. } | Op::MoveStep { kind, .. } => (kind.command(), false),
        _ => ("", false),
    }
}

/// Channels of the two kinds.
const KEYSPACE: &[u8] = b"__keyspace@0__:";
const KEYEVENT: &[u8] = b"__keyevent@0__:";

impl Worker {
    /// The flags in force, when they ask for any event at all (`K` or `E`, and a class).
    pub(super) fn notify_flags(&self) -> Option<u32> {
        let f = self.notify.flags;
        let kinds = flag::KEYSPACE | flag::KEYEVENT;
        (f & kinds != 0 && f & !kinds != 0).then_some(f)
    }

    /// After a CONFIG SET (and at start): the engine records changes only while events are
    /// asked for.
    pub(super) fn configure_notifications(&mut self) {
        let flags =
            simplekv_conf::keyspace_events_from_str(&self.config.server.notify_keyspace_events)
                .unwrap_or(0);
        self.notify.flags = flags;
        // Only key misses asked for: no write has an event to publish.
        let writes = !(flag::KEYSPACE | flag::KEYEVENT | flag::KEY_MISS);
        let on = self.notify_flags().is_some() && flags & writes != 0;
        if on != self.notify.taps_on {
            self.notify.taps_on = on;
            for p in self.owned.clone() {
                if let Some(s) = self.store_mut(p) {
                    s.set_change_tap(on);
                }
            }
        }
    }

    /// Publishes the changes the stores recorded since the last call, as made by command
    /// `cmd` (see [`events_of`]).
    pub(super) fn notify_changes(&mut self, cmd: &str, sets_expiry: bool) {
        if !self.notify.taps_on {
            return;
        }
        let mut changes = std::mem::take(&mut self.notify.changes);
        for i in 0..self.owned.len() {
            let p = self.owned[i];
            if let Some(s) = self.store_mut(p) {
                s.take_changes(&mut changes);
            }
        }
        if changes.is_empty() {
            self.notify.changes = changes;
            return;
        }
        if !self.shared.subscriptions.active() {
            changes.clear();
            self.notify.changes = changes;
            return;
        }
        // In the order the writes ran, over the partitions.
        changes.sort_by_key(|c| c.seq);
        // (class, event, index of the change's key)
        let mut events: Vec<(u32, &'static str, usize)> = Vec::new();
        if matches!(cmd, "rename" | "renamenx" | "copy") {
            move_events(cmd, &changes, &mut events);
        } else {
            let mut own = Vec::new();
            for (i, c) in changes.iter().enumerate() {
                own.clear();
                events_of(cmd, c.kind, sets_expiry, &mut own);
                events.extend(own.iter().map(|&(class, e)| (class, e, i)));
            }
        }
        for &(class, event, i) in &events {
            self.notify_event(class, event, &changes[i].key);
        }
        changes.clear();
        self.notify.changes = changes;
    }

    /// Publishes one event about `key`, if the flags ask for its class and someone on the
    /// node subscribes to anything.
    pub(super) fn notify_event(&mut self, class: u32, event: &str, key: &[u8]) {
        let Some(flags) = self.notify_flags() else {
            return;
        };
        if flags & class == 0 || !self.shared.subscriptions.active() {
            return;
        }
        if flags & flag::KEYSPACE != 0 {
            let mut channel = KEYSPACE.to_vec();
            channel.extend_from_slice(key);
            self.publish_local(channel, event.as_bytes().to_vec());
        }
        if flags & flag::KEYEVENT != 0 {
            let mut channel = KEYEVENT.to_vec();
            channel.extend_from_slice(event.as_bytes());
            self.publish_local(channel, key.to_vec());
        }
    }

    /// A keyed command that ran here (not as an op): its key miss and its changes.
    pub(super) fn notify_command(
        &mut self,
        spec: &crate::cmd::CommandSpec,
        args: &[&[u8]],
        found: Option<bool>,
    ) {
        if found == Some(false)
            && let Some(key) = crate::cmd::key_of(args)
        {
            self.notify_miss(key);
        }
        self.notify_changes(spec.name, sets_expiry(spec.name, args));
    }

    /// A read found no key (flag `m`).
    pub(super) fn notify_miss(&mut self, key: &[u8]) {
        if self.notify.flags & flag::KEY_MISS != 0 {
            self.notify_event(flag::KEY_MISS, "keymiss", key);
        }
    }

    /// To this node's subscribers: this worker's now, the others' by message (after what
    /// this worker sent them before).
    fn publish_local(&mut self, channel: Vec<u8>, message: Vec<u8>) {
        let p = Arc::new(Publication {
            shard: false,
            channel,
            message,
        });
        let workers: Vec<usize> = self.shared.subscriptions.workers().collect();
        for w in workers {
            if w == self.id {
                self.deliver_publication(&p);
            } else {
                self.req_out[w].push(Msg::Publish(p.clone()));
            }
        }
    }
}

/// A worker's notification state.
#[derive(Debug, Default)]
pub struct NotifyState {
    pub flags: u32,
    /// The stores record changes.
    pub taps_on: bool,
    changes: Vec<Change>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(cmd: &str, kind: ChangeKind, exp: bool) -> Vec<&'static str> {
        let mut out = Vec::new();
        events_of(cmd, kind, exp, &mut out);
        out.into_iter().map(|(_, e)| e).collect()
    }

    #[test]
    fn events_follow_redis_for_each_command() {
        let new = ChangeKind::Set {
            prior: Prior::Absent,
        };
        let over = ChangeKind::Set { prior: Prior::Live };
        let stale = ChangeKind::Set {
            prior: Prior::Expired,
        };
        assert_eq!(ev("set", new, false), ["new", "set"]);
        assert_eq!(ev("set", over, true), ["set", "expire"]);
        assert_eq!(ev("incr", stale, false), ["expired", "new", "incrby"]);
        assert_eq!(ev("append", over, false), ["append"]);
        assert_eq!(ev("rename", over, false), ["rename_to"]);
        assert_eq!(ev("copy", new, false), ["new", "copy_to"]);
        let del = ChangeKind::Deleted { was_visible: true };
        assert_eq!(ev("rename", del, false), ["rename_from"]);
        assert_eq!(ev("getdel", del, false), ["del"]);
        assert_eq!(ev("expired", del, false), ["expired"]);
        let gone = ChangeKind::Deleted { was_visible: false };
        assert_eq!(ev("del", gone, false), ["expired"]);
        assert_eq!(ev("", ChangeKind::Persist, false), ["persist"]);
        assert!(sets_expiry(
            "set",
            &[b"SET", b"k", b"v", b"nx", b"Px", b"5"]
        ));
        // RENAME: the destination always as new (Redis deletes and adds it), then the
        // source, then the destination.
        let changes = [
            Change {
                key: b"dst".to_vec(),
                kind: over,
                seq: 1,
            },
            Change {
                key: b"src".to_vec(),
                kind: del,
                seq: 2,
            },
        ];
        let mut out = Vec::new();
        move_events("rename", &changes, &mut out);
        let names: Vec<(&str, usize)> = out.iter().map(|&(_, e, i)| (e, i)).collect();
        assert_eq!(names, [("new", 0), ("rename_from", 1), ("rename_to", 0)]);
        out.clear();
        move_events("copy", &changes[..1], &mut out);
        let names: Vec<&str> = out.iter().map(|&(_, e, _)| e).collect();
        assert_eq!(names, ["new", "copy_to"]);
        assert!(!sets_expiry("set", &[b"SET", b"k", b"ex"]));
        assert!(!sets_expiry("set", &[b"SET", b"k", b"v", b"KEEPTTL"]));
        assert!(sets_expiry("psetex", &[b"PSETEX", b"k", b"5", b"v"]));
    }
}
