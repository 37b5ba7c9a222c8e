#!/bin/bash
# Runs every benchmark script in tests/bench/ (all *.sh but this one) and
# passes their output through. Benchmarks print figures and ratios and
# never fail on timing; this exits non-zero only if one of them reports
# something broken (a daemon that does not start, bytes that go missing).
# Each benchmark cleans up after itself; this stops the one running if
# it is interrupted, so that no daemon is left behind.
#   METAC=/abs/path/metac ./tests/bench/run.sh      (`make bench`)
#   ONLY=transport ./tests/bench/run.sh             one benchmark
set -u
cd "$(dirname "$0")/../.." || exit 1
: "${METAC:=$PWD/metac}"
export METAC
failed=()
child=""

stop_child() {
	[ -n "$child" ] || return 0
	kill -TERM "$child" 2>/dev/null
	# The benchmark's own trap stops its daemons; give it time to.
	for _ in $(seq 100); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$child" 2>/dev/null
	wait "$child" 2>/dev/null
	child=""
}
trap stop_child EXIT
trap 'exit 130' INT TERM

for b in tests/bench/*.sh; do
	name=$(basename "$b" .sh)
	[ "$name" = run ] && continue
	[ -n "${ONLY:-}" ] && [[ $name != *$ONLY* ]] && continue
	start=$(date +%s)
	# In the background, so that a signal reaches the trap at once.
	bash "$b" &
	child=$!
	wait "$child"
	rc=$?
	child=""
	secs=$(( $(date +%s) - start ))
	if [ $rc -eq 0 ]; then
		echo "bench $name: done (${secs}s)"
	elif [ $rc -eq 77 ]; then
		echo "bench $name: skipped"
	else
		echo "bench $name: BROKEN (exit $rc, ${secs}s)"
		failed+=("$name")
	fi
	echo
done
[ ${#failed[@]} -eq 0 ] || { echo "broken benchmarks: ${failed[*]}"; exit 1; }
