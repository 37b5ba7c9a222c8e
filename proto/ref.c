/* Sturdy ref syntax and the refs table of the node database. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "lib/b64url.h"
#include "lib/log.h"
#include "lib/store.h"
#include "proto/ref.h"

#define TOKEN_BYTES (32 + REF_SECRET_LEN)

static const char *const migrations[] = {
	"CREATE TABLE refs ("
	" id INTEGER PRIMARY KEY,"
	" hash BLOB NOT NULL UNIQUE,"
	" service TEXT NOT NULL,"
	" description TEXT NOT NULL,"
	" read_only INTEGER NOT NULL DEFAULT 0,"
	" persistent INTEGER NOT NULL DEFAULT 0,"
	" expiry INTEGER NOT NULL DEFAULT 0,"
	" created INTEGER NOT NULL)",
	/* What services bound here (a mounted folder, ...) and asked to
	 * keep across restarts. source is what to restore: a ref, so the
	 * file is 0600 like the rest. */
	"CREATE TABLE binds ("
	" service TEXT NOT NULL,"
	" target TEXT NOT NULL,"
	" source TEXT NOT NULL,"
	" uid INTEGER NOT NULL,"
	" gid INTEGER NOT NULL,"
	" PRIMARY KEY (service, target))",
	/* How long a mount's calls wait out an outage (0: the default). */
	"ALTER TABLE binds ADD COLUMN timeout_ms INTEGER NOT NULL DEFAULT 0",
	/* A service's own options of a binding (block serve: read-only). */
	"ALTER TABLE binds ADD COLUMN flags INTEGER NOT NULL DEFAULT 0",
};

const struct store_schema node_db_schema = {
	migrations, sizeof(migrations) / sizeof(migrations[0])
};

static int fail(const char **why, const char *reason)
{
	if (why)
		*why = reason;
	return -EINVAL;
}

int ref_parse(const char *s, struct ref *r, const char **why)
{
	uint8_t token[TOKEN_BYTES];
	const char *host, *end, *slash, *tok;
	size_t n, hlen;

	memset(r, 0, sizeof(*r));
	if (strnlen(s, REF_MAX_LEN) >= REF_MAX_LEN)
		return fail(why, "it is longer than any ref");
	if (strncmp(s, "ref://", 6))
		return fail(why, "it does not start with ref://");
	host = s + 6;
	slash = strchr(host, '/');
	if (!slash)
		return fail(why, "it has no /TOKEN after the host");
	tok = slash + 1;
	if (host[0] == '[') {
		end = memchr(host, ']', slash - host);
		if (!end)
			return fail(why, "an IPv6 address lacks its closing ]");
		hlen = end - host - 1;
		host++;
		end++;
	} else {
		end = memchr(host, ':', slash - host);
		if (!end)
			end = slash;
		hlen = end - host;
	}
	if (hlen == 0 || hlen >= sizeof(r->host))
		return fail(why, "the host is empty or too long");
	memcpy(r->host, host, hlen);
	r->port = REF_DEFAULT_PORT;
	if (*end == ':') {
		/* Digits only: strtol would also take a sign or spaces. */
		long p = 0;
		const char *d;
		for (d = end + 1; d < slash && *d >= '0' && *d <= '9' && p <= 65535; d++)
			p = p * 10 + (*d - '0');
		if (d != slash || p < 1 || p > 65535)
			return fail(why, "the port is not a number from 1 to 65535");
		r->port = (int)p;
	} else if (end != slash) {
		return fail(why, "unexpected characters after the host");
	}
	if (b64url_decode(tok, strlen(tok), token, sizeof(token), &n) < 0 ||
	    n != TOKEN_BYTES)
		return fail(why, "the token is not 75 characters of base64url "
			    "(was the ref cut short when copied?)");
	memcpy(r->pub, token, 32);
	memcpy(r->secret, token + 32, REF_SECRET_LEN);
	sodium_memzero(token, sizeof(token));
	return 0;
}

