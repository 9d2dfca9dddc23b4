/*-------------------------------------------------------------------------
 *
 * passphrase_command.c
 *	  Running the KEK commands: secretenv.kek_passphrase_command, and the
 *	  key commands secretenv.kek_key_command and kek_previous_key_command.
 *
 * A command is run with /bin/sh -c, its %v replaced by the KEK version and
 * %% by a percent sign, like ssl_passphrase_command.  The first line of its
 * output (up to the first CR or LF) is the passphrase, or for a key command
 * the KEK itself: 32 bytes as 64 hex digits or as padded base64, and nothing
 * after that line (a key command's output has no room for interpretation).
 * Both kinds share every rule below and the timeout setting.
 *
 * Bounded wait.  With shared_preload_libraries the postmaster runs the
 * command inside _PG_init and, in PostgreSQL 15, inside its SIGHUP handler
 * (the handler calls ProcessConfigFile, at the end of which the keyring
 * re-derives the KEKs).  A postmaster blocked there accepts no connection, reaps no child
 * and answers no shutdown request, so it must never wait unboundedly:
 * popen's blocking reads are out.  The command is forked in a process group
 * of its own, its output read through a pipe with poll() against a deadline
 * (secretenv.kek_passphrase_command_timeout), and on the deadline the whole
 * group is sent SIGTERM, then SIGKILL after a short grace, and reaped.
 *
 * Signals.  The postmaster keeps every signal blocked except while it waits
 * in ServerLoop, and its handlers run with every signal blocked, so its
 * SIGCHLD handler (which reaps with waitpid(-1)) cannot take our child from
 * us, and a shutdown request waits until we return, at most the timeout.
 * The child inherits that mask and the postmaster's ignored SIGPIPE, so it
 * resets every handler to the default and unblocks everything before exec:
 * otherwise SIGTERM could not stop it and a writer to a closed pipe would
 * spin instead of dying.  A backend's handlers only set flags, which poll's
 * EINTR (and a short poll slice, against the race before poll) lets us see:
 * a query cancel or termination request kills the command at once rather
 * than after the timeout.
 *
 * Secrecy.  The passphrase only ever travels through the command's stdout:
 * never a command line or an environment variable of any process.  The
 * output is read in full, so that the command never dies of SIGPIPE and a
 * NUL byte anywhere in it is seen (an error, not a silent truncation of the
 * passphrase), into stack buffers that are wiped on every path.  Nothing the
 * command prints is logged or quoted in a message; a failure is described by
 * its exit status or by which rule the output broke.  The child's stdin is
 * /dev/null; its stderr is the server's, as for the server's own commands.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "crypto/se_crypto.h"
#include "keys/passphrase_command.h"
#include "pg_compat.h"
#include "se_messages.h"

#define DEFAULT_TIMEOUT_S 30
#define MAX_TIMEOUT_S 3600

/* How long a command killed with SIGTERM has before SIGKILL. */
#define TERM_GRACE_MS 1000

/*
 * In a backend, the longest poll() between two looks at the interrupt
 * flags: a cancel that arrives just before poll() is seen this late.
 */
#define INTERRUPT_SLICE_MS 100

static int	passphrase_command_timeout = DEFAULT_TIMEOUT_S;

pg_noreturn static void exec_command(const char *command, int out_fd, int null_fd);

/* What the output read so far says about the passphrase. */
typedef struct OutputState
{
	size_t		len;			/* bytes of the first line in buf */
	bool		line_done;		/* a CR or LF ended the first line */
	bool		too_long;		/* the first line did not fit in buf */
	bool		nul;			/* a NUL byte anywhere in the output */
	bool		more_lines;		/* something but CR or LF after the first line */
} OutputState;

static int64
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A backend was asked to cancel its query or to exit. */
static bool
interrupt_requested(void)
{
	return IsUnderPostmaster && InterruptPending &&
		(QueryCancelPending || ProcDiePending);
}

/*
 * Before each wait for the command: the milliseconds left until the
 * deadline go to *remaining; returns true, with *timed_out or *interrupted
 * set, when the wait must stop instead.
 */
