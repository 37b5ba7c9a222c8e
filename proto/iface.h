/*
 * Interface and method ids: declared once, here. Ids are part of the wire
 * protocol: never renumber, only add.
 */
#ifndef METAC_IFACE_H
#define METAC_IFACE_H

enum iface_id {
	IFACE_NODE = 1,        /* unprivileged bootstrap of a peer */
	IFACE_NODE_ADMIN = 2,  /* bootstrap of the local admin socket */
	IFACE_HOLDER = 3,      /* keeps a binding alive while referenced */
	IFACE_STREAM = 4,
	IFACE_PERSISTABLE = 5,
	IFACE_SERVICE_ADMIN = 6,
	IFACE_FILESYSTEM = 7,
	IFACE_FILE = 8,
	IFACE_BLOCK_DEVICE = 9,
	IFACE_L2_INTERFACE = 10,
	IFACE_KERNEL_INTERFACE = 11,
	IFACE_VM_LAUNCHER = 12,
	IFACE_VM = 13,
	IFACE_COMPUTE_LAUNCHER = 14,
	IFACE_PROCESS = 15,
	IFACE_PROCESS_ENVIRONMENT = 16,
	IFACE_DESKTOP = 17,
	IFACE_SOUND_DEVICE = 18,
	IFACE_MIXER = 19,
	IFACE_USB_DEVICE = 20,
	IFACE_TUNNEL = 21,       /* one end of an L2Interface binding */
	IFACE_KERNEL_NETNS = 22, /* KernelNetworkNamespace */
};

/* Node: what any peer holding nothing can ask. */
enum {
	NODE_RESTORE = 1, /* (bytes secret) -> (cap) */
	NODE_INFO = 2,    /* () -> (string id) */
};

/* NodeAdmin: the local administrator. */
enum {
	NODE_ADMIN_INFO = 1,        /* () -> (string id, string listen...) */
	NODE_ADMIN_RESTORE = 2,     /* (string ref) -> (cap) */
	NODE_ADMIN_REF_LIST = 3,    /* () -> (u64 n, n * ref record) */
	NODE_ADMIN_REF_SHOW = 4,    /* (string ref) -> (ref record) */
	NODE_ADMIN_REF_REVOKE = 5,  /* (string ref) -> () */
	/* (string service, string description, bool persistent,
	 *  bool read_only, i64 expiry) -> (string ref) */
	NODE_ADMIN_EXPORT = 6,
	/* (cap stream, bool direct) -> (bytes token, bytes key, string
	 * addr): where to open a data connection for the stream and the
	 * token it presents. An empty key means the admin socket (always,
	 * unless direct was asked for a remote stream). */
	NODE_ADMIN_ATTACH = 7,
	/* (string service) -> (cap): the service's administration object. */
	NODE_ADMIN_SERVICE = 8,
};

/* Stream: bytes in both directions over a data connection of its own. */
enum {
	/* () -> (bytes token, bytes key, string addr): a one-time token for
	 * a data connection to the node with that key, found at addr (a
	 * hint: a node that reached the stream's node already knows better). */
	STREAM_CONNECT = 1,
	/* (cap stream) -> (cap holder): pipes the two streams until the
	 * holder is dropped. */
	STREAM_BIND_TO = 2,
};

/* Filesystem: a directory tree. */
enum {
	/* () -> (cap stream): each data connection to the stream is a
	 * 9P2000.L session on the tree. */
	FILESYSTEM_V9FS_STREAM = 1,
	/* () -> (cap filesystem): the same tree, refusing every write. */
	FILESYSTEM_READ_ONLY = 2,
};

/* File: one file's bytes (a regular file or a block device). */
enum {
	/* () -> (u64 size, u64 mode, i64 mtime) */
	FILE_STAT = 1,
	/* (u64 offset) -> (cap stream): each data connection to the stream
	 * carries the file's bytes from offset to the end, then ends. */
	FILE_READ_STREAM = 2,
	/* (bool read_only) -> (cap block device): the file as a BlockDevice,
	 * read-only if asked or if the ref was exported so. */
	FILE_OPEN_AS_BLOCK = 3,
};

