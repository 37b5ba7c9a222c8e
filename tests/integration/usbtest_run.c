/*
 * Runs test cases of the kernel's usbtest driver (drivers/usb/misc/
 * usbtest.c, bound to a Gadget Zero device) through usbfs: what the
 * kernel's own testusb tool does, for the usb_vm.sh guest, which has
 * only busybox. Usage: usbtest_run /dev/bus/usb/BBB/DDD TEST...
 * Prints "TEST n ok" or "TEST n failed: why" for each; exits 1 if any
 * failed (a test the device does not support counts as failed).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/usbdevice_fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* The driver's request (usbtest.c: struct usbtest_param_32). */
struct param {
	uint32_t test_num, iterations, length, vary, sglen;
	int32_t duration_sec, duration_usec;
};

#define USBTEST_REQUEST _IOWR('U', 100, struct param)

int main(int argc, char **argv)
{
	int fd, failed = 0;

	if (argc < 3 || (fd = open(argv[1], O_RDWR)) < 0) {
		fprintf(stderr, "usage: usbtest_run /dev/bus/usb/BBB/DDD TEST...\n");
		return 2;
	}
	for (int i = 2; i < argc; i++) {
		struct param p = { .test_num = (uint32_t)atoi(argv[i]), .iterations = 32,
				   .length = 1024, .vary = 512, .sglen = 8 };
		struct usbdevfs_ioctl io = { .ifno = 0, .ioctl_code = USBTEST_REQUEST, .data = &p };
		if (ioctl(fd, USBDEVFS_IOCTL, &io) < 0) {
			printf("TEST %u failed: %s\n", p.test_num, strerror(errno));
			failed = 1;
		} else {
			printf("TEST %u ok (%d.%06d s)\n", p.test_num, p.duration_sec, p.duration_usec);
		}
		fflush(stdout);
	}
	return failed;
}