static bool
must_stop_waiting(int64 deadline, int64 *remaining,
				  bool *timed_out, bool *interrupted)
{
	*remaining = deadline - now_ms();
	if (*remaining <= 0)
	{
		*timed_out = true;
		return true;
	}
	if (interrupt_requested())
	{
		*interrupted = true;
		return true;
	}
	return false;
}

/* The command line: %v is the version, %% a percent sign. */
static char *
expand_command(const char *template, int32 version)
{
	StringInfoData command;

	initStringInfo(&command);
	for (const char *p = template; *p; p++)
	{
		if (p[0] == '%' && p[1] == 'v')
		{
			appendStringInfo(&command, "%d", version);
			p++;
		}
		else if (p[0] == '%' && p[1] == '%')
		{
			appendStringInfoChar(&command, '%');
			p++;
		}
		else
			appendStringInfoChar(&command, *p);
	}
	return command.data;
}

/*
 * Make from the descriptor to, without close-on-exec.  dup2 onto itself
 * would keep the flag, so clear it instead.
 */
static bool
move_fd(int from, int to)
{
	if (from == to)
		return fcntl(to, F_SETFD, 0) == 0;
	return dup2(from, to) >= 0;
}

/*
 * The forked child.  Only async-signal-safe calls until exec: the parent
 * may be the postmaster inside a signal handler.
 */
static void
exec_command(const char *command, int out_fd, int null_fd)
{
	struct sigaction dfl;
	sigset_t	none;

	/* Handlers first, then the mask: no inherited handler may run here. */
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			(void) sigaction(sig, &dfl, NULL);
	sigemptyset(&none);
	(void) sigprocmask(SIG_SETMASK, &none, NULL);

	/* A group of its own, so that a timeout kills what the command spawned. */
	(void) setpgid(0, 0);

	if (!move_fd(null_fd, STDIN_FILENO) || !move_fd(out_fd, STDOUT_FILENO))
		_exit(127);
	execl("/bin/sh", "sh", "-c", command, (char *) NULL);
	_exit(127);
}

/*
 * Whether the child has exited, leaving it unreaped (WNOWAIT): while it is
 * a zombie its pid, which is also its process group id, cannot be reused,
 * so signalling the group stays safe.  ECHILD (someone reaped it, or
 * SIGCHLD is ignored) counts as exited.
 */
