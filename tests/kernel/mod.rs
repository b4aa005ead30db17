//! Helpers of the kernel end-to-end test: the privilege check, a throwaway topology of
//! network namespaces (one "node", one per pod), and traffic between them.
//!
//! Every name carries the test process id, so parallel or leftover runs never collide,
//! and [`Topology`] removes everything it made when dropped, also when a test panics.

pub mod artifacts;
mod privileges;
pub mod stream;
pub mod traffic;

use std::{
    ffi::CString,
    fs,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
    process::{Command, Output},
};

const BPFFS: &str = "/sys/fs/bpf";

/// Whether this machine can run the test: root, bpffs, BPF, and the traffic tools (see
/// `privileges`).
pub fn available() -> bool {
    privileges::available("kernel test", &["ip", "nsenter", "ping", "mount"])
}

/// `BPF_MAP_CREATE` of a map without name or BTF.
pub fn create_map(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> std::io::Result<OwnedFd> {
    /// The first fields of `union bpf_attr` for `BPF_MAP_CREATE`; the kernel treats the
    /// rest as zero.
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    let attr = MapCreate { map_type, key_size, value_size, max_entries };
    // SAFETY: `attr` is a valid prefix of bpf_attr and its size is passed with it.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, &attr, size_of::<MapCreate>() as libc::c_uint)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `BPF_OBJ_PIN` of `fd` at `path`, which must be on bpffs.
pub fn pin_object(fd: &OwnedFd, path: &Path) -> std::io::Result<()> {
    /// The fields of `union bpf_attr` for `BPF_OBJ_PIN`.
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const BPF_OBJ_PIN: libc::c_long = 6;
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let attr =
        ObjPin { pathname: c_path.as_ptr() as u64, bpf_fd: fd.as_raw_fd() as u32, file_flags: 0 };
    // SAFETY: `attr` is a valid prefix of bpf_attr whose path points into `c_path`,
    // which outlives the call.
    let rc = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_PIN, &attr, size_of::<ObjPin>() as libc::c_uint)
    };
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// Loads a tc program that passes every packet (`r0 = TC_ACT_OK; exit`), standing in
/// for an older datapath on a link. Built from raw instructions: no compiler needed.
pub fn load_pass_all() -> std::io::Result<OwnedFd> {
    /// The first fields of `union bpf_attr` for `BPF_PROG_LOAD`.
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
    }
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    // mov r0, 0 (TC_ACT_OK); exit. Each instruction: opcode, registers, offset, immediate.
    let insns: [[u8; 8]; 2] = [[0xb7, 0, 0, 0, 0, 0, 0, 0], [0x95, 0, 0, 0, 0, 0, 0, 0]];
    let license = c"GPL";
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
    };
    // SAFETY: `attr` is a valid prefix of bpf_attr; its pointers refer to locals that
    // outlive the call.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &attr, size_of::<ProgLoad>() as libc::c_uint)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Puts `program` on the link pinned at `path` (`BPF_LINK_UPDATE`), as an older version
/// of policyc-node would have left it.
pub fn update_pinned_link(path: &Path, program: &OwnedFd) -> std::io::Result<()> {
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    #[repr(C)]
    struct LinkUpdate {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_UPDATE: libc::c_long = 29;
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let get = ObjGet { pathname: c_path.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    // SAFETY: `get` is a valid prefix of bpf_attr whose path points into `c_path`.
    let link = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &get, size_of::<ObjGet>() as libc::c_uint)
    };
    if link < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: BPF_OBJ_GET returned a new descriptor that nothing else owns.
    let link = unsafe { OwnedFd::from_raw_fd(link as RawFd) };
    let update = LinkUpdate {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: program.as_raw_fd() as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    // SAFETY: `update` is a valid prefix of bpf_attr; both descriptors are open.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_UPDATE,
            &update,
            size_of::<LinkUpdate>() as libc::c_uint,
        )
    };
    if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// Runs a command to completion; a command that cannot start is reported in the output.
