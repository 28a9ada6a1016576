#!/usr/bin/env python3
"""Regenerates defs.rs from a running Redis 7.0 server's COMMAND INFO and COMMAND DOCS.

    redis-server --port 17391 --save '' &
    python3 net/src/cmd/gen_defs.py 17391 net/src/cmd/defs.rs

To add a command, add its name to KEYED, MULTI or SERVER below and rerun.
"""
import sys
import socket

class R:
    def __init__(s, port):
        s.s = socket.create_connection(('127.0.0.1', port)); s.f = s.s.makefile('rb')
    def cmd(s, *args):
        out = b'*%d\r\n' % len(args)
        for a in args:
            if isinstance(a, str): a = a.encode()
            out += b'$%d\r\n%s\r\n' % (len(a), a)
        s.s.sendall(out); return s.read()
    def read(s):
        line = s.f.readline()[:-2]; t, rest = line[:1], line[1:]
        if t == b'+': return ('simple', rest.decode())
        if t == b'-': return ('error', rest.decode())
        if t == b':': return int(rest)
        if t == b'$':
            n = int(rest)
            if n < 0: return None
            d = s.f.read(n + 2)[:-2]; return d.decode()
        if t == b'*':
            n = int(rest)
            if n < 0: return None
            return [s.read() for _ in range(n)]
        raise Exception(line)

port = int(sys.argv[1]); out = sys.argv[2]
KEYED = "get set setnx setex psetex getset getdel getex expire pexpire expireat pexpireat ttl pttl expiretime pexpiretime persist type incr decr incrby decrby incrbyfloat append strlen getrange setrange substr setbit getbit bitcount bitpos bitfield bitfield_ro".split()
MULTI = {"mget": "MGet", "mset": "MSet", "msetnx": "MSetNx", "del": "Del", "unlink": "Unlink", "exists": "Exists", "touch": "Touch"}
SERVER = "multi exec discard watch unwatch ping echo quit hello auth select dbsize scan keys randomkey flushdb flushall info config command client role time shutdown bgrewriteaof wait cluster readonly readwrite lastsave save bgsave memory object rename renamenx copy reset bitop lcs slowlog monitor latency publish subscribe unsubscribe psubscribe punsubscribe pubsub spublish ssubscribe sunsubscribe".split()
# The subcommands simplekv implements, per container (COMMAND INFO/DOCS list only these;
# the others answer "unknown subcommand" or an error saying why they are not supported).
SUBS = {
    "client": "getname help id info kill list no-evict pause reply setname unpause",
    "cluster": "countkeysinslot getkeysinslot help info keyslot myid nodes shards slots",
    "command": "count docs getkeys getkeysandflags help info list",
    "config": "get help resetstat set",
    "latency": "help histogram latest history reset graph doctor",
    "memory": "help purge usage",
    "object": "encoding freq help idletime refcount",
    "pubsub": "channels help numpat numsub shardchannels shardnumsub",
    "slowlog": "get help len reset",
}
r = R(port)

def s(x):
    if x is None: return "None"
    o = '"'
    for ch in x:
        if ch == '"': o += '\\"'
        elif ch == '\\': o += '\\\\'
        elif ch == '\n': o += '\\n'
        elif ord(ch) < 32 or ord(ch) > 126: raise Exception(repr(x))
        else: o += ch
    return o + '"'
def so(x): return "None" if x is None else "Some(%s)" % s(x)
def simples(l): return [v[1] for v in l]
def strlist(l): return "&[" + ", ".join(s(v) for v in l) + "]"
def kv(flat): return {flat[i]: flat[i+1] for i in range(0, len(flat), 2)}

def keyspec(f):
    m = kv(f)
    bs = kv(m["begin_search"]); fk = kv(m["find_keys"])
    bspec = kv(bs["spec"]) if bs["spec"] else {}
    fspec = kv(fk["spec"]) if fk["spec"] else {}
    if bs["type"] == "index": b = "BeginSearch::Index(%d)" % bspec["index"]
    elif bs["type"] == "keyword": b = "BeginSearch::Keyword { keyword: %s, startfrom: %d }" % (s(bspec["keyword"]), bspec["startfrom"])
    else: b = "BeginSearch::Unknown"
    if fk["type"] == "range": k = "FindKeys::Range { lastkey: %d, keystep: %d, limit: %d }" % (fspec["lastkey"], fspec["keystep"], fspec["limit"])
    elif fk["type"] == "keynum": k = "FindKeys::Keynum { keynumidx: %d, firstkey: %d, keystep: %d }" % (fspec["keynumidx"], fspec["firstkey"], fspec["keystep"])
    else: k = "FindKeys::Unknown"
    assert set(m) <= {"notes", "flags", "begin_search", "find_keys"}, m
    return "KeySpec { notes: %s, flags: %s, begin_search: %s, find_keys: %s }" % (so(m.get("notes")), strlist(simples(m["flags"])), b, k)

