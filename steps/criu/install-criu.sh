#!/bin/sh
# install-criu.sh PREFIX: install CRIU from Debian forky into a private
# prefix, leaving the system's packages and apt state untouched. CRIU 4.2
# needs a newer glibc than Debian 12 has, so it runs through the prefix's
# own loader; PREFIX/bin/criu is the wrapper that does that.
#
# Quick when already done: a stamp plus a working `criu --version`.
set -eu

PREFIX=${1:?usage: install-criu.sh PREFIX}
case $PREFIX in /*) ;; *) PREFIX=$(pwd)/$PREFIX ;; esac
STAMP=$PREFIX/.mig-installed
WRAPPER=$PREFIX/bin/criu
MIN_MAJOR=4
MIN_MINOR=2

# version_ok CRIU: true when CRIU runs and says it is at least 4.2.
version_ok() {
	v=$("$1" --version 2>/dev/null | sed -n 's/^Version: *\([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p')
	[ -n "$v" ] || return 1
	set -- $v
	[ "$1" -gt $MIN_MAJOR ] || { [ "$1" -eq $MIN_MAJOR ] && [ "$2" -ge $MIN_MINOR ]; }
}

if [ -f "$STAMP" ] && [ -x "$WRAPPER" ] && version_ok "$WRAPPER"; then
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-criu.sh: must run as root" >&2
	exit 1
fi

# The Debian mirror the machine already uses: the first URI of a non-security
# source, from deb822 files or one-line lists.
mirror() {
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk '
			/^[ \t]*$/ { if (uri != "" && !sec) { print uri; exit } uri = ""; sec = 0; next }
			/^URIs:/ { uri = $2 }
			/^Suites:/ && /-security/ { sec = 1 }
			END { if (uri != "" && !sec) print uri }
		' "$f"
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		sed -n 's/^deb[ \t]\{1,\}\(\[[^]]*\][ \t]\{1,\}\)\{0,1\}\([a-z]\{1,\}:\/\/[^ \t]*\)[ \t]\{1,\}\([^ \t]*\).*/\2 \3/p' "$f" |
			awk '$2 !~ /-security/ { print $1 }'
	done
}
MIRROR=$(mirror | head -n 1)
if [ -z "$MIRROR" ]; then
	echo "install-criu.sh: no Debian mirror found in /etc/apt/sources.list*" >&2
	exit 1
fi

KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
APT=$PREFIX/.apt
mkdir -p "$APT/parts" "$APT/lists/partial" "$APT/cache/archives/partial" "$APT/debs" "$PREFIX/bin"
echo "deb [signed-by=$KEYRING] $MIRROR forky main" >"$APT/sources.list"
set -- -o Dir::Etc::SourceList="$APT/sources.list" \
	-o Dir::Etc::SourceParts="$APT/parts" \
	-o Dir::Etc::Preferences=/dev/null \
	-o Dir::Etc::PreferencesParts="$APT/parts" \
	-o Dir::State::Lists="$APT/lists" \
	-o Dir::State::status=/dev/null \
	-o Dir::Cache="$APT/cache" \
	-o APT::Get::List-Cleanup=0 \
	-o APT::Sandbox::User=root

echo "install-criu.sh: reading forky from $MIRROR" >&2
apt-get -qq "$@" update

# Resolve CRIU's dependencies from the private state. Virtual packages are
# shown as <name> and other architectures as name:arch; skip both.
PKGS=$(apt-cache "$@" depends --recurse --no-recommends --no-suggests \
	--no-conflicts --no-breaks --no-replaces --no-enhances criu |
	grep -E '^[a-z0-9][a-z0-9+.-]*$' | sort -u)
echo "install-criu.sh: $(echo "$PKGS" | wc -l) packages:" $PKGS >&2

rm -f "$APT/debs"/*.deb
(cd "$APT/debs" && apt-get -qq "$@" download $PKGS)
for deb in "$APT/debs"/*.deb; do
	dpkg -x "$deb" "$PREFIX"
done

MULTIARCH=$(basename "$(dirname "$(ls "$PREFIX"/usr/lib/*-linux-gnu*/ld-linux*.so.* | head -n 1)")")
LOADER=$(ls "$PREFIX/usr/lib/$MULTIARCH"/ld-linux*.so.* | head -n 1)
LIBS=$PREFIX/usr/lib/$MULTIARCH:$PREFIX/lib/$MULTIARCH
cat >"$WRAPPER.tmp" <<EOF
#!/bin/sh
# CRIU from Debian forky, run with its own loader and libraries.
exec "$LOADER" --library-path "$LIBS" "$PREFIX/usr/sbin/criu" "\$@"
EOF
chmod 0755 "$WRAPPER.tmp"
mv "$WRAPPER.tmp" "$WRAPPER"

if ! version_ok "$WRAPPER"; then
	echo "install-criu.sh: $WRAPPER does not run or is older than $MIN_MAJOR.$MIN_MINOR:" >&2
	"$WRAPPER" --version >&2 || true
	exit 1
fi
if ! "$WRAPPER" check >"$APT/check.log" 2>&1; then
	echo "install-criu.sh: warning: '$WRAPPER check' failed; see $APT/check.log" >&2
	tail -n 5 "$APT/check.log" >&2
fi
rm -rf "$APT/debs" "$APT/cache"
"$WRAPPER" --version | head -n 1 >"$STAMP"
echo "install-criu.sh: $(cat "$STAMP") installed in $PREFIX" >&2
