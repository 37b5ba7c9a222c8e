/*
 * The sound service and applet: PulseAudio devices as SoundDevices whose
 * audio crosses the network as Opus (audio/opus.c). The mixer is the
 * PulseAudio server the daemon's clients reach ($PULSE_SERVER, else the
 * default), driven through its own command-line clients (pactl, parec,
 * pacat): there is no static libpulse.
 *
 * Devices, as metac sees them: a sink takes audio (to play), a source
 * gives audio. A ref's description is one of
 *   localsink:NAME      an existing sink: the network plays into it
 *   localsource:NAME    an existing source (a microphone, a sink's
 *                       NAME.monitor): the network hears it
 *   newlocalsink:NAME   a new null sink NAME for local programs to play
 *                       into; the device is its monitor, a source
 *   newlocalsource:NAME a new source NAME for local programs to record
 *                       from; the device is the sink NAME.input behind it
 * SoundDevice.opusStream: each data connection carries the device's audio
 * (a source) or audio for it (a sink), coded in a process of its own
 * (`sound _session`, svc/session.h) that runs as nobody. bindTo joins a source to a sink
 * until the holder is dropped.
 *   metac sound export [--persistent] SOUND-URI        -> ref
 *   metac sound bind SINK-URI SOURCE-URI  (local URIs or refs; holds the
 *                                          binding until interrupted)
 *   metac sound list [--json]
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "audio/opus.h"
#include "lib/cli.h"
#include "lib/log.h"
#include "lib/proc.h"
#include "proto/node.h"
#include "svc/admin_client.h"
#include "svc/applets.h"
#include "svc/services.h"
#include "svc/session.h"
#include "wire/conn.h"

#define NAME_MAX_LEN 96
#define PACTL_TIMEOUT_MS 5000
#define JITTER_MS 40   /* what a sink holds before playing */
/* Asked of parec, and of pacat (which needs some room: a shorter buffer
 * underruns while the sink starts, which is heard as a click). */
#define PAREC_LATENCY "--latency-msec=10"
#define PACAT_LATENCY "--latency-msec=30"
#define SESSION_SOCKBUF (64 << 10)

enum kind { LOCAL_SINK, LOCAL_SOURCE, NEW_SINK, NEW_SOURCE };

static const char *const kind_prefix[] = {
	[LOCAL_SINK] = "localsink:", [LOCAL_SOURCE] = "localsource:",
	[NEW_SINK] = "newlocalsink:", [NEW_SOURCE] = "newlocalsource:",
};

struct snd_dev {
	struct cap cap;
	struct node *node;
	int is_sink;                /* takes audio */
	char pa_name[NAME_MAX_LEN + 16]; /* the PulseAudio device streamed */
	char uri[NAME_MAX_LEN + 32];
};

/* SOUND-URI: its kind and name (letters, digits, . _ -). */
static int uri_parse(const char *uri, enum kind *k, char *name, size_t namesz)
{
	for (int i = 0; i < 4; i++) {
		size_t n = strlen(kind_prefix[i]);
		const char *p = uri + n;
		if (strncmp(uri, kind_prefix[i], n))
			continue;
		if (!*p || strlen(p) > NAME_MAX_LEN || strlen(p) >= namesz)
			return -EINVAL;
		for (const char *c = p; *c; c++)
			if (!isalnum((unsigned char)*c) && !strchr("._-", *c))
				return -EINVAL;
		*k = (enum kind)i;
		strcpy(name, p);
		return 0;
	}
	return -EINVAL;
}

/* --- the mixer: pactl ------------------------------------------------ */

