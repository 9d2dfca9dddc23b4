#!/bin/sh
#
# run.sh [VECTOR_DIR]
#	  Convert the MLflow vectors to records and run the unit tests on them.
#	  TEST_CRYPTO names the binary (default: ./test_crypto next to this
#	  script).
#
set -eu

here=$(cd "$(dirname "$0")" && pwd)
vectors=${1:-$here/../../../shared/vectors/mlflow}
binary=${TEST_CRYPTO:-$here/test_crypto}

records=$(mktemp "${TMPDIR:-/tmp}/secretenv-vectors.XXXXXX")
trap 'rm -f "$records"' EXIT INT TERM

perl "$here/vectors_to_tsv.pl" "$vectors" > "$records"
"$binary" "$records"
