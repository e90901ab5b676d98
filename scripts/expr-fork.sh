#!/usr/bin/env bash
# Rebuilds third_party/expr: github.com/expr-lang/expr at the version go.mod
# requires (go.mod replaces it with this directory), only the packages
# pspf-edge and its tests import, with third_party/expr.patch applied.
#
# The patch takes out expr's calls of reflect's Method and MethodByName with
# a name known only at run time (methods of the values an expression works
# on). One such call anywhere in a binary makes Go's linker keep every
# exported method of every type that may end up in an interface: 2.6 MB of
# the 18.1 MB amd64 binary (2.5 of 16.6 on arm64). pspf-edge's expressions
# never call methods (records hold numbers, strings and booleans, and
# operators/expr refuses a method call at compile time), so nothing a
# pipeline can say changes. Upstream: expr-lang/expr issue 863.
# TestDeadCodeElimination (cmd/pspf-edge) fails if any package brings such a
# call back.
#
#   scripts/expr-fork.sh          # rewrite third_party/expr
#   scripts/expr-fork.sh -check   # exit 1 if third_party/expr differs
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(. ast builtin checker checker/nature compiler conf file internal/deref
  internal/ring optimizer parser parser/lexer parser/operator parser/utils
  patcher types vm vm/runtime)
mod=github.com/expr-lang/expr
version=$(go list -m -f '{{.Version}}' "$mod")
src=$(go mod download -json "$mod@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -d "$src" ] || { echo "expr-fork: no source for $mod@$version" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=$tmp/expr
mkdir -p "$out"
cp "$src/go.mod" "$src/LICENSE" "$out/"
for p in "${pkgs[@]}"; do
  mkdir -p "$out/$p"
  for f in "$src/$p"/*.go; do
    case $f in *_test.go) continue ;; esac
    cp "$f" "$out/$p/"
  done
done
chmod -R u+w "$out"
(cd "$out" && patch -s -p1 < "$OLDPWD/third_party/expr.patch")
printf '%s %s with third_party/expr.patch applied; made by scripts/expr-fork.sh\n' "$mod" "$version" > "$out/VERSION"

if [ "${1:-}" = -check ]; then
  diff -r "$out" third_party/expr && exit 0
  echo "expr-fork: third_party/expr differs from $mod@$version + third_party/expr.patch; run scripts/expr-fork.sh" >&2
  exit 1
fi
rm -rf third_party/expr
mkdir -p third_party
cp -r "$out" third_party/expr
