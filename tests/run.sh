#!/bin/bash
# Runs every unit test binary and every integration script, then prints
# "N passed, N failed" and exits non-zero if anything failed.
# Unit binaries print one PASS/FAIL line per test; an integration script
# is one test: exit 0 passes, 77 skips (with its reason on stderr), any
# other status fails. A binary that crashes counts as one more failure.
set -u
cd "$(dirname "$0")/.."
: "${METAC:=$PWD/metac}"
: "${UNIT_DIR:=$PWD/build/rel/tests}"
: "${TEST_TIMEOUT:=600}"
export METAC
pass=0 fail=0 skip=0
failed_names=()
log=$(mktemp -d /tmp/metac-test.XXXXXX)

for bin in "$UNIT_DIR"/test_*; do
	[ -x "$bin" ] || continue
	name=$(basename "$bin")
	[ -n "${ONLY:-}" ] && [[ $name != *$ONLY* ]] && continue
	out="$log/$name.out"
	timeout "$TEST_TIMEOUT" "$bin" >"$out" 2>"$log/$name.err"
	rc=$?
	p=$(grep -c '^PASS ' "$out")
	f=$(grep -c '^FAIL ' "$out")
	pass=$((pass + p)); fail=$((fail + f))
	grep '^FAIL ' "$out" | while read -r _ n; do echo "FAIL $n"; done
	if [ "$f" -gt 0 ] || [ "$rc" -ne 0 ]; then
		[ "$f" -eq 0 ] && { fail=$((fail + 1)); echo "FAIL $name (exit $rc)"; }
		failed_names+=("$name")
		sed 's/^/  | /' "$log/$name.err" | tail -n 40
	fi
	echo "unit $name: $p passed, $f failed"
done

for t in tests/integration/*.sh; do
	[ -f "$t" ] || continue
	name=$(basename "$t" .sh)
	[ -n "${ONLY:-}" ] && [[ $name != *$ONLY* ]] && continue
	start=$(date +%s)
	timeout "$TEST_TIMEOUT" bash "$t" >"$log/$name.log" 2>&1
	rc=$?
	secs=$(( $(date +%s) - start ))
	if [ $rc -eq 0 ]; then
		pass=$((pass + 1)); echo "PASS integration:$name (${secs}s)"
	elif [ $rc -eq 77 ]; then
		skip=$((skip + 1)); echo "SKIP integration:$name: $(tail -n 1 "$log/$name.log")"
	else
		fail=$((fail + 1)); failed_names+=("$name")
		echo "FAIL integration:$name (exit $rc, ${secs}s)"
		sed 's/^/  | /' "$log/$name.log" | tail -n 60
	fi
done

rm -rf "$log"
[ "$fail" -gt 0 ] && echo "failed: ${failed_names[*]}"
if [ "$skip" -gt 0 ]; then
	echo "$pass passed, $fail failed, $skip skipped"
else
	echo "$pass passed, $fail failed"
fi
[ "$fail" -eq 0 ]