/* Runs pactl ARGS; err gets its complaint on failure. */
static int pactl(char *const args[], char *out, size_t outsz, char *err, size_t errsz)
{
	char *argv[12] = { "pactl" };
	int n = 1, r;

	for (; args[n - 1] && n < 11; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;
	r = proc_run(argv, out, outsz, PACTL_TIMEOUT_MS);
	if (r == 0)
		return 0;
	if (r == -ENOENT)
		snprintf(err, errsz, "pactl is missing (install pulseaudio-utils)");
	else if (r < 0)
		snprintf(err, errsz, "pactl %s: %s", args[0], strerror(-r));
	else
		snprintf(err, errsz, "PulseAudio: %.*s", (int)strcspn(out, "\n"), out);
	return r < 0 ? r : -EIO;
}

/* Whether the mixer has a sink (or source) of that name. */
static int pa_has(const char *what, const char *name, char *err, size_t errsz)
{
	char *args[] = { "list", "short", (char *)what, NULL };
	char out[16384];
	int r;

	if ((r = pactl(args, out, sizeof(out), err, errsz)) < 0)
		return r;
	for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
		char *tab = strchr(line, '\t'), *end;
		if (!tab)
			continue;
		end = strchr(tab + 1, '\t');
		if (end && (size_t)(end - tab - 1) == strlen(name) && !strncmp(tab + 1, name, end - tab - 1))
			return 1;
	}
	return 0;
}

static int pa_load(char *const args[], char *err, size_t errsz)
{
	char out[512];
	return pactl(args, out, sizeof(out), err, errsz);
}

/* Makes the PulseAudio devices a URI stands for exist; dev gets what is
 * streamed and which way. */
static int device_open(enum kind k, const char *name, struct snd_dev *dev, char *err,
		       size_t errsz)
{
	char a1[NAME_MAX_LEN + 64], a2[NAME_MAX_LEN + 64], a3[NAME_MAX_LEN + 64];
	int r;

	switch (k) {
	case LOCAL_SINK:
	case LOCAL_SOURCE:
		if ((r = pa_has(k == LOCAL_SINK ? "sinks" : "sources", name, err, errsz)) < 0)
			return r;
		if (!r) {
			snprintf(err, errsz, "PulseAudio has no %s '%s'",
				 k == LOCAL_SINK ? "sink" : "source", name);
			return -ENOENT;
		}
		dev->is_sink = k == LOCAL_SINK;
		snprintf(dev->pa_name, sizeof(dev->pa_name), "%s", name);
		return 0;
	case NEW_SINK:
		if ((r = pa_has("sinks", name, err, errsz)) < 0)
			return r;
		snprintf(a1, sizeof(a1), "sink_name=%s", name);
		snprintf(a2, sizeof(a2), "sink_properties=device.description=metac-%s", name);
		if (!r && (r = pa_load((char *[]){ "load-module", "module-null-sink", a1, a2,
						    "rate=48000", NULL }, err, errsz)) < 0)
			return r;
		dev->is_sink = 0;
		snprintf(dev->pa_name, sizeof(dev->pa_name), "%s.monitor", name);
		return 0;
	case NEW_SOURCE:
		/* A null sink the network plays into, and the source programs
		 * record from: its monitor, remapped under the name asked. */
		snprintf(dev->pa_name, sizeof(dev->pa_name), "%s.input", name);
		if ((r = pa_has("sinks", dev->pa_name, err, errsz)) < 0)
			return r;
		snprintf(a1, sizeof(a1), "sink_name=%s", dev->pa_name);
		snprintf(a2, sizeof(a2), "sink_properties=device.description=metac-%s-input", name);
		if (!r && (r = pa_load((char *[]){ "load-module", "module-null-sink", a1, a2,
						    "rate=48000", NULL }, err, errsz)) < 0)
			return r;
		if ((r = pa_has("sources", name, err, errsz)) < 0)
			return r;
		snprintf(a1, sizeof(a1), "master=%s.monitor", dev->pa_name);
		snprintf(a2, sizeof(a2), "source_name=%s", name);
		snprintf(a3, sizeof(a3), "source_properties=device.description=metac-%s", name);
		if (!r && (r = pa_load((char *[]){ "load-module", "module-remap-source", a1, a2, a3,
						    NULL }, err, errsz)) < 0)
			return r;
		dev->is_sink = 1;
		return 0;
	}
	return -EINVAL;
}

/* --- sessions: one per data connection, each in a process ----------- */

/* `metac sound _session DIR --name PA_NAME [--sink]` (svc/session.c): the
 * device's PulseAudio client (pacat, parec) started, then the process
 * runs as nobody in an empty root under the sound filter and turns the
 * peer's Opus into PCM for it, or its PCM into Opus for the peer. */