static bool
child_exited(pid_t pid)
{
	siginfo_t	info;

	for (;;)
	{
		memset(&info, 0, sizeof(info));
		if (waitid(P_PID, pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0)
			return info.si_pid != 0;
		if (errno != EINTR)
			return true;
	}
}

/* SIGTERM to the command's group, SIGKILL after the grace period. */
static void
kill_command(pid_t pid)
{
	(void) kill(-pid, SIGTERM);
	for (int waited = 0; waited < TERM_GRACE_MS && !child_exited(pid); waited += 10)
		pg_usleep(10 * 1000L);
	/* Also whatever outlived the shell in its group. */
	(void) kill(-pid, SIGKILL);
}

/*
 * Describe an unsuccessful wait status.  Like wait_result_to_str, but into
 * a caller's buffer: nothing may throw while buf holds part of the output.
 */
static void
describe_exit(int status, char *reason, size_t reasonsize)
{
	if (WIFEXITED(status))
		snprintf(reason, reasonsize, "it exited with exit code %d%s",
				 WEXITSTATUS(status),
				 WEXITSTATUS(status) == 127 ? " (command not found)" :
				 WEXITSTATUS(status) == 126 ? " (command not executable)" : "");
	else if (WIFSIGNALED(status))
		snprintf(reason, reasonsize, "it was terminated by signal %d: %s",
				 WTERMSIG(status), pg_strsignal(WTERMSIG(status)));
	else
		snprintf(reason, reasonsize, "it exited with unrecognized status %d", status);
}

/* Account for one chunk of output; copy the first line into buf. */
static void
consume_output(OutputState *st, const char *chunk, size_t n,
			   char *buf, size_t bufsize)
{
	if (memchr(chunk, '\0', n) != NULL)
		st->nul = true;
	for (size_t i = 0; i < n; i++)
	{
		if (chunk[i] == '\n' || chunk[i] == '\r')
			st->line_done = true;
		else if (st->line_done)
			st->more_lines = true;
		else if (st->len < bufsize - 1)
			buf[st->len++] = chunk[i];
		else
			st->too_long = true;
	}
}

/*
 * Run a command (a passphrase command, or a key command, which must print
 * one line only) for a version and put the first line of its output,
 * NUL-terminated, into buf (at most bufsize - 1 bytes).  On any result
 * other than SE_PASSPHRASE_OK, buf is wiped and reason holds a lower-case
 * clause for an error detail ("it timed out after 30 s and was killed"),
 * never anything the command printed.  Never throws once the
 * command runs (only out-of-memory while building its command line can),
 * so no ERROR ever unwinds past output left unwiped.
 */
static se_passphrase_result
run_command(const char *command, int32 version, bool key_command,
			char *buf, size_t bufsize, char *reason, size_t reasonsize)
{
	char	   *cmdline;
	char		chunk[512];
	OutputState st;
	int			pipefd[2];
	int			null_fd;
	pid_t		pid;
	int			timeout_s = passphrase_command_timeout;
	int64		deadline;
	bool		eof = false;
	bool		timed_out = false;
	bool		interrupted = false;
	int			read_errno = 0;
	int			wait_status = 0;
	int			wait_errno = 0;
	se_passphrase_result result;

	Assert(bufsize >= 2);
	memset(&st, 0, sizeof(st));
	reason[0] = '\0';

	cmdline = expand_command(command, version);

	null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (null_fd < 0)
	{
		snprintf(reason, reasonsize, "it could not be started: could not open /dev/null: %s",
				 strerror(errno));
		pfree(cmdline);
		se_wipe(buf, bufsize);
		return SE_PASSPHRASE_FAILED;
	}
	/* Close-on-exec: the command gets its stdout, no stray copy of either end. */
	if (pipe(pipefd) < 0 ||
		fcntl(pipefd[0], F_SETFD, FD_CLOEXEC) < 0 ||
		fcntl(pipefd[1], F_SETFD, FD_CLOEXEC) < 0)
	{
		snprintf(reason, reasonsize, "it could not be started: could not create a pipe: %s",
				 strerror(errno));
		close(null_fd);
		pfree(cmdline);
		se_wipe(buf, bufsize);
		return SE_PASSPHRASE_FAILED;
	}

	/* The child only execs or _exits: it never flushes our stdio buffers. */
	pid = fork();
	if (pid == 0)
		exec_command(cmdline, pipefd[1], null_fd);
	if (pid < 0)
	{
		snprintf(reason, reasonsize, "it could not be started: could not fork: %s",
				 strerror(errno));
		close(pipefd[0]);
		close(pipefd[1]);
		close(null_fd);
		pfree(cmdline);
		se_wipe(buf, bufsize);
		return SE_PASSPHRASE_FAILED;
	}
	/* Also here, so that a kill right after fork finds the group. */
	(void) setpgid(pid, pid);
	close(pipefd[1]);
	close(null_fd);
	pfree(cmdline);

	/* Read everything until EOF, the deadline or an interrupt. */
	deadline = now_ms() + (int64) timeout_s * 1000;
	for (;;)
	{
		int64		remaining;
		struct pollfd pfd;
		int			rc;
		ssize_t		n;

		if (must_stop_waiting(deadline, &remaining, &timed_out, &interrupted))
			break;
		if (IsUnderPostmaster)
			remaining = Min(remaining, INTERRUPT_SLICE_MS);

		pfd.fd = pipefd[0];
		pfd.events = POLLIN;
		pfd.revents = 0;
		rc = poll(&pfd, 1, (int) remaining);
		if (rc < 0)
		{
			if (errno == EINTR)
				continue;
			read_errno = errno;
			break;
		}
		if (rc == 0)
			continue;

		n = read(pipefd[0], chunk, sizeof(chunk));
		if (n < 0)
		{
			if (errno == EINTR || errno == EAGAIN)
				continue;
			read_errno = errno;
			break;
		}
		if (n == 0)
		{
			eof = true;
			break;
		}
		consume_output(&st, chunk, (size_t) n, buf, bufsize);
	}
	se_wipe(chunk, sizeof(chunk));
	close(pipefd[0]);

	/*
	 * EOF is not exit: a command may close its stdout and go on running.
	 * Wait for the exit against the same deadline.
	 */
	if (eof)
	{
		long		sleep_ms = 1;
		int64		remaining;

		while (!child_exited(pid) &&
			   !must_stop_waiting(deadline, &remaining, &timed_out, &interrupted))
		{
			pg_usleep(Min(sleep_ms, remaining) * 1000L);
			sleep_ms = Min(sleep_ms * 2, INTERRUPT_SLICE_MS);
		}
	}
	if (!eof || timed_out || interrupted)
		kill_command(pid);

	/* Reap it: no zombie is left behind, whatever happened. */
	while (waitpid(pid, &wait_status, 0) < 0)
	{
		if (errno != EINTR)
		{
			wait_errno = errno;
			break;
		}
	}

	buf[st.len] = '\0';
	result = SE_PASSPHRASE_FAILED;
	if (timed_out)
	{
		result = SE_PASSPHRASE_TIMED_OUT;
		snprintf(reason, reasonsize, "it timed out after %d s and was killed",
				 timeout_s);
	}
	else if (interrupted)
	{
		result = SE_PASSPHRASE_INTERRUPTED;
		snprintf(reason, reasonsize, "it was killed on a cancel or termination request");
	}
	else if (read_errno != 0)
		snprintf(reason, reasonsize, "could not read its output: %s",
				 strerror(read_errno));
	else if (wait_errno != 0)
		snprintf(reason, reasonsize, "could not wait for it to exit: %s",
				 strerror(wait_errno));
	else if (wait_status != 0)
		describe_exit(wait_status, reason, reasonsize);
	else if (st.nul)
	{
		result = SE_PASSPHRASE_BAD_OUTPUT;
		snprintf(reason, reasonsize, "its output contains a NUL byte");
	}
	else if (st.too_long)
	{
		result = SE_PASSPHRASE_BAD_OUTPUT;
		snprintf(reason, reasonsize, "its first output line is longer than %d bytes",
				 (int) (bufsize - 1));
	}
	else if (st.len == 0)
	{
		result = SE_PASSPHRASE_BAD_OUTPUT;
		snprintf(reason, reasonsize, "it printed no %s line",
				 key_command ? "key" : "passphrase");
	}
	else if (key_command && st.more_lines)
	{
		result = SE_PASSPHRASE_BAD_OUTPUT;
		snprintf(reason, reasonsize, "it printed more than one line");
	}
	else
		result = SE_PASSPHRASE_OK;

	if (result != SE_PASSPHRASE_OK)
		se_wipe(buf, bufsize);
	return result;
}

/*
 * Run the passphrase command for a version and put the first line of its
 * output, NUL-terminated, into buf (at most bufsize - 1 bytes).  On any
 * result other than SE_PASSPHRASE_OK, buf is wiped and reason holds a
 * lower-case clause for an error detail, never anything the command
 * printed.
 */
se_passphrase_result
se_passphrase_command_run(const char *command, int32 version,
						  char *buf, size_t bufsize,
						  char *reason, size_t reasonsize)
{
	return run_command(command, version, false, buf, bufsize, reason, reasonsize);
}

static int
base64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * How many bytes a padded standard base64 text of len characters encodes,
 * or -1 if it is not one.
 */
static int
base64_decoded_len(const char *text, size_t len)
{
	size_t		pad = 0;

	if (len == 0 || len % 4 != 0)
		return -1;
	while (pad < 2 && text[len - 1 - pad] == '=')
		pad++;
	for (size_t i = 0; i < len - pad; i++)
		if (base64_value(text[i]) < 0)
			return -1;
	return (int) (len / 4 * 3 - pad);
}

/* Decode base64 of exactly SE_KEY_LEN bytes (checked by the caller). */
static void
base64_decode_key(const char *text, uint8_t key[SE_KEY_LEN])
{
	uint32_t	acc = 0;
	int			bits = 0;
	size_t		out = 0;

	for (const char *p = text; *p && *p != '=' && out < SE_KEY_LEN; p++)
	{
		acc = (acc << 6) | (uint32_t) base64_value(*p);
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			key[out++] = (uint8_t) (acc >> bits);
		}
	}
	se_wipe(&acc, sizeof(acc));	/* it held key bits */
}

