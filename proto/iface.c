/* Names of the interfaces in iface.h, for messages. */
#include "proto/iface.h"

const char *iface_name(unsigned id)
{
	static const char *const names[] = {
		[IFACE_NODE] = "Node",
		[IFACE_NODE_ADMIN] = "NodeAdmin",
		[IFACE_HOLDER] = "Holder",
		[IFACE_STREAM] = "Stream",
		[IFACE_PERSISTABLE] = "Persistable",
		[IFACE_SERVICE_ADMIN] = "ServiceAdmin",
		[IFACE_FILESYSTEM] = "Filesystem",
		[IFACE_FILE] = "File",
		[IFACE_BLOCK_DEVICE] = "BlockDevice",
		[IFACE_L2_INTERFACE] = "L2Interface",
		[IFACE_KERNEL_INTERFACE] = "KernelInterface",
		[IFACE_VM_LAUNCHER] = "VMLauncher",
		[IFACE_VM] = "VM",
		[IFACE_COMPUTE_LAUNCHER] = "ComputeLauncher",
		[IFACE_PROCESS] = "Process",
		[IFACE_PROCESS_ENVIRONMENT] = "ProcessEnvironment",
		[IFACE_DESKTOP] = "Desktop",
		[IFACE_SOUND_DEVICE] = "SoundDevice",
		[IFACE_MIXER] = "Mixer",
		[IFACE_USB_DEVICE] = "UsbDevice",
		[IFACE_TUNNEL] = "Tunnel",
		[IFACE_KERNEL_NETNS] = "KernelNetworkNamespace",
	};
	if (id < sizeof(names) / sizeof(names[0]) && names[id])
		return names[id];
	return "(unknown)";
}
