# Every libFuzzer target (tests/fuzz/, built by `make check`) replays its
# seed corpus, tests/fuzz/corpus/NAME: inputs that once crashed a parser,
# and the shapes of valid messages, must run clean under ASan and UBSan.
# A short fuzzing run is `make fuzz`; this only replays.
set -u
cd "$(dirname "$0")/../.." || exit 1
: "${FUZZ_DIR:=$PWD/build/fuzz}"
n=0
for f in "$FUZZ_DIR"/fuzz_*; do
	[ -x "$f" ] || continue
	name=$(basename "$f")
	corpus=tests/fuzz/corpus/$name
	[ -d "$corpus" ] || { echo "FAIL: $name has no seed corpus in $corpus"; exit 1; }
	if ! "$f" -runs=0 "$corpus" >"/tmp/fuzz_corpus.$$.log" 2>&1; then
		echo "FAIL: $name crashed on its seed corpus:"
		tail -n 40 "/tmp/fuzz_corpus.$$.log"
		rm -f "/tmp/fuzz_corpus.$$.log"
		exit 1
	fi
	n=$((n + 1))
done
rm -f "/tmp/fuzz_corpus.$$.log"
[ $n -gt 0 ] || { echo "FAIL: no fuzz targets in $FUZZ_DIR (make fuzz-build)"; exit 1; }
for t in tests/fuzz/fuzz_*.c; do
	[ -x "$FUZZ_DIR/$(basename "$t" .c)" ] || { echo "FAIL: $t was not built"; exit 1; }
done
exit 0