/*
 * A key command's line as a KEK: 64 hex digits (either case) or padded
 * base64 of 32 bytes.  False, with the reason, for anything else; the
 * reason says what the line looks like, never what it holds.
 */
static bool
parse_key_line(const char *line, uint8_t key[SE_KEY_LEN],
			   char *reason, size_t reasonsize)
{
	size_t		len = strlen(line);
	bool		all_hex = true;
	int			b64;

	for (size_t i = 0; i < len; i++)
		if (se_hex_digit(line[i]) < 0)
			all_hex = false;
	if (all_hex)
	{
		if (len != 2 * SE_KEY_LEN)
		{
			snprintf(reason, reasonsize,
					 "its first line has %d hex digits, not %d",
					 (int) len, 2 * SE_KEY_LEN);
			return false;
		}
		for (int i = 0; i < SE_KEY_LEN; i++)
			key[i] = (uint8_t) (se_hex_digit(line[2 * i]) << 4 | se_hex_digit(line[2 * i + 1]));
		return true;
	}
	b64 = base64_decoded_len(line, len);
	if (b64 < 0)
	{
		snprintf(reason, reasonsize,
				 "its first line is neither %d hex digits nor base64 of %d bytes",
				 2 * SE_KEY_LEN, SE_KEY_LEN);
		return false;
	}
	if (b64 != SE_KEY_LEN)
	{
		snprintf(reason, reasonsize,
				 "its first line is base64 of %d bytes, not %d", b64, SE_KEY_LEN);
		return false;
	}
	base64_decode_key(line, key);
	return true;
}

