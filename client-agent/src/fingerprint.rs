//! What the node is: kernel, OS, CPU, memory, disk, addresses, drivers —
//! Nomad's node attributes (`kernel.name`, `cpu.numcores`, ...) and
//! `NodeResources`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, ToSocketAddrs, UdpSocket};
use std::path::Path;

use proto::model::{
    DriverInfo, NetworkResource, Node, NodeCpuResources, NodeDiskResources, NodeMemoryResources,
    NodeReservedCpuResources, NodeReservedNetworkResources, NodeReservedResources, NodeResources,
    NODE_ATTR_ADDRESS, NODE_ATTR_VERSION, NODE_STATUS_INIT,
};

/// The agent's version, reported as `atoll.version` (and `nomad.version`, which
/// Nomad's node list shows as `Version`).
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// CPU speed assumed when neither `/proc/cpuinfo` nor cpufreq tell it, MHz.
pub const FALLBACK_CPU_MHZ: i64 = 1000;

/// CPU facts from `/proc/cpuinfo`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuInfo {
    /// Number of logical processors.
    pub cores: i64,
    /// Speed of one core in MHz (from the first processor), if known.
    pub mhz: Option<f64>,
    /// Model name, if known.
    pub model: Option<String>,
}

/// Parses `/proc/cpuinfo`.
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "processor" => info.cores += 1,
            "cpu MHz" if info.mhz.is_none() => info.mhz = value.parse().ok(),
            "model name" if info.model.is_none() => info.model = Some(value.to_string()),
            _ => {}
        }
    }
    info
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    meminfo_field(text, "MemTotal")
}

/// A field of `/proc/meminfo` (given in kB) in bytes.
pub fn meminfo_field(text: &str, field: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, rest) = line.split_once(':')?;
        if key.trim() != field {
            return None;
        }
        let mut parts = rest.split_whitespace();
        let n: u64 = parts.next()?.parse().ok()?;
        let scale = match parts.next() {
            Some("kB") | Some("KB") | Some("kb") => 1024,
            None => 1,
            Some(_) => 1024,
        };
        Some(n * scale)
    })
}

/// `(ID, VERSION_ID)` of `/etc/os-release`, unquoted.
pub fn parse_os_release(text: &str) -> (Option<String>, Option<String>) {
    let mut id = None;
    let mut version = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value
            .trim()
            .trim_matches('"')
            .trim_matches('\'')
            .to_string();
        match key.trim() {
            "ID" => id = Some(value),
            "VERSION_ID" => version = Some(value),
            _ => {}
        }
    }
    (id, version)
}

/// Go's name of the CPU architecture (`amd64`, `arm64`, ...), as Nomad
/// reports `cpu.arch`.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// `uname`'s release and machine.
pub fn uname() -> (String, String) {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return (String::new(), String::new());
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&u.release), field(&u.machine))
}

/// The host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Free disk space (for unprivileged users) of the filesystem holding `path`,
/// in MB.
pub fn disk_free_mb(path: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let bytes = st.f_bavail as u128 * st.f_frsize as u128;
    Some((bytes / (1024 * 1024)) as i64)
}

/// The local address this host uses to reach `addr` (`host:port`), found by
/// "connecting" a UDP socket (no packet is sent).
pub fn local_ip_towards(addr: &str) -> Option<IpAddr> {
    let target = addr.to_socket_addrs().ok()?.next()?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let sock = UdpSocket::bind(bind).ok()?;
    sock.connect(target).ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Facts about the host, gathered once.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// Attributes (without drivers).
    pub attributes: BTreeMap<String, String>,
    /// Total compute, MHz.
    pub cpu_total_mhz: i64,
    /// Logical cores.
    pub cores: i64,
    /// Memory, MB.
    pub memory_mb: i64,
    /// Free disk of the data dir, MB.
    pub disk_mb: i64,
    /// The address servers are reached from.
    pub ip: IpAddr,
}

