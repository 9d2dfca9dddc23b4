/*-------------------------------------------------------------------------
 *
 * writer_counters.h
 *	  Transactions that changed secretenv.secrets, counted cluster-wide.
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_WRITER_COUNTERS_H
#define SECRETENV_WRITER_COUNTERS_H

/* writer_counters.c: the counters live in shared memory, only when preloaded */
extern void se_writers_init(void);
extern void se_writer_started(void);
extern bool se_writers_in_flight(void);
extern bool se_writer_counted(void);

#endif							/* SECRETENV_WRITER_COUNTERS_H */