/* BlockDevice: a disk's bytes, read and written at offsets. */
enum {
	/* () -> (u64 size, bool read_only, u64 min_block) */
	BLOCK_DEVICE_INFO = 1,
	/* () -> (cap stream): each data connection to the stream is an NBD
	 * session (fixed newstyle) on the device, its default export "". */
	BLOCK_DEVICE_NBD_STREAM = 2,
};

/* ServiceAdmin of the fs service: folders mounted here. */
enum {
	/* (string mountpoint, string source, bool persistent, u32 uid,
	 *  u32 gid, u64 timeout_ms) -> (): source is local:PATH or a ref;
	 *  timeout_ms 0 for the default */
	FS_ADMIN_BIND = 1,
	FS_ADMIN_UNBIND = 2, /* (string mountpoint) -> () */
	/* () -> (u64 n, n * (string mountpoint, string kind, bool persistent)) */
	FS_ADMIN_LIST = 3,
};

/* ServiceAdmin of the block service: NBD endpoints the daemon serves. */
enum {
	/* (string listen, string source, bool read_only, bool insecure,
	 *  bool persistent) -> (string where): source is local:PATH or a ref
	 *  to a File; where is the address as listened on */
	BLOCK_ADMIN_SERVE = 1,
	BLOCK_ADMIN_UNSERVE = 2, /* (string listen) -> () */
	/* () -> (u64 n, n * (string where, string source shown, bool
	 *  read_only, bool persistent, u64 sessions)) */
	BLOCK_ADMIN_LIST = 3,
};

/* L2Interface: one end of an Ethernet segment. */
enum {
	/* (u64 vni, u64 rx_index, bytes rx_key, string host_hint,
	 *  u64 mtu_hint, cap peer_tunnel) -> (cap tunnel, u64 rx_index,
	 *  bytes rx_key, string host, u64 port, u64 mtu): the callee starts
	 *  an encrypted tunnel towards the caller, whose end receives with
	 *  (rx_index, rx_key), and answers with its own end. host_hint is
	 *  where the caller may be found (a hint: the callee learns the
	 *  caller's address from its first packet); mtu_hint the largest MTU
	 *  the caller's path allows (0: unknown); mtu the one both use. */
	L2_INTERFACE_SETUP_VXLAN = 1,
	/* (cap other, u64 vni) -> (cap holder): joins this interface and
	 * other into one segment until the holder is dropped. */
	L2_INTERFACE_BIND_TO = 2,
};

/* KernelInterface: an L2Interface that is a network device here. */
enum {
	KERNEL_INTERFACE_GET_NAME = 1, /* () -> (string name) */
	KERNEL_INTERFACE_RENAME = 2,   /* (string name) -> () */
	KERNEL_INTERFACE_DESTROY = 3,  /* () -> () */
};

/* Tunnel: an end of a binding, kept by the other end. */
enum {
	TUNNEL_REKEY = 1,   /* (u64 rx_index, bytes rx_key) -> (): send with these */
	TUNNEL_PING = 2,    /* () -> () */
	TUNNEL_SET_MTU = 3, /* (u64 mtu) -> () */
};

/* KernelNetworkNamespace: the network devices of a node. */
enum {
	/* () -> (u64 n, n * (string name, string kind, u64 mtu, bool up)) */
	KERNEL_NETNS_LIST_INTERFACES = 1,
	/* (string name) -> (cap KernelInterface): a new TAP device */
	KERNEL_NETNS_CREATE_INTERFACE = 2,
};

