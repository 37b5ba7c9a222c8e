/* The node's static X25519 key pair: its public key is its identity. */
#ifndef METAC_KEYS_H
#define METAC_KEYS_H

#include <stdint.h>

#define NODE_KEY_LEN 32
/* base64url of a 32-byte key, without NUL. */
#define NODE_ID_LEN 43

struct node_keys {
	uint8_t priv[NODE_KEY_LEN];
	uint8_t pub[NODE_KEY_LEN];
};

/* Loads DIR/node.key, creating it (0600, in a new file renamed into
 * place) on first start. Refuses a key file readable by others. */
int node_keys_load(const char *dir, struct node_keys *k);
void node_keys_wipe(struct node_keys *k);
/* id gets NODE_ID_LEN+1 bytes: the public key in base64url. */
void node_id_format(const uint8_t pub[NODE_KEY_LEN], char *id);

#endif
