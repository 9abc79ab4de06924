#!/bin/sh
# Installs Shopfloor from this wheelhouse, without network access (docs/operations.md).
#
#   sh install.sh [--prefix /opt/shopfloor] [--python python3.11] [--no-compile]
#
# Each run makes a new virtualenv, PREFIX/venvs/shopfloor-VERSION-TIME, installs the wheels of this wheelhouse
# into it (only these files: no index, no pip configuration, every wheel checked against requirements.txt's
# SHA-256), checks that the `shopfloor` command starts, and only then points PREFIX/.venv at it. Services run
# PREFIX/.venv/bin/shopfloor (deploy/systemd), so a failed install leaves the running version as it was, and
# the previous virtualenv stays for a roll-back (the script prints the command). --no-compile skips byte-compiling the
# packages: the install takes a quarter of the time, each first import compiles instead (and needs write access).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix=/opt/shopfloor
python=""
compile=--compile

usage() {
    sed -n '4p' "$0" | sed 's/^#   //'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || { usage >&2; exit 2; }; prefix=$2; shift 2 ;;
        --python) [ $# -ge 2 ] || { usage >&2; exit 2; }; python=$2; shift 2 ;;
        --no-compile) compile=--no-compile; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

fail() {
    echo "install.sh: $*" >&2
    exit 2
}

[ -f "$here/BUILD.txt" ] && [ -f "$here/requirements.txt" ] && [ -d "$here/wheels" ] \
    || fail "$here is not a complete wheelhouse (BUILD.txt, requirements.txt and wheels/ expected)"
# A wheelhouse carried over on a stick or a share can arrive cut short: check every file before touching anything.
if command -v sha256sum >/dev/null 2>&1 && [ -f "$here/SHA256SUMS" ]; then
    (cd "$here" && sha256sum --check --quiet SHA256SUMS) >&2 \
        || fail "the wheelhouse is damaged (the files listed above do not match SHA256SUMS): copy it again; nothing was installed"
fi
build_value() {
    sed -n "s/^$1=//p" "$here/BUILD.txt"
}
version=$(build_value shopfloor)
want=$(build_value python)
[ "$(build_value sys_platform)" = linux ] \
    || fail "this wheelhouse is for $(build_value platform); on Windows run install.ps1"

if [ -z "$python" ]; then
    for candidate in "python$want" python3; do
        if command -v "$candidate" >/dev/null 2>&1; then
            python=$candidate
            break
        fi
    done
    [ -n "$python" ] || fail "no python$want or python3 on PATH: install Python $want, or pass --python PATH"
fi
have=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
    || fail "cannot run $python: pass --python PATH to a Python $want"
[ "$have" = "$want" ] \
    || fail "this wheelhouse holds wheels for Python $want; $python is Python $have: pass --python PATH to a Python $want, or build a wheelhouse for $have"
"$python" -c 'import venv, ensurepip' 2>/dev/null \
    || fail "$python cannot make a virtualenv (on Debian and Ubuntu: apt-get install python$want-venv)"

if [ -e "$prefix/.venv" ] && [ ! -L "$prefix/.venv" ]; then
    fail "$prefix/.venv is a directory, not the link this script maintains: move it away first"
fi

venv="$prefix/venvs/shopfloor-$version-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$prefix/venvs"
echo "installing Shopfloor $version into $venv"
"$python" -m venv "$venv"
# The wheelhouse alone: PIP_CONFIG_FILE=/dev/null skips every pip.conf, --isolated every PIP_* variable
# (an index or find-links of the machine's own pip setup must not stand in for a file of this wheelhouse).
if ! PIP_CONFIG_FILE=/dev/null "$venv/bin/python" -m pip --isolated install --quiet --no-index --no-cache-dir \
        "$compile" --disable-pip-version-check --find-links "$here/wheels" --requirement "$here/requirements.txt"; then
    rm -rf "$venv"
    fail "installing the wheels failed (the output above says which); the installed version is unchanged"
fi
if ! "$venv/bin/shopfloor" --help >/dev/null; then
    rm -rf "$venv"
    fail "the new shopfloor command does not start; the installed version is unchanged"
fi

previous=""
[ -L "$prefix/.venv" ] && previous=$(readlink "$prefix/.venv")
ln -sfn "$venv" "$prefix/.venv.new"
mv -T "$prefix/.venv.new" "$prefix/.venv"
mkdir -p "$prefix/example-config"
cp -R "$here/example-config/." "$prefix/example-config/"

echo "Shopfloor $version installed: $prefix/.venv/bin/shopfloor"
if [ -n "$previous" ]; then
    echo "previous version kept in $previous; to go back: ln -sfn $previous $prefix/.venv.new && mv -T $prefix/.venv.new $prefix/.venv"
fi
echo "next: $prefix/.venv/bin/shopfloor check-config /etc/shopfloor/factory.yaml (see operations.md)"
