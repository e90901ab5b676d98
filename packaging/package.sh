#!/usr/bin/env bash
# Builds the pspf-edge packages from the binaries of scripts/cross-build.sh:
#
#   dist/pspf-edge_VERSION_armhf.deb   the armv6 binary: every Raspberry Pi on
#                                      a 32-bit OS, Pi Zero and Pi 1 included
#   dist/pspf-edge_VERSION_arm64.deb   64-bit Raspberry Pi OS, arm64 gateways
#   dist/pspf-edge_VERSION_amd64.deb   x86-64 gateways
#   dist/pspf-edge-VERSION-linux-TARGET.tar.gz   for systems without dpkg,
#                                      one per target (armv6 armv7 arm64 amd64)
#
#   packaging/package.sh                  # every target
#   packaging/package.sh amd64 armv6      # some of them
#
# Why the armhf package holds the armv6 binary: Raspberry Pi OS 32-bit is
# "armhf" for dpkg on every board, the ARMv6 Pi Zero and Pi 1 included, and
# a GOARM=7 binary dies there with SIGILL. The GOARM=6 binary runs on all of
# them and on ARMv7 boards; the armv7 build is in its tarball.
#
# DIST changes the output directory, VERSION the version (default: from git
# describe), NFPM the nfpm binary (default: nfpm v2.45.2, built once into
# .cache/tools with `go install`, which leaves go.mod alone).
set -euo pipefail
cd "$(dirname "$0")/.."

nfpm_version=v2.45.2
out=${DIST:-dist}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(armv6 armv7 arm64 amd64)

desc=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
export VERSION=$desc
# A Debian version must start with a digit: a v1.2.3 tag gives 1.2.3 (and
# 1.2.3+4.gabcdef for 4 commits after it); no tag gives 0.0~gitDATE.HASH.
case "$desc" in
v[0-9]*.* | [0-9]*.[0-9]*)
	pkg_version=$(printf '%s' "${desc#v}" | sed -e 's/-\([0-9][0-9]*\)-g/+\1.g/' -e 's/-dirty$/+dirty/' -e 's/-/~/g')
	;;
*)
	day=$(git log -1 --format=%cd --date=format:%Y%m%d 2>/dev/null || date -u +%Y%m%d)
	pkg_version="0.0~git$day.$(printf '%s' "$desc" | sed -e 's/-dirty$/+dirty/' -e 's/[^A-Za-z0-9.+~]/./g')"
	;;
esac

nfpm=${NFPM:-}
if [ -z "$nfpm" ]; then
	tools=$PWD/.cache/tools/nfpm-$nfpm_version
	nfpm=$tools/nfpm
	if [ ! -x "$nfpm" ]; then
		echo "package: building nfpm $nfpm_version into $tools" >&2
		GOBIN=$tools GOFLAGS=-buildvcs=false go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$nfpm_version"
	fi
fi

for t in "${targets[@]}"; do
	case "$t" in
	armv6 | armv7 | arm64 | amd64) ;;
	*) echo "package: unknown target $t (armv6 armv7 arm64 amd64)" >&2; exit 2 ;;
	esac
done
DIST=$out scripts/cross-build.sh "${targets[@]}" >/dev/null