void sound_session_run(const char *dir, const char *pa_name, int is_sink, int fd)
{
	char dev[NAME_MAX_LEN + 32], err[512];
	char *argv[] = { is_sink ? "pacat" : "parec", dev, "--raw", "--format=s16le",
			 "--rate=48000", "--channels=2", is_sink ? PACAT_LATENCY : PAREC_LATENCY,
			 "--client-name=metac", NULL };
	struct audio_stats st = { 0 };
	int pcm = -1, r;
	pid_t pid;

	snprintf(dev, sizeof(dev), "--device=%s", pa_name);
	if ((pid = proc_spawn_pipe(argv, is_sink, &pcm)) < 0) {
		log_warn("sound %s: cannot start %s: %s", pa_name, argv[0], strerror(-pid));
		_exit(EXIT_FAIL);
	}
	/* Keep the pipe to pacat short: audio waiting there is delay. */
	if (is_sink)
		fcntl(pcm, F_SETPIPE_SZ, 2 * AUDIO_FRAME_BYTES);
	if ((r = sandbox_enter(SANDBOX_SOUND, dir, -1, 0, err, sizeof(err))) < 0) {
		/* The pipe closes with us: the client ends. */
		log_error("sound session: %s", err);
		_exit(EXIT_FAIL);
	}
	if (is_sink)
		r = audio_receive(fd, pcm, JITTER_MS, NULL, &st);
	else
		r = audio_send(pcm, fd, NULL, &st);
	log_info("sound %s: a stream ended (%s): %llu frames, %llu concealed, %llu late, "
		 "%llu dropped, %llu overruns", pa_name, r < 0 ? strerror(-r) : "done",
		 (unsigned long long)st.frames, (unsigned long long)st.concealed,
		 (unsigned long long)st.late, (unsigned long long)st.dropped,
		 (unsigned long long)st.overruns);
	/* The client ends with its pipe (pacat at its end, parec of SIGPIPE);
	 * we wait a while for it, but as nobody may not signal it. */
	close(pcm);
	for (int i = 0; i < 100 && waitpid(pid, NULL, WNOHANG) == 0; i++)
		usleep(10000);
	_exit(EXIT_OK);
}

/* --- the service --------------------------------------------------- */

static void dev_free(struct cap *c)
{
	free(c);
}

static void stream_call(struct cap *c, struct rpc_call *call)
{
	node_stream_call(((struct snd_dev *)c)->node, c, call, "opus stream");
}

static void stream_attach(struct cap *c, struct wire_conn *data)
{
	struct snd_dev *d = (struct snd_dev *)c;
	struct session_cfg cfg = { .kind = SANDBOX_SOUND, .name = d->pa_name,
				   .sink = d->is_sink };
	int fd, e;

	if ((e = node_pipe_pair(data, SESSION_SOCKBUF, &fd)) < 0)
		log_warn("sound: cannot pipe a data connection: %s", strerror(-e));
	else
		session_spawn(d->node, &cfg, fd, -1, NULL, NULL);
}

static const struct cap_ops stream_ops = {
	.name = "opus stream",
	.call = stream_call,
	.free = dev_free,
	.attach = stream_attach,
};

static struct snd_dev *dev_copy(const struct snd_dev *d, const struct cap_ops *ops)
{
	struct snd_dev *n = malloc(sizeof(*n));

	if (!n)
		return NULL;
	*n = *d;
	cap_init(&n->cap, ops);
	return n;
}

/* bindTo: the other device's stream, then ours bound to it. */
struct bind {
	struct rpc_call *call;
	struct snd_dev *self;
	struct cap *mine;
};

static void bind_end(struct bind *b, int err, const char *errmsg, struct msg *res)
{
	struct msg_rd rd;
	struct cap *holder;

	if (err) {
		rpc_return_error(b->call, err, "%s", errmsg);
	} else {
		msg_rd_init(&rd, res);
		if (msg_get_cap(&rd, &holder) < 0)
			rpc_return_error(b->call, -EPROTO, "bindTo answered nothing");
		else
			rpc_return_cap(b->call, cap_ref(holder));
	}
	cap_unref(b->mine);
	cap_unref(&b->self->cap);
	free(b);
}

static void bind_bound(void *arg, int err, const char *errmsg, struct msg *res)
{
	bind_end(arg, err, errmsg, res);
}

