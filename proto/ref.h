/*
 * Sturdy refs: ref://HOST[:PORT]/TOKEN, TOKEN the base64url of the node's
 * 32-byte public key followed by a 24-byte random secret. The node keeps
 * only a hash of each secret, with what the ref restores.
 */
#ifndef METAC_REF_H
#define METAC_REF_H

#include <stdint.h>

#include <sqlite3.h>

#define REF_SECRET_LEN 24
#define REF_HASH_LEN 32
#define REF_DEFAULT_PORT 901
#define REF_MAX_LEN 384
#define REF_MAX_DESC 1024

struct ref {
	char host[256]; /* as written: IPv4, IPv6 without brackets, or name */
	int port;
	uint8_t pub[32];
	uint8_t secret[REF_SECRET_LEN];
};

/* -EINVAL with a reason in why (may be NULL) for a malformed ref. */
int ref_parse(const char *s, struct ref *r, const char **why);
void ref_format(const struct ref *r, char *out, size_t outsz);
/* "HOST:PORT" suitable for net_addr_parse(). */
void ref_address(const struct ref *r, char *out, size_t outsz);
void ref_secret_hash(const uint8_t secret[REF_SECRET_LEN], uint8_t hash[REF_HASH_LEN]);
/* s with the token of every ref in it cut to "…" (a ref's description
 * may hold the ref it re-exports: a secret), for logs and listings. */
void ref_redact(const char *s, char *out, size_t outsz);

struct ref_record {
	int64_t id;
	char service[32];
	char description[REF_MAX_DESC];
	int read_only;
	int persistent;
	int64_t expiry;  /* unix seconds, 0: never */
	int64_t created; /* unix seconds */
};

/* The schema migrations of the node database. */
extern const struct store_schema node_db_schema;

/* Stores a new ref: fills r->secret and rec->id/created. */
int ref_store_add(sqlite3 *db, struct ref_record *rec, uint8_t secret[REF_SECRET_LEN]);
/* Looks up by secret: 0, -ENOENT (unknown or revoked), -ETIMEDOUT (expired). */
int ref_store_find(sqlite3 *db, const uint8_t secret[REF_SECRET_LEN], struct ref_record *rec);
int ref_store_delete(sqlite3 *db, int64_t id);
/* The refs of service whose description is old now say new (new NULL:
 * they are revoked), when what they name was renamed (or is gone).
 * Returns how many, or -errno. */
int ref_store_redescribe(sqlite3 *db, const char *service, const char *old, const char *new);
/* Calls fn for every ref; stops at the first non-zero return. */
int ref_store_each(sqlite3 *db, int (*fn)(const struct ref_record *, void *), void *arg);
/* Drops every ref not marked persistent (at daemon start). */
int ref_store_drop_ephemeral(sqlite3 *db);

#endif