void ref_redact(const char *s, char *out, size_t outsz)
{
	size_t n = 0;

	if (!outsz)
		return;
	while (*s && n + 1 < outsz) {
		const char *slash;
		if (!strncmp(s, "ref://", 6) && (slash = strchr(s + 6, '/'))) {
			size_t keep = (size_t)(slash - s) + 1;
			if (n + keep + 3 >= outsz)
				break;
			memcpy(out + n, s, keep);
			memcpy(out + n + keep, "...", 3);
			n += keep + 3;
			/* The token: base64url, up to the first other byte. */
			for (s = slash + 1; *s && (isalnum((unsigned char)*s) || *s == '-' || *s == '_');
			     s++)
				;
			continue;
		}
		out[n++] = *s++;
	}
	out[n] = 0;
}

void ref_address(const struct ref *r, char *out, size_t outsz)
{
	if (strchr(r->host, ':'))
		snprintf(out, outsz, "[%s]:%d", r->host, r->port);
	else
		snprintf(out, outsz, "%s:%d", r->host, r->port);
}

void ref_format(const struct ref *r, char *out, size_t outsz)
{
	uint8_t token[TOKEN_BYTES];
	char tok[128], addr[300];

	memcpy(token, r->pub, 32);
	memcpy(token + 32, r->secret, REF_SECRET_LEN);
	b64url_encode(token, sizeof(token), tok, sizeof(tok));
	sodium_memzero(token, sizeof(token));
	if (r->port == REF_DEFAULT_PORT)
		snprintf(addr, sizeof(addr), strchr(r->host, ':') ? "[%s]" : "%s", r->host);
	else
		ref_address(r, addr, sizeof(addr));
	snprintf(out, outsz, "ref://%s/%s", addr, tok);
	sodium_memzero(tok, sizeof(tok));
}

void ref_secret_hash(const uint8_t secret[REF_SECRET_LEN], uint8_t hash[REF_HASH_LEN])
{
	static const uint8_t domain[] = "metac ref secret";
	crypto_generichash(hash, REF_HASH_LEN, secret, REF_SECRET_LEN, domain,
			   sizeof(domain) - 1);
}

static int db_error(sqlite3 *db, const char *what)
{
	log_error("database: %s: %s", what, sqlite3_errmsg(db));
	return -EPROTO;
}

int ref_store_add(sqlite3 *db, struct ref_record *rec, uint8_t secret[REF_SECRET_LEN])
{
	uint8_t hash[REF_HASH_LEN];
	sqlite3_stmt *st = NULL;
	int r = 0;

	randombytes_buf(secret, REF_SECRET_LEN);
	ref_secret_hash(secret, hash);
	rec->created = time(NULL);
	if (sqlite3_prepare_v2(db, "INSERT INTO refs (hash, service, description,"
			       " read_only, persistent, expiry, created)"
			       " VALUES (?, ?, ?, ?, ?, ?, ?)", -1, &st, NULL))
		return db_error(db, "cannot add a ref");
	sqlite3_bind_blob(st, 1, hash, sizeof(hash), SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 2, rec->service, -1, SQLITE_TRANSIENT);
	sqlite3_bind_text(st, 3, rec->description, -1, SQLITE_TRANSIENT);
	sqlite3_bind_int(st, 4, rec->read_only);
	sqlite3_bind_int(st, 5, rec->persistent);
	sqlite3_bind_int64(st, 6, rec->expiry);
	sqlite3_bind_int64(st, 7, rec->created);
	if (sqlite3_step(st) != SQLITE_DONE)
		r = db_error(db, "cannot add a ref");
	else
		rec->id = sqlite3_last_insert_rowid(db);
	sqlite3_finalize(st);
	return r;
}