static void bind_have_other(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct bind *b = arg;
	struct snd_dev *m;
	struct msg_rd rd;
	struct cap *other;
	struct msg p;

	if (!err) {
		msg_rd_init(&rd, res);
		if (msg_get_cap(&rd, &other) < 0)
			err = -EPROTO, errmsg = "the other device answered no stream";
	}
	if (err || !(m = dev_copy(b->self, &stream_ops))) {
		bind_end(b, err ? err : -ENOMEM, err ? errmsg : "out of memory", NULL);
		return;
	}
	b->mine = &m->cap;
	msg_init(&p);
	msg_put_cap(&p, other);
	rpc_call(b->mine, IFACE_STREAM, STREAM_BIND_TO, &p, bind_bound, b);
}

static void bind_have_info(void *arg, int err, const char *errmsg, struct msg *res)
{
	struct bind *b = arg;
	struct msg_rd rd;
	struct cap *other;
	char name[256];
	int other_sink = 0;
	struct msg p;

	if (!err) {
		msg_rd_init(&rd, res);
		if (msg_get_str(&rd, name, sizeof(name)) < 0 || msg_get_bool(&rd, &other_sink) < 0)
			err = -EPROTO, errmsg = "the other device answered no info";
	}
	if (!err && other_sink == b->self->is_sink)
		err = -EINVAL, errmsg = b->self->is_sink ? "both devices are sinks: bind a "
							   "source to a sink"
							 : "both devices are sources: bind a "
							   "source to a sink";
	if (err) {
		bind_end(b, err, errmsg, NULL);
		return;
	}
	msg_rd_init(&rd, &b->call->params);
	msg_get_cap(&rd, &other);
	msg_init(&p);
	rpc_call(other, IFACE_SOUND_DEVICE, SOUND_DEVICE_OPUS_STREAM, &p, bind_have_other, b);
}

static void dev_call(struct cap *c, struct rpc_call *call)
{
	struct snd_dev *d = (struct snd_dev *)c, *s;
	struct msg_rd rd;
	struct cap *other;
	struct bind *b;
	struct msg p;

	if (call->iface != IFACE_SOUND_DEVICE) {
		rpc_return_unknown(call, "sound device");
		return;
	}
	switch (call->method) {
	case SOUND_DEVICE_INFO:
		msg_put_str(&call->results, d->pa_name);
		msg_put_bool(&call->results, d->is_sink);
		msg_put_bool(&call->results, !strncmp(d->pa_name, "alsa_", 5));
		msg_put_str(&call->results, d->uri);
		rpc_return(call);
		return;
	case SOUND_DEVICE_OPUS_STREAM:
		if (!(s = dev_copy(d, &stream_ops))) {
			rpc_return_error(call, -ENOMEM, "out of memory");
			return;
		}
		rpc_return_cap(call, &s->cap);
		return;
	case SOUND_DEVICE_BIND_TO:
		msg_rd_init(&rd, &call->params);
		if (msg_get_cap(&rd, &other) < 0) {
			rpc_return_error(call, -EINVAL, "bindTo needs a sound device");
			return;
		}
		if (!(b = calloc(1, sizeof(*b)))) {
			rpc_return_error(call, -ENOMEM, "out of memory");
			return;
		}
		b->call = call;
		b->self = d;
		cap_ref(&d->cap);
		msg_init(&p);
		rpc_call(other, IFACE_SOUND_DEVICE, SOUND_DEVICE_INFO, &p, bind_have_info, b);
		return;
	}
	rpc_return_unknown(call, "sound device");
}

static const struct cap_ops dev_ops = {
	.name = "sound device",
	.call = dev_call,
	.free = dev_free,
};

static int dev_new(struct node *n, const char *uri, struct cap **out, char *err, size_t errsz)
{
	struct snd_dev d = { .node = n };
	char name[NAME_MAX_LEN + 1];
	struct snd_dev *c;
	enum kind k;
	int e;

	if (uri_parse(uri, &k, name, sizeof(name)) < 0) {
		snprintf(err, errsz, "'%s' is not localsink:, localsource:, newlocalsink: or "
				     "newlocalsource: and a name (letters, digits, . _ -)", uri);
		return -EINVAL;
	}
	if ((e = device_open(k, name, &d, err, errsz)) < 0)
		return e;
	snprintf(d.uri, sizeof(d.uri), "%s", uri);
	if (!(c = dev_copy(&d, &dev_ops))) {
		snprintf(err, errsz, "out of memory");
		return -ENOMEM;
	}
	*out = &c->cap;
	return 0;
}

