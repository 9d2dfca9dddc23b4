/* sql/secretenv--1.1--1.2.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION secretenv UPDATE TO '1.2'" to load this file. \quit

/*
 * Upgrade from 1.1 to 1.2.  After this script a 1.1 database holds exactly
 * the objects, privileges, comments and triggers of a fresh 1.2 install
 * (checked by test/t/070_upgrade_equivalence.pl); stored rows keep their
 * bytes: the on-disk format of a value is the same.
 */
