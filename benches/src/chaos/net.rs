//! Network namespaces for the nodes, so links can be cut.
//!
//! Layout (one per series of runs): a bridge `skv<tag>br` in the chaos tool's own namespace
//! with two addresses of a private /24, `.254` (the clients' source address) and `.253`
//! (ZooKeeper's); node `i` runs in the namespace `skv-<tag>-n<i>`, attached to the bridge by
//! a veth pair, as `.i`. Everything is created with `ip` (iproute2) and removed on drop.
//!
//! A cut is a host route in the sender's namespace through a gateway that does not exist
//! (`.250`): packets to the cut address go nowhere, silently, as when a link or a switch port
//! dies. Established connections stall (TCP retransmits into the void); a new connection gets
//! `EHOSTUNREACH` after the kernel's ~3 s of failed neighbour resolution. A cut between two
//! nodes is made on both sides; a cut from ZooKeeper only in the node's namespace (the server's
//! replies never reach it, which ends the session just the same). The clients' path
//! (`.254` ↔ node) is never cut: clients may keep talking to a node on the minority side,
//! which is what makes a stale read possible if the node's fencing were wrong.
//!
//! The kernel here has no `tc` qdiscs or netfilter to rely on, so routes are the tool: they
//! need only `ip` and root.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;

/// The far end of a cut, seen from a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    Node(u32),
    ZooKeeper,
}

pub struct Net {
    tag: String,
    /// This series' owner file (see [`sweep_stale`]).
    owner_file: std::path::PathBuf,
    /// First three octets of the /24.
    prefix: [u8; 3],
    nodes: u32,
    /// Installed cuts: (node whose namespace holds the route, the unreachable peer).
    cuts: BTreeSet<(u32, Peer)>,
}

/// The nonexistent gateway cut routes point at.
const NOWHERE: u8 = 250;
const ZK_HOST: u8 = 253;
const CLIENT_HOST: u8 = 254;

fn ip(args: &[&str]) -> Result<(), String> {
    super::disk::run("ip", args)
}