static void row_to_record(sqlite3_stmt *st, struct ref_record *rec)
{
	rec->id = sqlite3_column_int64(st, 0);
	snprintf(rec->service, sizeof(rec->service), "%s",
		 (const char *)sqlite3_column_text(st, 1));
	snprintf(rec->description, sizeof(rec->description), "%s",
		 (const char *)sqlite3_column_text(st, 2));
	rec->read_only = sqlite3_column_int(st, 3);
	rec->persistent = sqlite3_column_int(st, 4);
	rec->expiry = sqlite3_column_int64(st, 5);
	rec->created = sqlite3_column_int64(st, 6);
}

#define RECORD_COLUMNS "id, service, description, read_only, persistent, expiry, created"

int ref_store_find(sqlite3 *db, const uint8_t secret[REF_SECRET_LEN], struct ref_record *rec)
{
	uint8_t hash[REF_HASH_LEN];
	sqlite3_stmt *st = NULL;
	int r = -ENOENT;

	ref_secret_hash(secret, hash);
	if (sqlite3_prepare_v2(db, "SELECT " RECORD_COLUMNS ", hash FROM refs"
			       " WHERE hash = ?", -1, &st, NULL))
		return db_error(db, "cannot look a ref up");
	sqlite3_bind_blob(st, 1, hash, sizeof(hash), SQLITE_TRANSIENT);
	if (sqlite3_step(st) == SQLITE_ROW) {
		const void *stored = sqlite3_column_blob(st, 7);
		/* The index found the row; the secret's hash is still compared
		 * in constant time before it is trusted. */
		if (stored && sqlite3_column_bytes(st, 7) == REF_HASH_LEN &&
		    sodium_memcmp(stored, hash, REF_HASH_LEN) == 0) {
			row_to_record(st, rec);
			r = 0;
			if (rec->expiry && rec->expiry <= time(NULL))
				r = -ETIMEDOUT;
		}
	}
	sqlite3_finalize(st);
	return r;
}

int ref_store_delete(sqlite3 *db, int64_t id)
{
	sqlite3_stmt *st = NULL;
	int r = 0;
	if (sqlite3_prepare_v2(db, "DELETE FROM refs WHERE id = ?", -1, &st, NULL))
		return db_error(db, "cannot revoke a ref");
	sqlite3_bind_int64(st, 1, id);
	if (sqlite3_step(st) != SQLITE_DONE)
		r = db_error(db, "cannot revoke a ref");
	else if (sqlite3_changes(db) == 0)
		r = -ENOENT;
	sqlite3_finalize(st);
	return r;
}

int ref_store_redescribe(sqlite3 *db, const char *service, const char *old, const char *new)
{
	sqlite3_stmt *st = NULL;
	int r;
	const char *sql = new ? "UPDATE refs SET description = ?3 WHERE service = ?1 AND description = ?2"
			      : "DELETE FROM refs WHERE service = ?1 AND description = ?2";

	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL))
		return db_error(db, "cannot change refs");
	sqlite3_bind_text(st, 1, service, -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, old, -1, SQLITE_STATIC);
	if (new)
		sqlite3_bind_text(st, 3, new, -1, SQLITE_STATIC);
	r = sqlite3_step(st) == SQLITE_DONE ? sqlite3_changes(db) : db_error(db, "cannot change refs");
	sqlite3_finalize(st);
	return r;
}

int ref_store_each(sqlite3 *db, int (*fn)(const struct ref_record *, void *), void *arg)
{
	sqlite3_stmt *st = NULL;
	struct ref_record rec;
	int r = 0, s;
	if (sqlite3_prepare_v2(db, "SELECT " RECORD_COLUMNS " FROM refs ORDER BY id",
			       -1, &st, NULL))
		return db_error(db, "cannot list refs");
	while (r == 0 && (s = sqlite3_step(st)) == SQLITE_ROW) {
		row_to_record(st, &rec);
		r = fn(&rec, arg);
	}
	sqlite3_finalize(st);
	return r;
}

int ref_store_drop_ephemeral(sqlite3 *db)
{
	return store_exec(db, "DELETE FROM refs WHERE persistent = 0");
}