static int sound_restore(struct node *n, const struct ref_record *rec, struct cap **out,
			 char *err, size_t errsz)
{
	return dev_new(n, rec->description, out, err, errsz);
}

/* The Mixer: the service's administration object (a node_obj). */

#define LIST_MAX 256

/* The mixer's sinks and sources: (u64 n, n * (name, is_sink, state)). */
static void list_devices(struct rpc_call *call)
{
	static const char *const what[] = { "sinks", "sources" };
	static char out[2][32768];
	const char *name[LIST_MAX], *state[LIST_MAX];
	int sink[LIST_MAX], n = 0;
	char err[256], *save;

	for (int w = 0; w < 2; w++) {
		char *args[] = { "list", "short", (char *)what[w], NULL };
		int r = pactl(args, out[w], sizeof(out[w]), err, sizeof(err));
		if (r < 0) {
			rpc_return_error(call, r, "%s", err);
			return;
		}
		for (char *line = strtok_r(out[w], "\n", &save); line && n < LIST_MAX;
		     line = strtok_r(NULL, "\n", &save)) {
			char *f[5] = { 0 }, *s2;
			int i = 0;
			for (char *t = strtok_r(line, "\t", &s2); t && i < 5; t = strtok_r(NULL, "\t", &s2))
				f[i++] = t;
			if (i < 2)
				continue;
			name[n] = f[1];
			sink[n] = w == 0;
			state[n++] = i >= 5 ? f[4] : "";
		}
	}
	msg_put_u64(&call->results, (uint64_t)n);
	for (int i = 0; i < n; i++) {
		msg_put_str(&call->results, name[i]);
		msg_put_bool(&call->results, sink[i]);
		msg_put_str(&call->results, state[i]);
	}
	rpc_return(call);
}

static void mixer_call(struct cap *c, struct rpc_call *call)
{
	char name[NAME_MAX_LEN + 1], uri[NAME_MAX_LEN + 32], err[512];
	struct cap *d;
	struct msg_rd rd;
	int e;

	if (call->iface != IFACE_MIXER) {
		rpc_return_unknown(call, "mixer");
		return;
	}
	switch (call->method) {
	case MIXER_CREATE_SINK:
	case MIXER_CREATE_SOURCE:
	case MIXER_GET_DEVICE:
		msg_rd_init(&rd, &call->params);
		if (msg_get_str(&rd, name, sizeof(name)) < 0) {
			rpc_return_error(call, -EINVAL, "malformed request");
			return;
		}
		if (call->method == MIXER_GET_DEVICE)
			snprintf(uri, sizeof(uri), "%s", name);
		else
			snprintf(uri, sizeof(uri), "%s%s", call->method == MIXER_CREATE_SINK
					? kind_prefix[NEW_SINK] : kind_prefix[NEW_SOURCE], name);
		if ((e = dev_new(node_obj_node(c), uri, &d, err, sizeof(err))) < 0) {
			rpc_return_error(call, e, "%s", err);
			return;
		}
		rpc_return_cap(call, d);
		return;
	case MIXER_GET_DEVICES:
		list_devices(call);
		return;
	}
	rpc_return_unknown(call, "mixer");
}

static const struct cap_ops mixer_ops = {
	.name = "mixer",
	.call = mixer_call,
	.free = node_obj_free,
};

static struct cap *mixer_new(struct node *n)
{
	return node_obj_new(n, &mixer_ops);
}

static const struct node_service sound_service = {
	.name = "sound",
	.restore = sound_restore,
	.admin = mixer_new,
};

int sound_service_register(struct node *n)
{
	return node_register_service(n, &sound_service);
}

/* --- applet -------------------------------------------------------- */