/* ServiceAdmin of the net service: tunnels bound here. */
enum {
	/* (string local, string remote, bool persistent) -> (): local is
	 * newlocal:DEV or local:DEV; remote a ref to an L2Interface, or
	 * vxlan://HOST[:PORT]/VNI for a plain VTEP. */
	NET_ADMIN_BIND = 1,
	NET_ADMIN_UNBIND = 2, /* (string device) -> () */
	/* () -> (u64 n, n * (string device, string remote, string mode,
	 *  string state, bool persistent, string peer, u64 mtu, 14 * u64
	 *  counters: tx_packets tx_bytes tx_dropped rx_packets rx_bytes
	 *  rx_bad rx_vni rx_index rx_auth rx_replay rx_stranger
	 *  keepalives_tx keepalives_rx rx_dropped), u64 rekeys) */
	NET_ADMIN_LIST = 3,
	NET_ADMIN_NETNS = 4, /* () -> (cap KernelNetworkNamespace) */
};

/* ComputeLauncher: runs processes in containers of their own. */
enum {
	/* (u64 n, n * string arg, u64 n, n * string "K=V",
	 *  u64 n, n * (string target, string source),
	 *  u64 n, n * (string net, string cidr, string gateway),
	 *  u64 memory_mib, u64 uid, u64 gid, bool pty, u64 rows, u64 cols,
	 *  string hostname) -> (cap process, cap environment):
	 * sources are local:PATH (of the launcher's node) or refs to
	 * Filesystems, the one on "/" the root; nets refs to L2Interfaces
	 * (each an interface ethN inside); memory_mib 0 for no limit; cidr
	 * and gateway may be empty. Answered once the process runs. */
	COMPUTE_LAUNCHER_LAUNCH = 1,
};

/* Process: one process of a container. */
enum {
	/* (u64 fd) -> (cap stream): its stdin (0), stdout (1) or stderr (2),
	 * each once; with a pty, 0 is the terminal and the only one. */
	PROCESS_FILE = 1,
	PROCESS_KILL = 2, /* (u64 signal) -> () */
	/* () -> (bool ended, i64 exit code, i64 signal): at once */
	PROCESS_RETURN_CODE = 3,
	/* () -> (i64 exit code, i64 signal): once it has ended; a signal
	 * that killed it is not 0, and then the code is -1 */
	PROCESS_WAIT = 4,
	PROCESS_RESIZE = 5, /* (u64 rows, u64 cols) -> (): its terminal */
};

/* ProcessEnvironment: the namespaces, mounts and networks of a container,
 * which end with its first process. */
enum {
	/* (u64 n, n * string arg, u64 n, n * string "K=V", u64 uid, u64 gid,
	 *  bool pty, u64 rows, u64 cols) -> (cap process): one more process
	 *  inside (for debugging) */
	PROCESS_ENV_LAUNCH_PROCESS = 1,
	PROCESS_ENV_NETWORK = 2, /* (u64 i) -> (cap L2Interface): ethI inside */
};

/* ServiceAdmin of the compute service. */
enum {
	/* () -> (u64 n, n * (u64 id, string hostname, string command,
	 *  u64 pid, string state)) */
	COMPUTE_ADMIN_LIST = 1,
	COMPUTE_ADMIN_LAUNCHER = 2, /* () -> (cap ComputeLauncher) */
	/* (u64 id) -> (cap ProcessEnvironment): a running container's */
	COMPUTE_ADMIN_ENVIRONMENT = 3,
};

/* VMLauncher: starts qemu virtual machines. */
enum {
	/* (u64 memory_mib, u64 vcpus, string kernel, string initrd,
	 *  string cmdline, u64 n, n * (string uri, string driver, bool ro),
	 *  u64 n, n * (string uri, string model), u64 n, n * string serial,
	 *  u64 n, n * string port, string name) -> (cap vm, u64 id): kernel
	 *  and initrd are "" (boot from the
	 *  first drive), local:PATH or refs to Files; drives local:PATH or
	 *  refs to Files (used as BlockDevices), driver "virtio" or "ide";
	 *  nets refs to L2Interfaces, model "virtio" or "e1000"; serial
	 *  ports "" (a new Stream) or a ref to a Stream the port is bound to;
	 *  ports are virtio-serial ports of those names (/dev/vportNpM in the
	 *  guest, its name in /sys/class/virtio-ports), each a new Stream.
	 *  Answered once qemu runs. */
	VM_LAUNCHER_LAUNCH = 1,
};