pub fn run(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Runs a command that must succeed.
pub fn must(command: &mut Command) -> Output {
    let out = run(command);
    assert!(out.status.success(), "{command:?} failed: {}", text(&out));
    out
}

/// stdout and stderr of a finished command, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A pod: its network namespace and the host-side end of its veth pair in the node.
#[derive(Debug)]
pub struct Pod {
    /// `namespace/pod`, as in the fixture.
    pub endpoint: &'static str,
    pub netns: String,
    pub host_veth: String,
    pub ip: [u8; 4],
}

/// The name [`Topology::pod`] gives the node itself.
pub const NODE: &str = "node";
/// The node's address on the pod network (the bridge's), beside the pods' 198.18.0.x.
pub const NODE_ADDRESS: [u8; 4] = [198, 18, 0, 254];

/// A node namespace with a bridge, and one namespace per pod plugged into it with a
/// veth pair. Dropping it uninstalls policyc and deletes every namespace and pin.
#[derive(Debug)]
pub struct Topology {
    pub node: String,
    /// The node itself as a traffic end: its address on the pod network (as a CNI's
    /// bridge has one), which the node runtime gives the host identity.
    pub node_end: Pod,
    pub pods: Vec<Pod>,
    pub pin_dir: PathBuf,
    pub work_dir: PathBuf,
    node_binary: PathBuf,
}

impl Topology {
    /// Builds the topology; `pods` are (endpoint name, short tag, address), the tag
    /// naming the namespace and the host-side veth.
    pub fn create(pods: &[(&'static str, &str, [u8; 4])], node_binary: &Path) -> Topology {
        let id = std::process::id();
        let work_dir = std::env::temp_dir().join(format!("policyc-e2e-{id}"));
        fs::create_dir_all(&work_dir).expect("creating the test's work directory");
        let node = format!("pcn{id}-node");
        let mut topology = Topology {
            node_end: Pod {
                endpoint: NODE,
                netns: node.clone(),
                host_veth: String::new(),
                ip: NODE_ADDRESS,
            },
            node,
            pods: Vec::new(),
            pin_dir: PathBuf::from(format!("{BPFFS}/policyc-test-{id}")),
            work_dir,
            node_binary: node_binary.to_owned(),
        };
        // From here on, a failure drops `topology`, which removes what was made so far.
        let bridge = format!("pb{id}");
        must(Command::new("ip").args(["netns", "add", &topology.node]));
        topology.ip_node(&["link", "set", "lo", "up"]);
        topology.ip_node(&["link", "add", &bridge, "type", "bridge"]);
        topology.ip_node(&["link", "set", &bridge, "up"]);
        let [a, b, c, d] = NODE_ADDRESS;
        topology.ip_node(&["addr", "add", &format!("{a}.{b}.{c}.{d}/24"), "dev", &bridge]);
        for (endpoint, tag, ip) in pods {
            let pod = Pod {
                endpoint,
                netns: format!("pcn{id}-{tag}"),
                host_veth: format!("p{tag}{id}"),
                ip: *ip,
            };
            assert!(pod.host_veth.len() <= 15, "interface name {} is too long", pod.host_veth);
            must(Command::new("ip").args(["netns", "add", &pod.netns]));
            topology.pods.push(pod);
            let pod = topology.pods.last().expect("just pushed");
            let (veth, netns) = (pod.host_veth.clone(), pod.netns.clone());
            let address = format!("{}.{}.{}.{}/24", ip[0], ip[1], ip[2], ip[3]);
            topology.ip_node(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ]);
            topology.ip_node(&["link", "set", &veth, "master", &bridge, "up"]);
            for args in [
                &["addr", "add", &address, "dev", "eth0"][..],
                &["link", "set", "eth0", "up"],
                &["link", "set", "lo", "up"],
            ] {
                must(Command::new("ip").arg("-n").arg(&netns).args(args));
            }
        }
        topology
    }

    fn ip_node(&self, args: &[&str]) {
        must(Command::new("ip").arg("-n").arg(&self.node).args(args));
    }

    pub fn pod(&self, endpoint: &str) -> &Pod {
        if endpoint == NODE {
            return &self.node_end;
        }
        self.pods
            .iter()
            .find(|p| p.endpoint == endpoint)
            .unwrap_or_else(|| panic!("no pod {endpoint}"))
    }

    /// `policyc-node ARGS --pin-dir <test pins> --state-dir <test state>` inside the node
    /// namespace. `nsenter` enters only the network namespace; `ip netns exec` would also
    /// remount /sys and hide bpffs.
    pub fn policyc_node(&self, args: &[&str]) -> Output {
        run(&mut self.policyc_node_command(args))
    }

    /// The command [`Topology::policyc_node`] runs, to start it in the background.
    pub fn policyc_node_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.node))
            .arg(&self.node_binary)
            .args(args)
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--state-dir")
            .arg(self.work_dir.join("state"))
            .env("RUST_LOG", "info");
        command
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Best effort throughout: cleanup must go on past any failure, and must not
        // panic while a failed test is already unwinding.
        if self.pin_dir.exists() {
            let out = self.policyc_node(&["uninstall"]);
            if !out.status.success() {
                eprintln!("cleanup: policyc-node uninstall failed: {}", text(&out));
            }
        }
        for netns in self.pods.iter().map(|p| &p.netns).chain([&self.node]) {
            let _ = Command::new("ip").args(["netns", "delete", netns]).output();
        }
        let _ = fs::remove_dir_all(&self.pin_dir);
        let _ = fs::remove_dir_all(&self.work_dir);
    }
}

/// Runs `f` on a new thread that has entered the network namespace `/run/netns/<netns>`.
/// Sockets made there stay in that namespace wherever they are used afterwards.
pub fn in_netns<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = fs::File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
        // SAFETY: setns only reads the descriptor, which `file` keeps open; it changes
        // the namespace of this thread alone, a thread made for this purpose.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns into {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
