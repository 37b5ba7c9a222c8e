/* The services a daemon runs, registered with its node at start. */
#ifndef METAC_SERVICES_H
#define METAC_SERVICES_H

struct node;

int services_register(struct node *n);
int stream_service_register(struct node *n);
int fs_service_register(struct node *n);
int file_service_register(struct node *n);
int block_service_register(struct node *n);
int net_service_register(struct node *n);
int compute_service_register(struct node *n);
int vm_service_register(struct node *n);
int desktop_service_register(struct node *n);
int sound_service_register(struct node *n);
int usb_service_register(struct node *n);
/* The USB/IP session process (svc/usb.c, started by svc/session.c): the
 * device of that description opened, then confined; serves fd. */
_Noreturn void usb_session_run(const char *dir, const char *desc, int fd);
/* The sound session process (svc/sound.c): PulseAudio's pa_name streamed
 * to (is_sink) or from the peer on fd. */
_Noreturn void sound_session_run(const char *dir, const char *pa_name, int is_sink, int fd);

#endif