/* VM: a running virtual machine. */
enum {
	VM_DESTROY = 1,     /* () -> (): qemu is killed */
	VM_SERIAL_PORT = 2, /* (u64 i) -> (cap stream), each once */
	VM_NETWORK = 3,     /* (u64 i) -> (cap L2Interface): its i-th NIC */
	/* () -> (i64 status): once qemu has ended: its exit code, or -N
	 * for death by signal N */
	VM_WAIT = 4,
	/* (u64 i, bool eof) -> (cap stream): the i-th virtio-serial port,
	 * each once; with eof, the end of what is written to it reaches the
	 * guest (its reads end), else the port stays open. */
	VM_PORT = 5,
};

/* ServiceAdmin of the vm service. */
enum {
	/* () -> (u64 n, n * (u64 id, string name, u64 pid, u64 memory_mib,
	 *  string state)) */
	VM_ADMIN_LIST = 1,
	VM_ADMIN_LAUNCHER = 2, /* () -> (cap VMLauncher) */
	VM_ADMIN_GET = 3,      /* (u64 id) -> (cap VM) */
};

/* Desktop: a screen with its keyboard and pointer. */
enum {
	/* () -> (cap stream): each data connection to the stream is an RFB
	 * (VNC) session on the screen, protocol 3.3 to 3.8, security type
	 * None (the transport authenticates); keys and pointer are dropped
	 * if the ref was exported view-only. */
	DESKTOP_VNC_STREAM = 1,
};

/* ServiceAdmin of the desktop service (DesktopAdmin). */
enum {
	/* (u64 display, string xauthority, bool view_only) -> (cap Desktop):
	 * the X11 display :N of this host, reached with the cookie in the
	 * xauthority file ("" for none) */
	DESKTOP_ADMIN_X11 = 1,
};

/* SoundDevice: a sink (takes audio) or a source (gives audio). */
enum {
	/* () -> (string name, bool is_sink, bool is_hardware, string uri) */
	SOUND_DEVICE_INFO = 1,
	/* () -> (cap stream): each data connection carries Opus frames
	 * (audio/opus.h): from a source, or to a sink to be played */
	SOUND_DEVICE_OPUS_STREAM = 2,
	/* (cap other) -> (cap holder): a source's audio plays on a sink
	 * (either may be the callee) until the holder is dropped */
	SOUND_DEVICE_BIND_TO = 3,
};

/* Mixer: the sound service's administration object. */
enum {
	MIXER_CREATE_SINK = 1,   /* (string name) -> (cap): newlocalsink:NAME */
	MIXER_CREATE_SOURCE = 2, /* (string name) -> (cap): newlocalsource:NAME */
	/* () -> (u64 n, n * (string name, bool is_sink, string state)) */
	MIXER_GET_DEVICES = 3,
	MIXER_GET_DEVICE = 4,    /* (string sound uri) -> (cap SoundDevice) */
};

/* UsbDevice: one USB device. */
enum {
	/* () -> (string busid, u64 vendor, u64 product, u64 speed) */
	USB_DEVICE_INFO = 1,
	/* () -> (cap stream): each data connection is a USB/IP session
	 * (OP_REQ_DEVLIST or OP_REQ_IMPORT, then URBs) on the device */
	USB_DEVICE_USBIP_STREAM = 2,
};

/* ServiceAdmin of the usb service (UsbDevices). */
enum {
	/* () -> (u64 n, n * (string busid, u64 vendor, u64 product)) */
	USB_ADMIN_LIST_DEVICES = 1,
	/* (u64 vendor, u64 product) -> (cap UsbDevice): found anew for
	 * each session, so it survives re-enumeration */
	USB_ADMIN_BY_PRODUCT_ID = 2,
};

const char *iface_name(unsigned id);

#endif