impl Net {
    /// Why namespaces cannot be used here, if they cannot (not root, no `ip`).
    pub fn unavailable() -> Option<String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("not running as root".into());
        }
        match Command::new("ip").arg("-V").output() {
            Ok(o) if o.status.success() => None,
            Ok(_) | Err(_) => Some("`ip` (iproute2) not found".into()),
        }
    }

    /// Creates the bridge and one namespace per node (1..=nodes). `out` is the series' folder
    /// (its mounts are swept if this tool dies without cleaning up, see [`sweep_stale`]).
    pub fn create(nodes: u32, out: &std::path::Path) -> Result<Net, String> {
        if let Some(why) = Net::unavailable() {
            return Err(format!("network namespaces unavailable: {why}"));
        }
        sweep_stale();
        let pid = std::process::id();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tag = format!("{:04x}", (pid ^ nanos) & 0xffff);
        // 10.213-222.x.0/24, from the tag: distinct per series on one machine.
        let v = u32::from_str_radix(&tag, 16).unwrap_or(0);
        let prefix = [10, 213 + (v % 10) as u8, (v / 10 % 250) as u8];
        let owner_file = owners_dir().join(&tag);
        std::fs::create_dir_all(owners_dir())
            .and_then(|()| {
                std::fs::write(
                    &owner_file,
                    format!("{}\n{}\n", std::process::id(), out.display()),
                )
            })
            .map_err(|e| format!("{}: {e}", owner_file.display()))?;
        let net = Net {
            tag,
            owner_file,
            prefix,
            nodes,
            cuts: BTreeSet::new(),
        };
        net.build().map(|()| net)
    }

    fn build(&self) -> Result<(), String> {
        let br = self.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.host(CLIENT_HOST)),
            "dev",
            &br,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.host(ZK_HOST)),
            "dev",
            &br,
        ])?;
        ip(&["link", "set", &br, "up"])?;
        for i in 1..=self.nodes {
            let ns = self.netns(i);
            let (host_end, node_end) = (
                format!("skv{}h{i}", self.tag),
                format!("skv{}p{i}", self.tag),
            );
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", &node_end,
            ])?;
            ip(&["link", "set", &node_end, "netns", &ns])?;
            ip(&["link", "set", &host_end, "master", &br])?;
            ip(&["link", "set", &host_end, "up"])?;
            ip(&["-n", &ns, "link", "set", &node_end, "name", "eth0"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", self.node_ip(i)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    fn bridge(&self) -> String {
        format!("skv{}br", self.tag)
    }

    fn host(&self, last: u8) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, last)
    }

    /// The namespace node `i` runs in.
    pub fn netns(&self, i: u32) -> String {
        format!("skv-{}-n{i}", self.tag)
    }

    pub fn node_ip(&self, i: u32) -> Ipv4Addr {
        self.host(i as u8)
    }

    /// The address ZooKeeper listens on.
    pub fn zk_ip(&self) -> Ipv4Addr {
        self.host(ZK_HOST)
    }

    fn peer_ip(&self, p: Peer) -> Ipv4Addr {
        match p {
            Peer::Node(j) => self.node_ip(j),
            Peer::ZooKeeper => self.zk_ip(),
        }
    }

    fn route(&self, verb: &str, from: u32, to: Peer) -> Result<(), String> {
        ip(&[
            "-n",
            &self.netns(from),
            "route",
            verb,
            &format!("{}/32", self.peer_ip(to)),
            "via",
            &self.host(NOWHERE).to_string(),
        ])
    }

    fn cut_one_way(&mut self, from: u32, to: Peer) -> Result<(), String> {
        if self.cuts.contains(&(from, to)) {
            return Ok(());
        }
        self.route("add", from, to)?;
        self.cuts.insert((from, to));
        Ok(())
    }

    /// Cuts node `i` from `peer` (both directions between two nodes).
    pub fn cut(&mut self, i: u32, peer: Peer) -> Result<(), String> {
        self.cut_one_way(i, peer)?;
        if let Peer::Node(j) = peer {
            self.cut_one_way(j, Peer::Node(i))?;
        }
        Ok(())
    }

    /// Cuts node `i` from every other node, and from ZooKeeper too when `zk`.
    pub fn isolate(&mut self, i: u32, zk: bool) -> Result<(), String> {
        for j in (1..=self.nodes).filter(|&j| j != i) {
            self.cut(i, Peer::Node(j))?;
        }
        if zk {
            self.cut(i, Peer::ZooKeeper)?;
        }
        Ok(())
    }

    /// Removes every cut. Returns the first error but tries them all.
    pub fn heal(&mut self) -> Result<(), String> {
        let mut first = Ok(());
        for (from, to) in std::mem::take(&mut self.cuts) {
            if let Err(e) = self.route("del", from, to)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    /// Records a process of the series (ZooKeeper) to kill if this tool dies without
    /// cleaning up.
    pub fn note_process(&self, pid: u32) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.owner_file)
        {
            use std::io::Write;
            let _ = writeln!(f, "pid {pid}");
        }
    }

    /// The installed cuts, e.g. `1->2 2->1 1->zk`.
    pub fn describe_cuts(&self) -> String {
        self.cuts
            .iter()
            .map(|(f, t)| match t {
                Peer::Node(j) => format!("{f}->{j}"),
                Peer::ZooKeeper => format!("{f}->zk"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        remove_series(&self.tag);
        let _ = std::fs::remove_file(&self.owner_file);
    }
}

/// Where each live series records its owner: `<tag>` = owner pid, series folder, then
/// `pid <n>` lines for processes to kill with it.
fn owners_dir() -> std::path::PathBuf {
    std::env::temp_dir().join("simplekv-chaos-owners")
}

/// Deletes the namespaces and the bridge of series `tag`.
fn remove_series(tag: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        let prefix = format!("skv-{tag}-n");
        for name in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&prefix))
        {
            // Deleting a namespace destroys its veth end, and with it the pair.
            let _ = ip(&["netns", "del", name]);
        }
    }
    // The bridge, and any veth end that outlived its namespace.
    if let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() {
        let prefix = format!("skv{tag}");
        for name in String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let name = l.split(": ").nth(1)?;
                Some(name.split('@').next().unwrap_or(name).to_string())
            })
        {
            if name.starts_with(&prefix) {
                let _ = ip(&["link", "del", &name]);
            }
        }
    }
}

