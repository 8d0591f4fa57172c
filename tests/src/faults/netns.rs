//! Hosts in network namespaces, for faults that cut the network rather than
//! kill a process.
//!
//! A [`Net`] is one test's network: a hub namespace holding a Linux bridge,
//! one namespace per host with a veth pair to the bridge, and a veth from
//! the test's own (root) namespace to the bridge, so the test process (the
//! workload, the checker) reaches every host. Addresses come from
//! 198.18.0.0/15 only: the test side is `198.18.<k>.1`, host `i` is
//! `198.18.<k>.<10 + i>`, with `<k>` chosen per test process so that two
//! runs on one machine do not collide. Every port of every host is free (a
//! namespace has its own port space), so hosts use fixed ports.
//!
//! Faults:
//! - [`Net::link`]: the host's port on the bridge down (or up again): the
//!   host is cut off from everyone, the test process included;
//! - [`Net::block`]: iptables in the host's namespace drops everything to
//!   and from the given peers: a partition that the test process, which
//!   stands for users on both sides, still sees across;
//! - [`Net::heal`]: flush those rules.
//!
//! Everything is removed when the [`Net`] is dropped (also when a test
//! fails); namespaces left behind by a test process that died are removed
//! by the next [`Net::create`]. Creating namespaces needs root.

use std::process::Command;

use anyhow::{bail, ensure, Context};

/// Prefix of every namespace a test creates here.
const PREFIX: &str = "atoll-t";

/// Run `ip` (or another command) and fail with its stderr.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {} {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run("ip", args)
}

/// One host of a [`Net`].
#[derive(Debug, Clone)]
pub struct Host {
    /// Its namespace.
    pub ns: String,
    /// Its address.
    pub ip: String,
    /// Its port on the bridge (an interface of the hub namespace).
    port: String,
}

/// A test's network of namespaces (see the module docs).
#[derive(Debug)]
pub struct Net {
    hub: String,
    /// `198.18.<k>`.
    prefix: String,
    hosts: Vec<Host>,
}

impl Net {
    /// Whether this process may create namespaces: root, `ip` and
    /// `iptables` present. The error says what is missing.
    pub fn check() -> anyhow::Result<()> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        ensure!(
            euid == 0,
            "network-namespace fault tests need root (ip netns, iptables); running as uid {euid}"
        );
        ip(&["-V"]).context("iproute2's `ip` is needed for network namespaces")?;
        run("iptables", &["-V"])
            .context("`iptables` is needed for partitions (apt-get install iptables)")?;
        Ok(())
    }

    /// A new network with no hosts yet.
    pub fn create() -> anyhow::Result<Self> {
        Self::check()?;
        remove_stale();
        let pid = std::process::id();
        let hub = format!("{PREFIX}{pid}-hub");
        let root_if = format!("at{pid}");
        // A /24 of 198.18.0.0/15 that no interface of this namespace uses.
        let used = ip(&["-o", "-4", "addr", "show"])?;
        let k = (0..250u32)
            .map(|d| 1 + (pid + d) % 250)
            .find(|k| !used.contains(&format!(" 198.18.{k}.")))
            .context("no free /24 left in 198.18.0.0/16")?;
        let net = Self {
            hub,
            prefix: format!("198.18.{k}"),
            hosts: Vec::new(),
        };
        ip(&["netns", "add", &net.hub])?;
        ip(&["-n", &net.hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &net.hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net.hub, "link", "set", "br0", "up"])?;
        ip(&[
            "link", "add", &root_if, "type", "veth", "peer", "name", "uplink", "netns", &net.hub,
        ])?;
        ip(&["-n", &net.hub, "link", "set", "uplink", "master", "br0"])?;
        ip(&["-n", &net.hub, "link", "set", "uplink", "up"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", net.prefix),
            "dev",
            &root_if,
        ])?;
        ip(&["link", "set", &root_if, "up"])?;
        Ok(net)
    }

    /// The test process's own address on this network.
    pub fn test_ip(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// Add a host (its namespace, its link to the bridge, its address);
    /// its index.
    pub fn add_host(&mut self) -> anyhow::Result<usize> {
        let i = self.hosts.len();
        ensure!(i < 240, "a test network holds at most 240 hosts");
        let ns = format!("{}-h{i}", self.hub.trim_end_matches("-hub"));
        let port = format!("p{i}");
        let host_ip = format!("{}.{}", self.prefix, 10 + i);
        ip(&["netns", "add", &ns])?;
        // Listed before the links are made, so a failure below still
        // removes the namespace.
        self.hosts.push(Host {
            ns: ns.clone(),
            ip: host_ip.clone(),
            port: port.clone(),
        });
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", &self.hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ])?;
        ip(&["-n", &self.hub, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &self.hub, "link", "set", &port, "up"])?;
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        Ok(i)
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// A command that runs `program` in host `i`'s namespace (`ip netns
    /// exec` execs it, so the child's pid is the program's: signals reach
    /// it directly).
    pub fn command(&self, i: usize, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i].ns]).arg(program);
        cmd
    }

    /// Host `i`'s link to the bridge up or down.
    pub fn link(&self, i: usize, up: bool) -> anyhow::Result<()> {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.hub, "link", "set", &self.hosts[i].port, state])?;
        Ok(())
    }

    /// Drop everything between host `i` and each of `peers` (addresses),
    /// in both directions, with iptables in host `i`'s namespace.
    pub fn block(&self, i: usize, peers: &[String]) -> anyhow::Result<()> {
        let ns = &self.hosts[i].ns;
        for p in peers {
            run(
                "ip",
                &[
                    "netns", "exec", ns, "iptables", "-w", "-A", "INPUT", "-s", p, "-j", "DROP",
                ],
            )?;
            run(
                "ip",
                &[
                    "netns", "exec", ns, "iptables", "-w", "-A", "OUTPUT", "-d", p, "-j", "DROP",
                ],
            )?;
        }
        Ok(())
    }

    /// Remove every rule [`Net::block`] added in host `i`'s namespace.
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        let ns = &self.hosts[i].ns;
        run("ip", &["netns", "exec", ns, "iptables", "-w", "-F"])?;
        Ok(())
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of each veth pair, and with
        // it the other end.
        for h in &self.hosts {
            let _ = ip(&["netns", "del", &h.ns]);
        }
        let _ = ip(&["netns", "del", &self.hub]);
    }
}

/// Remove the namespaces of earlier test processes that are gone.
fn remove_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = ip(&["netns", "del", name]);
        }
    }
}
