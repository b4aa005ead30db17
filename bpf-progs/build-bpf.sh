#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# Rebuilds bpf-progs/policyc.bpf.o from bpf-progs/c/policyc.bpf.c.
#
#   bpf-progs/build-bpf.sh          rebuild the object in place
#   bpf-progs/build-bpf.sh --check  rebuild into a temporary file and fail if it differs
#                                   from the committed object
#
# The object is committed so that `cargo build` never needs clang; `--check` is how CI
# proves that the committed bytes come from the committed source. For that the build must
# be reproducible: it runs from bpf-progs/ with relative paths, maps the build directory
# to "." in debug info, and strips DWARF (which records that directory) while keeping
# .BTF and .BTF.ext, which the loader needs. The same clang then gives the same bytes
# from any checkout path. Another clang version may emit other code, so the committed
# object is built with the clang named in EXPECTED_CLANG_MAJOR below.
#
# Needs clang, llvm-strip and the libbpf headers:
#   apt-get install -y clang llvm libbpf-dev
# CLANG and LLVM_STRIP override the tool names (e.g. CLANG=clang-14).

set -eu

EXPECTED_CLANG_MAJOR=14
STALE_MESSAGE="committed object is stale: run bpf-progs/build-bpf.sh"

CLANG=${CLANG:-clang}
LLVM_STRIP=${LLVM_STRIP:-llvm-strip}

die() {
	echo "build-bpf.sh: $*" >&2
	exit 1
}

usage() {
	echo "usage: bpf-progs/build-bpf.sh [--check]" >&2
	exit 2
}

check=0
case "${1-}" in
"") ;;
--check) check=1 ;;
*) usage ;;
esac
[ $# -le 1 ] || usage

command -v "$CLANG" >/dev/null 2>&1 ||
	die "$CLANG not found: install it with 'apt-get install -y clang llvm libbpf-dev'"
command -v "$LLVM_STRIP" >/dev/null 2>&1 ||
	die "$LLVM_STRIP not found: install it with 'apt-get install -y llvm'"
[ -f /usr/include/bpf/bpf_helpers.h ] ||
	die "libbpf headers not found: install them with 'apt-get install -y libbpf-dev'"

clang_version=$("$CLANG" --version | head -n 1)
clang_major=$("$CLANG" -dumpversion | cut -d . -f 1)
if [ "$clang_major" != "$EXPECTED_CLANG_MAJOR" ]; then
	echo "build-bpf.sh: warning: $clang_version is not clang $EXPECTED_CLANG_MAJOR;" \
		"the object may differ from one built by clang $EXPECTED_CLANG_MAJOR" >&2
fi

# <linux/types.h> includes <asm/types.h>, which Debian installs under the host's multiarch
# directory; the bpf target has none of its own.
multiarch=$("$CLANG" -print-multiarch 2>/dev/null || true)
[ -n "$multiarch" ] || multiarch=$(gcc -print-multiarch 2>/dev/null || true)
[ -n "$multiarch" ] && [ -f "/usr/include/$multiarch/asm/types.h" ] ||
	die "asm/types.h not found under /usr/include/${multiarch:-<multiarch>}:" \
		"install linux-libc-dev"

cd "$(dirname "$0")"

tmpdir=$(mktemp -d)
trap 'rm -rf "$tmpdir"' EXIT
built="$tmpdir/policyc.bpf.o"

"$CLANG" -O2 -g -target bpf -mcpu=v3 \
	-Wall -Wextra -Werror \
	-fdebug-prefix-map="$PWD"=. \
	-I"/usr/include/$multiarch" \
	-c c/policyc.bpf.c -o "$built"
"$LLVM_STRIP" -g "$built"

if [ "$check" -eq 1 ]; then
	[ -f policyc.bpf.o ] || die "$STALE_MESSAGE (bpf-progs/policyc.bpf.o is missing)"
	if ! cmp -s "$built" policyc.bpf.o; then
		die "$STALE_MESSAGE (rebuilt with $clang_version, the bytes differ)"
	fi
	echo "bpf-progs/policyc.bpf.o matches bpf-progs/c/policyc.bpf.c ($clang_version)"
else
	cp "$built" policyc.bpf.o.tmp
	mv policyc.bpf.o.tmp policyc.bpf.o
	echo "wrote bpf-progs/policyc.bpf.o ($clang_version)"
fi