/// Removes what a series whose tool was killed (SIGKILL: no chance to clean up) left behind:
/// its processes, namespaces, bridge and the tmpfs mounts under its folder. Nodes die with the
/// tool by themselves (`PR_SET_PDEATHSIG`).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(owners_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let mut lines = text.lines();
        let owner: i32 = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        // SAFETY: signal 0 only checks that the process exists.
        if owner > 0 && unsafe { libc::kill(owner, 0) } == 0 {
            continue;
        }
        let out = lines.next().unwrap_or("").to_string();
        for l in lines {
            if let Some(pid) = l.strip_prefix("pid ").and_then(|p| p.parse::<i32>().ok()) {
                // SAFETY: a process this series started; it may be gone already.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        if !out.is_empty()
            && let Ok(mounts) = std::fs::read_to_string("/proc/mounts")
        {
            for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
                if m.starts_with(&out) {
                    let _ = Command::new("umount").args(["-l", m]).status();
                }
            }
        }
        remove_series(&e.file_name().to_string_lossy());
        let _ = std::fs::remove_file(e.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpStream;
    use std::time::Duration;

    /// A listener in node 2's namespace; node 1 and the clients' side reach it until node 1 is
    /// cut from node 2, then only the clients' side does; healing restores the link.
    #[test]
    fn cuts_block_node_to_node_traffic_only() {
        if let Some(why) = Net::unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut net = Net::create(2, tmp.path()).expect("create namespaces");
        let port = 7399;
        let mut server = Command::new("ip")
            .args(["netns", "exec", &net.netns(2), "python3", "-c"])
            .arg(format!(
                "import socket\nl=socket.socket()\nl.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\nl.bind(('0.0.0.0',{port}))\nl.listen(16)\nl.settimeout(30)\nwhile True:\n  c,_=l.accept(); c.sendall(b'hi'); c.close()\n"
            ))
            .spawn()
            .expect("python3 listener");
        let target = format!("{}:{port}", net.node_ip(2));
        let from_node1 = |net: &Net| {
            Command::new("ip")
                .args(["netns", "exec", &net.netns(1), "python3", "-c"])
                .arg(format!(
                    "import socket,sys\ntry:\n  s=socket.create_connection(('{}',{port}),timeout=1); sys.exit(0 if s.recv(2)==b'hi' else 1)\nexcept OSError: sys.exit(3)\n",
                    net.node_ip(2)
                ))
                .status()
                .map(|s| s.code())
                .expect("python3 client")
        };
        let from_clients = || -> bool {
            let Ok(mut s) =
                TcpStream::connect_timeout(&target.parse().expect("addr"), Duration::from_secs(1))
            else {
                return false;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let mut b = [0u8; 2];
            s.read_exact(&mut b).is_ok() && &b == b"hi"
        };
        // The listener needs a moment to start.
        let mut up = false;
        for _ in 0..50 {
            if from_clients() {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(up, "listener in node 2's namespace not reachable");
        assert_eq!(from_node1(&net), Some(0));
        net.cut(1, Peer::Node(2)).expect("cut");
        assert_eq!(net.describe_cuts(), "1->2 2->1");
        assert_eq!(from_node1(&net), Some(3), "node 1 still reaches node 2");
        assert!(from_clients(), "the clients' path must stay up");
        net.heal().expect("heal");
        assert_eq!(from_node1(&net), Some(0));
        let _ = server.kill();
        let _ = server.wait();
    }
}
