/* Registers every service of this build with the node. */
#include "svc/services.h"

int services_register(struct node *n)
{
	int r;
	if ((r = stream_service_register(n)) < 0 ||
	    (r = fs_service_register(n)) < 0 ||
	    (r = file_service_register(n)) < 0 ||
	    (r = block_service_register(n)) < 0 ||
	    (r = net_service_register(n)) < 0 ||
	    (r = compute_service_register(n)) < 0 ||
	    (r = vm_service_register(n)) < 0 ||
	    (r = desktop_service_register(n)) < 0 ||
	    (r = sound_service_register(n)) < 0 ||
	    (r = usb_service_register(n)) < 0)
		return r;
	return 0;
}
