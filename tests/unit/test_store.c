/* sqlite open helper: WAL, permissions, migrations (lib/store.c). */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/store.h"
#include "tests/unit/unit.h"

static const char *const v1[] = { "CREATE TABLE t (a INTEGER)" };
static const char *const v2[] = { "CREATE TABLE t (a INTEGER)",
				  "ALTER TABLE t ADD COLUMN b TEXT" };
static const char *const bad[] = { "CREATE TABLE t (a INTEGER)",
				   "THIS IS NOT SQL" };

static int count_rows(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	int n = -1;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return n;
}

TEST(open_migrate_reopen)
{
	char dir[] = "/tmp/metac-store.XXXXXX", path[64];
	struct store_schema s1 = { v1, 1 }, s2 = { v2, 2 }, sb = { bad, 2 };
	struct stat st;
	sqlite3 *db;

	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/db", dir);
	CHECK_INT(store_open(path, &s1, &db), 0);
	CHECK_INT(stat(path, &st), 0);
	CHECK_INT(st.st_mode & 0777, 0600);
	CHECK_INT(count_rows(db, "PRAGMA user_version"), 1);
	CHECK_INT(count_rows(db, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'"), 1);
	CHECK_INT(store_exec(db, "INSERT INTO t (a) VALUES (1)"), 0);
	store_close(db);

	/* The next version adds a column and keeps the data. */
	CHECK_INT(store_open(path, &s2, &db), 0);
	CHECK_INT(count_rows(db, "PRAGMA user_version"), 2);
	CHECK_INT(count_rows(db, "SELECT count(*) FROM t WHERE b IS NULL"), 1);
	store_close(db);

	/* An older program refuses a newer database. */
	CHECK_INT(store_open(path, &s1, &db), -ENOTSUP);

	/* A failed migration rolls back and leaves the version alone. */
	snprintf(path, sizeof(path), "%s/db2", dir);
	CHECK_INT(store_open(path, &s1, &db), 0);
	store_close(db);
	CHECK_INT(store_open(path, &sb, &db), -EPROTO);
	CHECK_INT(store_open(path, &s1, &db), 0);
	CHECK_INT(count_rows(db, "PRAGMA user_version"), 1);
	store_close(db);

	char cmd[96];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK_INT(system(cmd), 0);
}

/* A file damaged under the database (here: a page's header overwritten)
 * is refused at open with sqlite's complaint, not used. */
TEST(damaged_refused)
{
	char dir[] = "/tmp/metac-store.XXXXXX", path[64];
	struct store_schema s1 = { v1, 1 };
	uint8_t junk[64];
	sqlite3 *db;
	FILE *f;

	CHECK(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/db", dir);
	CHECK_INT(store_open(path, &s1, &db), 0);
	CHECK_INT(store_exec(db, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
				 "WHERE i < 2000) INSERT INTO t (a) SELECT i * 1000003 FROM n"), 0);
	store_close(db); /* checkpoints the WAL into the file */
	CHECK_INT(store_open(path, &s1, &db), 0);
	store_close(db);
	memset(junk, 0xa5, sizeof(junk));
	CHECK((f = fopen(path, "r+")));
	CHECK_INT(fseek(f, 4096 + 8192, SEEK_SET), 0); /* inside the table's pages */
	CHECK_INT((int)fwrite(junk, 1, sizeof(junk), f), (int)sizeof(junk));
	fclose(f);
	CHECK_INT(store_open(path, &s1, &db), -EIO);
	unlink(path);
	for (const char *ext = "-wal"; ext; ext = strcmp(ext, "-wal") ? NULL : "-shm") {
		char side[80];
		snprintf(side, sizeof(side), "%s%s", path, ext);
		unlink(side);
	}
	rmdir(dir);
}