/* A SOUND-URI is its own description. */
static int sound_describe(const char *arg, char *desc, size_t sz)
{
	char name[NAME_MAX_LEN + 1];
	enum kind k;

	if (uri_parse(arg, &k, name, sizeof(name)) < 0)
		return -EINVAL;
	snprintf(desc, sz, "%s", arg);
	return 0;
}

static int sound_export(const struct applet *self, int argc, char **argv)
{
	return admin_export_applet(self, argc, argv, "sound", sound_describe,
				   "export takes one SOUND-URI");
}

/* A device for a local SOUND-URI (through the Mixer) or a ref. */
static int device_get(struct admin *a, struct cap *mixer, const char *uri, struct cap **out)
{
	struct msg p;

	if (!strncmp(uri, "ref://", 6))
		return admin_restore(a, uri, out);
	msg_init(&p);
	msg_put_str(&p, uri);
	return admin_call_cap(a, mixer, IFACE_MIXER, MIXER_GET_DEVICE, &p, out,
			      "cannot open the sound device");
}

static int sound_bind(const struct applet *self, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "admin-socket", required_argument, NULL, 'a' },
		{ 0 }
	};
	const char *sock = NULL;
	struct cap *mixer = NULL, *sink = NULL, *source = NULL;
	struct msg p, res;
	struct admin a;
	int c, r = EXIT_FAIL;

	optind = 1;
	while ((c = getopt_long(argc, argv, "a:", opts, NULL)) != -1) {
		if (c == 'a')
			sock = optarg;
		else
			return cli_usage_error(self, "unknown option");
	}
	if (optind != argc - 2)
		return cli_usage_error(self, "bind takes SINK-URI SOURCE-URI");
	msg_init(&res);
	if (admin_open_service(&a, sock, "sound", &mixer) < 0 ||
	    device_get(&a, mixer, argv[optind], &sink) < 0 ||
	    device_get(&a, mixer, argv[optind + 1], &source) < 0)
		goto out;
	msg_init(&p);
	msg_put_cap(&p, sink);
	if (admin_call(&a, source, IFACE_SOUND_DEVICE, SOUND_DEVICE_BIND_TO, &p, &res,
		       "cannot bind the devices") == 0 && admin_hold(&a, "metac sound") == 0)
		r = EXIT_OK;
out:
	msg_free(&res); /* holds the holder: dropping it ends the binding */
	cap_unref(source);
	cap_unref(sink);
	cap_unref(mixer);
	admin_close(&a);
	return r;
}

static int sound_list(const struct applet *self, int argc, char **argv)
{
	struct msg res;
	struct msg_rd rd;
	struct admin a;
	uint64_t n = 0;
	int json, r;

	msg_init(&res);
	if ((r = admin_list_call(self, argc, argv, "sound", IFACE_MIXER, MIXER_GET_DEVICES, &a,
				 &res, &json)) != EXIT_OK)
		goto out;
	msg_rd_init(&rd, &res);
	msg_get_u64(&rd, &n);
	if (json)
		printf("[");
	for (uint64_t i = 0; i < n; i++) {
		char name[256], state[64];
		int sink = 0;
		if (msg_get_str(&rd, name, sizeof(name)) < 0 || msg_get_bool(&rd, &sink) < 0 ||
		    msg_get_str(&rd, state, sizeof(state)) < 0)
			break;
		if (json) {
			printf("%s{\"name\":", i ? "," : "");
			cli_json_str(stdout, name);
			printf(",\"kind\":\"%s\",\"state\":", sink ? "sink" : "source");
			cli_json_str(stdout, state);
			printf("}");
		} else {
			printf("%-6s %-48s %s\n", sink ? "sink" : "source", name, state);
		}
	}
	if (json)
		printf("]\n");
out:
	msg_free(&res);
	admin_close(&a);
	return r;
}

static int sound_session(const struct applet *self, int argc, char **argv)
{
	return session_main(SANDBOX_SOUND, argc, argv);
}

int sound_main(int argc, char **argv)
{
	static const struct cli_command cmds[] = {
		{ "export", sound_export },
		{ "bind", sound_bind },
		{ "list", sound_list },
		{ "_session", sound_session },
		{ 0 }
	};
	return cli_dispatch(applet_find("sound"), cmds, argc, argv);
}
