/*-------------------------------------------------------------------------
 *
 * versions.h
 *	  Secret versions, staged rotation and deletion with recovery
 *	  (DESIGN section 8c): the C side.  The tables, the write functions and
 *	  the trigger that keeps versions are SQL, in the install script.
 *
 * version_settings.c	secretenv.max_versions, secretenv.delete_recovery_window
 * version_get.c		secret_get(name, version), secret_get(name, label)
 * version_audit.c		audit records of stage, promote and rollback
 *
 *-------------------------------------------------------------------------
 */
#ifndef SECRETENV_VERSIONS_H
#define SECRETENV_VERSIONS_H

#include "audit/audit.h"

/* version_settings.c */
extern void se_versions_init(void);

/* version_audit.c */
extern SeAuditOp se_versions_take_noted_operation(SeAuditOp otherwise);

#endif							/* SECRETENV_VERSIONS_H */