def arg(a, ind):
    m = kv(a)
    assert set(m) <= {"name", "type", "key_spec_index", "token", "since", "deprecated_since", "flags", "arguments"}, m
    fl = simples(m.get("flags", []))
    assert set(fl) <= {"optional", "multiple", "multiple_token"}, fl
    parts = ["name: %s" % s(m["name"]), "typ: %s" % s(m["type"])]
    if "key_spec_index" in m: parts.append("key_spec_index: Some(%d)" % m["key_spec_index"])
    if "token" in m: parts.append("token: Some(%s)" % s(m["token"]))
    if "since" in m: parts.append("since: Some(%s)" % s(m["since"]))
    if "deprecated_since" in m: parts.append("deprecated_since: Some(%s)" % s(m["deprecated_since"]))
    for f in fl: parts.append("%s: true" % f)
    if "arguments" in m: parts.append("sub: " + args(m["arguments"], ind + 4))
    return "ArgDoc { " + ", ".join(parts) + ", ..ArgDoc::DEFAULT }"

def args(l, ind):
    if not l: return "&[]"
    pad = " " * (ind + 4)
    return "&[\n" + "".join(pad + arg(a, ind + 4) + ",\n" for a in l) + " " * ind + "]"

def spec(info, docs, ind, kind):
    name, arity, flags, first, last, step, acl, tips, kspecs, subs = info
    d = kv(docs)
    assert set(d) <= {"summary", "since", "group", "complexity", "doc_flags", "deprecated_since", "replaced_by", "history", "arguments", "subcommands"}, d.keys()
    pad = " " * (ind + 4)
    L = []
    L.append('name: %s' % s(name))
    L.append('arity: %d' % arity)
    L.append('flags: %s' % strlist(simples(flags)))
    L.append('first_key: %d' % first); L.append('last_key: %d' % last); L.append('step: %d' % step)
    L.append('group: %s' % s(d["group"]))
    L.append('since: %s' % s(d.get("since", "")))
    L.append('summary: %s' % s(d.get("summary", "")))
    L.append('complexity: %s' % s(d.get("complexity", "")))
    L.append('arguments: %s' % args(d.get("arguments", []), ind + 4))
    L.append('kind: %s' % kind)
    L.append('acl_categories: %s' % strlist(simples(acl)))
    if tips: L.append('tips: %s' % strlist(tips))
    if kspecs: L.append('key_specs: &[\n' + "".join(pad + "    " + keyspec(k) + ",\n" for k in kspecs) + pad + "]")
    if "doc_flags" in d: L.append('doc_flags: %s' % strlist(simples(d["doc_flags"])))
    if "deprecated_since" in d: L.append('deprecated_since: Some(%s)' % s(d["deprecated_since"]))
    if "replaced_by" in d: L.append('replaced_by: Some(%s)' % s(d["replaced_by"]))
    if "history" in d: L.append('history: &[' + ", ".join("(%s, %s)" % (s(h[0]), s(h[1])) for h in d["history"]) + ']')
    if subs:
        sd = kv(d["subcommands"])
        keep = SUBS[name].split()
        subs = sorted((x for x in subs if x[0].split("|")[1] in keep), key=lambda x: x[0])
        assert [x[0].split("|")[1] for x in subs] == sorted(keep), (name, keep)
        sd = {k: v for k, v in sd.items() if k.split("|")[1] in keep}
        assert sorted(sd) == [x[0] for x in subs]
        L.append('subcommands: &[\n' + "".join(pad + "    " + spec(x, sd[x[0]], ind + 8, "Kind::Server") + ",\n" for x in subs) + pad + "]")
    else:
        assert "subcommands" not in d
    return "CommandSpec {\n" + "".join(pad + l + ",\n" for l in L) + pad + "..CommandSpec::DEFAULT\n" + " " * ind + "}"

names = sorted(KEYED + list(MULTI) + SERVER)
infos = r.cmd("command", "info", *names)
docs = r.cmd("command", "docs", *names)
dd = kv(docs)
body = []
for n, info in zip(names, infos):
    assert info and info[0] == n, n
    kind = "Kind::Keyed" if n in KEYED else ("Kind::Multi(MultiKind::%s)" % MULTI[n] if n in MULTI else "Kind::Server")
    body.append("    " + spec(info, dd[n], 4, kind) + ",\n")
ver = r.cmd("info", "server").split("redis_version:")[1].split()[0]
with open(out, "w") as f:
    f.write("//! The command table's data, generated from what Redis %s itself reports for these\n" % ver)
    f.write("//! commands (`COMMAND INFO` and `COMMAND DOCS`), so that clients reading it (redis-cli's\n")
    f.write("//! hints, cluster clients' key positions) see exactly what a Redis 7.0 server would show.\n")
    f.write("//! Sorted by name: `lookup` binary-searches it. Regenerate with gen_defs.py rather than edit.\n")
    f.write("use super::table::{ArgDoc, BeginSearch, CommandSpec, FindKeys, KeySpec, Kind, MultiKind};\n\n")
    f.write("#[rustfmt::skip]\npub static COMMANDS: &[CommandSpec] = &[\n" + "".join(body) + "];\n")
print(len(names), "commands")
