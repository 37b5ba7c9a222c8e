/*
 * The static binary loads no shared objects. sqlite calls dlopen() only
 * for run-time extensions and libfuse only for the modules of its
 * high-level API, neither of which metac uses, yet the references make
 * the static link warn that dlopen needs glibc's shared libraries at run
 * time. The Makefile links copies of libsqlite3.a and libfuse3.a whose
 * dlopen family is renamed to these stubs, which fail cleanly.
 *
 * Likewise Debian's libusb-1.0.a calls libudev (device discovery and
 * hotplug), which has no static archive. metac turns discovery off
 * (LIBUSB_OPTION_NO_DEVICE_DISCOVERY) and opens devices it found in sysfs
 * by their usbfs nodes, so libusb never calls these; they fail cleanly if
 * it ever did.
 */
#ifdef METAC_STATIC
#include <stddef.h>

void *metac_nodl_dlopen(const char *file, int mode);
void *metac_nodl_dlsym(void *handle, const char *name);
int metac_nodl_dlclose(void *handle);
char *metac_nodl_dlerror(void);

void *metac_nodl_dlopen(const char *file, int mode)
{
	return NULL;
}

void *metac_nodl_dlsym(void *handle, const char *name)
{
	return NULL;
}

int metac_nodl_dlclose(void *handle)
{
	return -1;
}

char *metac_nodl_dlerror(void)
{
	return (char *)"metac is statically linked and loads no shared objects";
}

struct udev;
struct udev *udev_new(void);
void *udev_unref(void *u);
void *udev_device_new_from_syspath(void *u, const char *p);
void *udev_device_unref(void *d);
const char *udev_device_get_action(void *d);
const char *udev_device_get_devnode(void *d);
const char *udev_device_get_sysname(void *d);
void *udev_enumerate_new(void *u);
int udev_enumerate_add_match_property(void *e, const char *p, const char *v);
int udev_enumerate_add_match_subsystem(void *e, const char *s);
void *udev_enumerate_get_list_entry(void *e);
int udev_enumerate_scan_devices(void *e);
void *udev_enumerate_unref(void *e);
const char *udev_list_entry_get_name(void *l);
void *udev_list_entry_get_next(void *l);
int udev_monitor_enable_receiving(void *m);
int udev_monitor_filter_add_match_subsystem_devtype(void *m, const char *s, const char *t);
int udev_monitor_get_fd(void *m);
void *udev_monitor_new_from_netlink(void *u, const char *name);
void *udev_monitor_receive_device(void *m);
void *udev_monitor_unref(void *m);

struct udev *udev_new(void) { return NULL; }
void *udev_unref(void *u) { return NULL; }
void *udev_device_new_from_syspath(void *u, const char *p) { return NULL; }
void *udev_device_unref(void *d) { return NULL; }
const char *udev_device_get_action(void *d) { return NULL; }
const char *udev_device_get_devnode(void *d) { return NULL; }
const char *udev_device_get_sysname(void *d) { return NULL; }
void *udev_enumerate_new(void *u) { return NULL; }
int udev_enumerate_add_match_property(void *e, const char *p, const char *v) { return -1; }
int udev_enumerate_add_match_subsystem(void *e, const char *s) { return -1; }
void *udev_enumerate_get_list_entry(void *e) { return NULL; }
int udev_enumerate_scan_devices(void *e) { return -1; }
void *udev_enumerate_unref(void *e) { return NULL; }
const char *udev_list_entry_get_name(void *l) { return NULL; }
void *udev_list_entry_get_next(void *l) { return NULL; }
int udev_monitor_enable_receiving(void *m) { return -1; }
int udev_monitor_filter_add_match_subsystem_devtype(void *m, const char *s, const char *t) { return -1; }
int udev_monitor_get_fd(void *m) { return -1; }
void *udev_monitor_new_from_netlink(void *u, const char *name) { return NULL; }
void *udev_monitor_receive_device(void *m) { return NULL; }
void *udev_monitor_unref(void *m) { return NULL; }
#endif
