#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Regenerates the seeds of the artifact_decode corpus after a change of the artifact
# format or of the datapath header (whose ABI hash every artifact carries). Without it the
# seeds fail the version or ABI check and the fuzzer, and compiler/tests/fuzz_corpus.rs,
# only ever see that first error path.
#
#   fuzz/artifact-corpus.sh
#
# - demo.artifact: the quick start's artifact, freshly compiled;
# - demo-truncated-N: its first N bytes, at the header's field boundaries, half way, just
#   before the checksum and one byte short;
# - demo-half-resealed: its first half with a valid checksum, so that the decoder meets a
#   section cut short rather than a checksum mismatch;
# - wrong-version: the demo with format version 0xffff, resealed;
# - every other seed (inputs the fuzzer found): version, flags and ABI hash restamped to
#   this build's and the checksum recomputed, so they still reach the code they once broke.
set -eu
cd "$(dirname "$0")/.."
dir=fuzz/corpus/artifact_decode

rm -f "$dir"/demo-truncated-*.artifact
cargo run -q --bin policyc -- compile fixtures/demo -o "$dir/demo.artifact" >/dev/null

python3 - "$dir" <<'PY'
import hashlib, pathlib, sys

d = pathlib.Path(sys.argv[1])
demo = (d / "demo.artifact").read_bytes()

def reseal(b):
    return b[:-32] + hashlib.sha256(b[:-32]).digest()

for n in [0, 4, 8, 12, 20, 52, 60, len(demo) // 2, len(demo) - 32, len(demo) - 1]:
    (d / f"demo-truncated-{n}.artifact").write_bytes(demo[:n])
half = demo[: len(demo) // 2]
(d / "demo-half-resealed.artifact").write_bytes(half + hashlib.sha256(half).digest())
(d / "wrong-version.artifact").write_bytes(reseal(demo[:8] + b"\xff\xff" + demo[10:]))

derived = {"demo.artifact", "demo-half-resealed.artifact", "wrong-version.artifact"}
for seed in sorted(d.glob("*.artifact")):
    if seed.name in derived or seed.name.startswith("demo-truncated-"):
        continue
    b = seed.read_bytes()
    if len(b) >= 52 and b[:8] == demo[:8]:
        seed.write_bytes(reseal(b[:8] + demo[8:20] + b[20:]))
PY
echo "regenerated $dir"
