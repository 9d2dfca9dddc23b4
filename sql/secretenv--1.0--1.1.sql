/* sql/secretenv--1.0--1.1.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION secretenv UPDATE TO '1.1'" to load this file. \quit

/*
 * Upgrade from 1.0 to 1.1.  After this script a 1.0 database holds exactly
 * the objects, privileges, comments and triggers of a fresh 1.1 install
 * (checked by test/t/070_upgrade_equivalence.pl); stored rows are not
 * touched: the on-disk format is the same.
 */