/*
 * Run a key command for a version and put the KEK it prints into key.  buf
 * (at least SE_KEY_LINE_MAX + 1 bytes, in secure memory) receives the
 * line and is wiped before return.  On any result other than
 * SE_PASSPHRASE_OK key is wiped and reason says why: a key command whose
 * output breaks any rule gives no key at all, never part of one.
 */
se_passphrase_result
se_key_command_run(const char *command, int32 version,
				   char *buf, size_t bufsize, uint8_t key[SE_KEY_LEN],
				   char *reason, size_t reasonsize)
{
	se_passphrase_result result;

	Assert(bufsize > SE_KEY_LINE_MAX);
	result = run_command(command, version, true, buf, SE_KEY_LINE_MAX + 1,
						 reason, reasonsize);
	if (result == SE_PASSPHRASE_OK &&
		!parse_key_line(buf, key, reason, reasonsize))
		result = SE_PASSPHRASE_BAD_OUTPUT;
	se_wipe(buf, bufsize);
	if (result != SE_PASSPHRASE_OK)
		se_wipe(key, SE_KEY_LEN);
	return result;
}

void
se_passphrase_command_init(void)
{
	DefineCustomIntVariable("secretenv.kek_passphrase_command_timeout",
							"Time the KEK passphrase command or key command may take before it is killed.",
							"A command that outlives it is killed with its process group and counts as failed.",
							&passphrase_command_timeout,
							DEFAULT_TIMEOUT_S, 1, MAX_TIMEOUT_S,
							PGC_SIGHUP,
							GUC_UNIT_S | GUC_SUPERUSER_ONLY,
							NULL, NULL, NULL);
}
