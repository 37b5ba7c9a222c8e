/* sqlite helper: open a database in WAL mode with a busy timeout and bring
 * its schema up to date from an ordered list of migrations. */
#ifndef METAC_STORE_H
#define METAC_STORE_H

#include <sqlite3.h>

/* Migration i takes the schema from user_version i to i+1. */
struct store_schema {
	const char *const *migrations;
	int count;
};

/* Creates the file 0600 if missing. Returns 0 or -errno (-EPROTO for an
 * sqlite error, -ENOTSUP for a database newer than this program). */
int store_open(const char *path, const struct store_schema *schema,
	       sqlite3 **out);
void store_close(sqlite3 *db);
/* Run SQL with no results; logs sqlite's message on failure. */
int store_exec(sqlite3 *db, const char *sql);

#endif
