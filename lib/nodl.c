/*
 * The static binary loads no shared objects. sqlite calls dlopen() only
 * for run-time extensions and libfuse only for the modules of its
 * high-level API, neither of which metac uses, yet the references make
 * the static link warn that dlopen needs glibc's shared libraries at run
 * time. The Makefile links copies of libsqlite3.a and libfuse3.a whose
 * dlopen family is renamed to these stubs, which fail cleanly.
 */
#ifdef METAC_STATIC
#include <stddef.h>

void *metac_nodl_dlopen(const char *file, int mode);
void *metac_nodl_dlsym(void *handle, const char *name);
int metac_nodl_dlclose(void *handle);
char *metac_nodl_dlerror(void);

void *metac_nodl_dlopen(const char *file, int mode)
{
	return NULL;
}

void *metac_nodl_dlsym(void *handle, const char *name)
{
	return NULL;
}

int metac_nodl_dlclose(void *handle)
{
	return -1;
}

char *metac_nodl_dlerror(void)
{
	return (char *)"metac is statically linked and loads no shared objects";
}
#endif
