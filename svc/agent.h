/* The computevm guest agent and its initramfs (svc/agent.c). */
#ifndef METAC_SVC_AGENT_H
#define METAC_SVC_AGENT_H

#include <stddef.h>

/* This binary as pid 1 of a computevm VM: never returns. */
int agent_main(void) __attribute__((noreturn));
/* The kernel computevm boots: $METAC_VM_KERNEL, else the newest
 * /boot/vmlinuz-*cloud-amd64 (Debian's linux-image-cloud-amd64). */
int agent_kernel(char *kver, size_t n);
/* The binary that becomes /init: $METAC_AGENT, else this one. It must
 * be static (a sanitizer build is not: tests point METAC_AGENT at the
 * default build). */
const char *agent_binary(void);
/* Writes an initramfs for kernel kver: this binary as /init and the
 * modules the agent loads (with what they need, from modules.dep). */
int agent_initrd_build(const char *kver, const char *out, char *err, size_t errsz);

#endif
