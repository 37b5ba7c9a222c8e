/* Finding a mount in /proc/self/mountinfo. */
#ifndef METAC_MOUNTINFO_H
#define METAC_MOUNTINFO_H

struct mountinfo_ent {
	unsigned id;       /* the mount's ID: unique while it is mounted */
	unsigned maj, min; /* its device */
};

/* The topmost mount on mountpoint of type fstype, read from fd (an open
 * /proc/self/mountinfo, read again from its start each call, so that one
 * descriptor opened early serves later): 0, or -ENOENT. */
int mountinfo_find(int fd, const char *mountpoint, const char *fstype,
		   struct mountinfo_ent *out);

#endif
