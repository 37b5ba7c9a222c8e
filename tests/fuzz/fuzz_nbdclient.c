/*
 * libFuzzer target: the NBD client of nbd/client.c reading replies from
 * a server that may say anything (what `metac block copy` hears from a
 * remote node). nbd_client_fuzz_replies() puts four requests in flight
 * (two reads, a block status and a write) and feeds the input as the
 * server's replies; its first byte picks whether structured replies were
 * negotiated. Every reply must be checked against its request: nothing
 * may crash, write outside a read's buffer, loop or leak.
 */
#include <stddef.h>
#include <stdint.h>

#include "nbd/client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	nbd_client_fuzz_replies(data, size);
	return 0;
}
