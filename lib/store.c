/* sqlite database helper: WAL, busy timeout, schema migrations by
 * PRAGMA user_version, each migration in its own transaction. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lib/log.h"
#include "lib/store.h"

int store_exec(sqlite3 *db, const char *sql)
{
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		log_error("database: %s (in: %.60s)", msg ? msg : "?", sql);
		sqlite3_free(msg);
		return -EPROTO;
	}
	return 0;
}

static int user_version(sqlite3 *db, int *v)
{
	sqlite3_stmt *st;
	int r = -EPROTO;
	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL))
		return -EPROTO;
	if (sqlite3_step(st) == SQLITE_ROW) {
		*v = sqlite3_column_int(st, 0);
		r = 0;
	}
	sqlite3_finalize(st);
	return r;
}

static int migrate(sqlite3 *db, const struct store_schema *schema)
{
	int v, r;
	char sql[64];

	if ((r = user_version(db, &v)) < 0)
		return r;
	if (v > schema->count) {
		log_error("database schema version %d is newer than this metac "
			  "knows (%d); upgrade metac", v, schema->count);
		return -ENOTSUP;
	}
	for (; v < schema->count; v++) {
		if ((r = store_exec(db, "BEGIN IMMEDIATE")) < 0)
			return r;
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
		if ((r = store_exec(db, schema->migrations[v])) < 0 ||
		    (r = store_exec(db, sql)) < 0) {
			store_exec(db, "ROLLBACK");
			return r;
		}
		if ((r = store_exec(db, "COMMIT")) < 0)
			return r;
	}
	return 0;
}

/* sqlite's own look at the file (its structure, not every index entry):
 * a damaged database is refused with what sqlite says, rather than used
 * and found out later. */
static int check(sqlite3 *db, const char *path)
{
	sqlite3_stmt *st;
	const unsigned char *what = NULL;
	int r = 0;

	if (sqlite3_prepare_v2(db, "PRAGMA quick_check", -1, &st, NULL) != SQLITE_OK) {
		log_error("database %s: %s", path, sqlite3_errmsg(db));
		return -EIO;
	}
	if (sqlite3_step(st) != SQLITE_ROW || !(what = sqlite3_column_text(st, 0)) ||
	    strcmp((const char *)what, "ok")) {
		log_error("database %s is damaged: %s", path,
			  what ? (const char *)what : sqlite3_errmsg(db));
		r = -EIO;
	}
	sqlite3_finalize(st);
	return r;
}

int store_open(const char *path, const struct store_schema *schema,
	       sqlite3 **out)
{
	sqlite3 *db = NULL;
	int r, fd;

	/* Create it 0600 ourselves: sqlite would use the umask. */
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		r = -errno;
		log_error("database %s: cannot open: %m", path);
		return r;
	}
	close(fd);
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
		log_error("database %s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
		r = -EPROTO;
		goto fail;
	}
	sqlite3_busy_timeout(db, 5000);
	if ((r = check(db, path)) < 0 ||
	    (r = store_exec(db, "PRAGMA journal_mode=WAL")) < 0 ||
	    (r = store_exec(db, "PRAGMA synchronous=NORMAL")) < 0 ||
	    (r = store_exec(db, "PRAGMA foreign_keys=ON")) < 0 ||
	    (r = migrate(db, schema)) < 0)
		goto fail;
	*out = db;
	return 0;
fail:
	sqlite3_close(db);
	return r;
}

void store_close(sqlite3 *db)
{
	sqlite3_close(db);
}
