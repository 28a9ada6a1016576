//! Test harness: a real store in a temporary directory, on a per-thread fake clock (tests run
//! in parallel threads, and the engine's clock is a plain `fn`).
use std::cell::Cell;

use simplekv_engine::{Options, Store};

use super::{Effect, ExecCtx, exec_keyed, lookup, table};
use crate::resp::{Reply, parse_reply};

pub const T0: u64 = 1_700_000_000_000;

thread_local! {
    static NOW: Cell<u64> = const { Cell::new(T0) };
}

pub fn fake_clock() -> u64 {
    NOW.with(|n| n.get())
}

pub struct Harness {
    pub store: Store,
    pub proto_max_bulk_len: usize,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub fn new() -> Harness {
        Self::with_options(Options::default())
    }

    pub fn with_options(opts: Options) -> Harness {
        NOW.with(|n| n.set(T0));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            Options {
                clock: fake_clock,
                segment_size: 1 << 20,
                ..opts
            },
        )
        .unwrap();
        Harness {
            store,
            proto_max_bulk_len: 512 << 20,
            _dir: dir,
        }
    }

    pub fn now(&self) -> u64 {
        fake_clock()
    }

    pub fn advance(&self, ms: u64) {
        NOW.with(|n| n.set(n.get() + ms));
    }

    pub fn ctx(&self) -> ExecCtx {
        ExecCtx {
            now_ms: Some(self.now()),
            proto_max_bulk_len: self.proto_max_bulk_len,
        }
    }

    /// Runs a keyed command as the server would (lookup, arity check, exec) and returns the
    /// single reply it produced, asserting that it produced exactly one.
    pub fn run_bytes(&mut self, args: &[&[u8]]) -> (Reply, Effect) {
        let spec = lookup(args[0]).expect("unknown command");
        assert!(
            table::arity_ok(spec, args.len()),
            "bad arity in test: {args:?}"
        );
        let ctx = self.ctx();
        let mut out = Vec::new();
        let effect = exec_keyed(spec, args, &mut self.store, &ctx, &mut out);
        let (reply, used) = parse_reply(&out).unwrap().expect("incomplete reply");
        assert_eq!(used, out.len(), "more than one reply: {out:?}");
        (reply, effect)
    }

    pub fn run(&mut self, args: &[&str]) -> Reply {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.run_bytes(&args).0
    }

    pub fn ok(&mut self, args: &[&str]) {
        assert_eq!(self.run(args), Reply::ok(), "{args:?}");
    }

    pub fn int(&mut self, args: &[&str]) -> i64 {
        match self.run(args) {
            Reply::Integer(n) => n,
            other => panic!("{args:?}: expected an integer, got {other:?}"),
        }
    }

    pub fn bulk(&mut self, args: &[&str]) -> Option<String> {
        match self.run(args) {
            Reply::Bulk(b) => Some(String::from_utf8(b).unwrap()),
            Reply::Null => None,
            other => panic!("{args:?}: expected a bulk, got {other:?}"),
        }
    }

    pub fn error(&mut self, args: &[&str]) -> String {
        match self.run(args) {
            Reply::Error(e) => String::from_utf8(e).unwrap(),
            other => panic!("{args:?}: expected an error, got {other:?}"),
        }
    }

    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.store.get(key.as_bytes()).unwrap()
    }

    pub fn expire_of(&self, key: &str) -> Option<u64> {
        self.store.meta(key.as_bytes()).and_then(|m| m.expire)
    }
}