# The files every package and tarball carries besides the binary, staged once.
stage_common=$(mktemp -d)
trap 'rm -rf "$stage_common"' EXIT
# The examples, but not pipelines/demo.yaml: it writes to .run/ (make run's
# directory), which the unit's read-only sandbox refuses; the packaged demo
# is /etc/pspf-edge/pipelines/demo.yaml.example, writing to the data directory.
# An example that needs a connector this build leaves out (TAGS, e.g. the
# PostgreSQL sink under no_postgres) is not shipped: the installed binary
# would refuse it. A host build with the same tags judges each example.
tags=${TAGS-no_postgres,nethttpomithttp2}
mkdir -p "$stage_common/examples"
CGO_ENABLED=0 go build -tags "$tags" -o "$stage_common/pspf-edge-host" ./cmd/pspf-edge
for f in pipelines/*.yaml; do
	[ "$(basename "$f")" = demo.yaml ] && continue
	if res=$("$stage_common/pspf-edge-host" validate "$f" 2>&1); then
		install -m 0644 "$f" "$stage_common/examples/"
	elif grep -q 'unknown \(source\|sink\|operator\) type' <<<"$res"; then
		echo "package: $f not shipped: it uses a connector this build (tags: $tags) leaves out" >&2
	else
		printf 'package: example %s is invalid:\n%s\n' "$f" "$res" >&2
		exit 1
	fi
done
rm -f "$stage_common/pspf-edge-host"
# changelog.gz, in Debian's format: one entry for this version, with the
# commits since the previous tag (every commit when there is none).
{
	printf 'pspf-edge (%s) unstable; urgency=medium\n\n' "$pkg_version"
	range=HEAD
	if prev=$(git describe --tags --abbrev=0 HEAD^ 2>/dev/null); then range=$prev..HEAD; fi
	if subjects=$(git log --no-merges --format='%s' "$range" 2>/dev/null) && [ -n "$subjects" ]; then
		printf '%s\n' "$subjects" | sed 's/^/  * /'
	else
		printf '  * Built from a tree without git history.\n'
	fi
	when=$(git log -1 --format=%cD 2>/dev/null || date -R)
	printf '\n -- pspf-edge maintainers <pspf-edge@users.noreply.github.com>  %s\n' "$when"
} | gzip -9n >"$stage_common/changelog.gz"

# copyright DIR TARGET: the package's copyright file. The binary is static:
# it carries the Go standard library and every module it imports, so their
# licenses go in with it (what `go list -deps` says that target links).
copyright() {
	local goarch goarm path version dir lic
	case "$2" in
	armv6) goarch=arm goarm=6 ;;
	armv7) goarch=arm goarm=7 ;;
	*) goarch=$2 goarm= ;;
	esac
	{
		cat <<-'EOF'
		pspf-edge: the edge stream-processing agent
		Upstream: https://github.com/pspf/pspf-edge
		Copyright: the pspf-edge authors

		/usr/bin/pspf-edge is a static Go binary. Besides pspf-edge's own code it
		contains the Go standard library and the Go modules below, each under the
		license reproduced here from its source.
		EOF
		printf '\n==== Go %s (the standard library) ====\n\n' "$(go env GOVERSION)"
		cat "$(go env GOROOT)/LICENSE"
		CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm \
			go list -tags "$tags" -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' ./cmd/pspf-edge |
			sort -u | while read -r path version dir; do
				lic=$(find "$dir" -maxdepth 1 -type f \( -iname 'LICENSE*' -o -iname 'LICENCE*' -o -iname 'COPYING*' \) | sort | head -1)
				[ -n "$lic" ] || { echo "package: no license file in $path $version ($dir)" >&2; exit 1; }
				printf '\n==== %s %s ====\n\n' "$path" "$version"
				cat "$lic"
			done
	} >"$1/copyright"
}

built=()
for t in "${targets[@]}"; do
	bin=$out/pspf-edge-linux-$t
	doc=$stage_common/doc-$t
	mkdir -p "$doc"
	copyright "$doc" "$t"
	cp "$stage_common/changelog.gz" "$doc/"
	deb_arch=""
	case "$t" in
	armv6) deb_arch=armhf ;;
	arm64 | amd64) deb_arch=$t ;;
	esac
	if [ -n "$deb_arch" ]; then
		deb=$out/pspf-edge_${pkg_version}_${deb_arch}.deb
		rm -f "$deb"
		# nfpm expands variables only in some fields: fill in the config.
		conf=$(mktemp)
		sed -e "s|\${PKG_ARCH}|$deb_arch|" -e "s|\${PKG_VERSION}|$pkg_version|" -e "s|\${PKG_BINARY}|$bin|" \
			-e "s|\${PKG_DOC}|$doc|" -e "s|\${PKG_EXAMPLES}|$stage_common/examples|" packaging/nfpm.yaml >"$conf"
		if ! "$nfpm" package --config "$conf" --packager deb --target "$deb" >"$conf.log" 2>&1; then
			cat "$conf.log" >&2
			rm -f "$conf" "$conf.log"
			exit 1
		fi
		rm -f "$conf" "$conf.log"
		built+=("$deb")
	fi

	# The tarball: the same files as the package, laid out to copy by hand
	# (docs/install.md, "From the tarball").
	name=pspf-edge-$pkg_version-linux-$t
	stage=$(mktemp -d)
	mkdir -p "$stage/$name/pipelines" "$stage/$name/examples"
	install -m 0755 "$bin" "$stage/$name/pspf-edge"
	install -m 0644 packaging/agent.yaml packaging/pspf-edge.service packaging/60-pspf-edge-gpio.rules docs/install.md docs/security.md "$stage/$name/"
	install -m 0644 packaging/demo.yaml.example "$stage/$name/pipelines/"
	install -m 0644 "$stage_common"/examples/*.yaml "$stage/$name/examples/"
	install -m 0644 "$doc/copyright" "$doc/changelog.gz" "$stage/$name/"
	tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -czf "$out/$name.tar.gz" "$name"
	rm -rf "$stage"
	built+=("$out/$name.tar.gz")
done

(cd "$out" && sha256sum "${built[@]##*/}" >SHA256SUMS.packages)
printf '\n%-60s %12s %8s\n' package bytes MiB
for f in "${built[@]}"; do
	size=$(stat -c %s "$f")
	awk -v n="$(basename "$f")" -v s="$size" 'BEGIN { printf "%-60s %12d %8.2f\n", n, s, s/1048576 }'
done