impl HostFacts {
    /// Fingerprints this host. `data_dir` is measured for disk; `servers`
    /// (RPC addresses) tell which local address reaches them.
    pub fn gather(data_dir: &Path, servers: &[String]) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .map(|t| parse_cpuinfo(&t))
            .unwrap_or_default();
        let cores = if cpu.cores > 0 {
            cpu.cores
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get() as i64)
                .unwrap_or(1)
        };
        let mhz = cpu
            .mhz
            .filter(|m| *m > 0.0)
            .map(|m| m.round() as i64)
            .or_else(|| {
                std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .map(|khz| khz / 1000)
                    .filter(|m| *m > 0)
            })
            .unwrap_or(FALLBACK_CPU_MHZ);
        let mem_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| parse_meminfo_total(&t))
            .unwrap_or(0);
        let (os_name, os_version) = std::fs::read_to_string("/etc/os-release")
            .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
            .map(|t| parse_os_release(&t))
            .unwrap_or((None, None));
        let ip = servers
            .iter()
            .find_map(|s| local_ip_towards(s))
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let (release, machine) = uname();
        let total = mhz * cores;
        let mut attributes = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            attributes.insert(k.to_string(), v);
        };
        set("kernel.name", std::env::consts::OS.to_string());
        if !release.is_empty() {
            set("kernel.version", release);
        }
        if !machine.is_empty() {
            set("kernel.arch", machine);
        }
        if let Some(n) = os_name {
            set("os.name", n);
        }
        if let Some(v) = os_version {
            set("os.version", v);
        }
        set("cpu.arch", go_arch().to_string());
        set("cpu.numcores", cores.to_string());
        set("cpu.frequency", mhz.to_string());
        set("cpu.totalcompute", total.to_string());
        if let Some(m) = cpu.model {
            set("cpu.modelname", m);
        }
        set("memory.totalbytes", mem_bytes.to_string());
        set("unique.hostname", hostname());
        set(NODE_ATTR_ADDRESS, ip.to_string());
        set("atoll.version", AGENT_VERSION.to_string());
        set(NODE_ATTR_VERSION, AGENT_VERSION.to_string());
        Self {
            attributes,
            cpu_total_mhz: total,
            cores,
            memory_mb: (mem_bytes / (1024 * 1024)) as i64,
            disk_mb: disk_free_mb(data_dir).unwrap_or(0),
            ip,
        }
    }

    /// Fixed facts for simulated nodes (no host access).
    pub fn simulated(cpu_total_mhz: i64, cores: i64, memory_mb: i64, disk_mb: i64) -> Self {
        let mut attributes = BTreeMap::new();
        for (k, v) in [
            ("kernel.name", "linux"),
            ("os.name", "simulated"),
            ("cpu.arch", go_arch()),
        ] {
            attributes.insert(k.to_string(), v.to_string());
        }
        attributes.insert("cpu.numcores".into(), cores.to_string());
        attributes.insert("cpu.totalcompute".into(), cpu_total_mhz.to_string());
        attributes.insert(
            "memory.totalbytes".into(),
            (memory_mb * 1024 * 1024).to_string(),
        );
        attributes.insert("atoll.version".into(), AGENT_VERSION.to_string());
        attributes.insert(NODE_ATTR_VERSION.into(), AGENT_VERSION.to_string());
        Self {
            attributes,
            cpu_total_mhz,
            cores,
            memory_mb,
            disk_mb,
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

/// Who the node is, from configuration.
#[derive(Debug, Clone, Default)]
pub struct NodeIdentity {
    /// Node id.
    pub id: String,
    /// Secret id.
    pub secret_id: String,
    /// Node name.
    pub name: String,
    /// Datacenter.
    pub datacenter: String,
    /// Node class.
    pub node_class: String,
    /// Node pool.
    pub node_pool: String,
    /// Operator metadata.
    pub meta: BTreeMap<String, String>,
    /// `host:port` of the node's HTTP server, if any.
    pub http_addr: String,
    /// Reserved CPU, MHz.
    pub reserved_cpu: i64,
    /// Reserved memory, MB.
    pub reserved_memory_mb: i64,
    /// Reserved disk, MB.
    pub reserved_disk_mb: i64,
    /// Reserved host ports (`22,80,8000-8100`).
    pub reserved_ports: String,
}

/// The node to register: host facts, drivers and identity together.
pub fn build_node(
    who: &NodeIdentity,
    host: &HostFacts,
    drivers: &BTreeMap<String, DriverInfo>,
) -> Node {
    let mut attributes = host.attributes.clone();
    if !who.name.is_empty() && !attributes.contains_key("unique.hostname") {
        attributes.insert("unique.hostname".into(), who.name.clone());
    }
    for (name, info) in drivers {
        if info.detected && info.healthy {
            attributes.insert(format!("driver.{name}"), "1".into());
        }
        for (k, v) in &info.attributes {
            attributes.insert(format!("driver.{name}.{k}"), v.clone());
        }
    }
    let ip = host.ip.to_string();
    let cidr = if host.ip.is_ipv4() {
        format!("{ip}/32")
    } else {
        format!("{ip}/128")
    };
    Node {
        id: who.id.clone(),
        secret_id: who.secret_id.clone(),
        datacenter: who.datacenter.clone(),
        name: who.name.clone(),
        http_addr: who.http_addr.clone(),
        tls_enabled: false,
        attributes,
        node_resources: NodeResources {
            cpu: NodeCpuResources {
                cpu_shares: host.cpu_total_mhz,
                total_cpu_cores: host.cores,
                reservable_cpu_cores: (0..host.cores.max(0) as u32).collect(),
            },
            memory: NodeMemoryResources {
                memory_mb: host.memory_mb,
            },
            disk: NodeDiskResources {
                disk_mb: host.disk_mb,
            },
            networks: vec![NetworkResource {
                mode: "host".into(),
                device: String::new(),
                cidr,
                ip,
                mbits: 1000,
                ..Default::default()
            }],
            ..Default::default()
        },
        reserved_resources: NodeReservedResources {
            cpu: NodeReservedCpuResources {
                cpu_shares: who.reserved_cpu,
                ..Default::default()
            },
            memory: NodeMemoryResources {
                memory_mb: who.reserved_memory_mb,
            },
            disk: NodeDiskResources {
                disk_mb: who.reserved_disk_mb,
            },
            networks: NodeReservedNetworkResources {
                reserved_host_ports: who.reserved_ports.clone(),
            },
        },
        meta: who.meta.clone(),
        node_class: who.node_class.clone(),
        node_pool: who.node_pool.clone(),
        status: NODE_STATUS_INIT.into(),
        drivers: drivers.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2596.148\ncache size\t: 1024 KB\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2596.148\n";

    #[test]
    fn cpuinfo() {
        let c = parse_cpuinfo(CPUINFO);
        assert_eq!(c.cores, 2);
        assert_eq!(c.mhz, Some(2596.148));
        assert_eq!(c.model.as_deref(), Some("AMD EPYC"));
        // ARM cpuinfo has no MHz line.
        let arm = parse_cpuinfo("processor : 0\nBogoMIPS : 50.00\n\nprocessor : 1\n");
        assert_eq!(arm.cores, 2);
        assert_eq!(arm.mhz, None);
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       24684032 kB\nMemFree:        17985820 kB\n";
        assert_eq!(parse_meminfo_total(text), Some(24_684_032 * 1024));
        assert_eq!(meminfo_field(text, "MemFree"), Some(17_985_820 * 1024));
        assert_eq!(parse_meminfo_total("nothing"), None);
    }

    #[test]
    fn os_release() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n";
        assert_eq!(
            parse_os_release(text),
            (Some("debian".into()), Some("12".into()))
        );
        let ubuntu = "ID=ubuntu\nVERSION_ID='22.04'\n";
        assert_eq!(
            parse_os_release(ubuntu),
            (Some("ubuntu".into()), Some("22.04".into()))
        );
    }

    #[test]
    fn node_from_facts() {
        let host = HostFacts::simulated(4000, 4, 8192, 1000);
        let mut drivers = BTreeMap::new();
        drivers.insert(
            "raw_exec".to_string(),
            DriverInfo {
                detected: true,
                healthy: true,
                ..Default::default()
            },
        );
        drivers.insert(
            "exec".to_string(),
            DriverInfo {
                detected: true,
                healthy: false,
                health_description: "not root".into(),
                ..Default::default()
            },
        );
        let who = NodeIdentity {
            id: "n1".into(),
            secret_id: "s".into(),
            name: "node-1".into(),
            datacenter: "dc2".into(),
            node_pool: "default".into(),
            reserved_cpu: 100,
            ..Default::default()
        };
        let node = build_node(&who, &host, &drivers);
        assert_eq!(
            node.attributes.get("driver.raw_exec").map(String::as_str),
            Some("1")
        );
        assert!(!node.attributes.contains_key("driver.exec"));
        assert_eq!(node.node_resources.cpu.cpu_shares, 4000);
        assert_eq!(node.node_resources.cpu.total_cpu_cores, 4);
        assert_eq!(node.reserved_resources.cpu.cpu_shares, 100);
        assert_eq!(node.datacenter, "dc2");
        assert_eq!(node.node_resources.networks[0].ip, "127.0.0.1");
    }

    #[test]
    fn gather_on_this_host() {
        let dir = std::env::temp_dir();
        let facts = HostFacts::gather(&dir, &[]);
        assert_eq!(facts.attributes["kernel.name"], "linux");
        assert!(facts.cores >= 1);
        assert!(facts.cpu_total_mhz >= facts.cores);
        assert!(facts.memory_mb > 0);
        assert!(facts.attributes.contains_key("unique.hostname"));
        assert_eq!(facts.attributes[NODE_ATTR_ADDRESS], "127.0.0.1");
    }
}
