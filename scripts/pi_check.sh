#!/usr/bin/env bash
# make pi-check: prove the Raspberry Pi path on this x86_64 machine.
#
# Builds (once, cached in build/) a Debian bookworm arm64 userland with debootstrap + qemu-user-static, installs
# ONLY edge-asc's `pi` extra into a venv there (aarch64 wheels downloaded on the host, installed offline), then runs
# `edge-asc classify --json` on a few clips with the demo's int8 model inside the chroot and on the host, and
# compares: labels identical, probabilities within PI_CHECK_TOL. Also checks raw LiteRT outputs bit for bit on seeded
# random inputs, and that torch/tensorflow are absent from the Pi venv. Exit 0 = PASS, 1 = FAIL, 2 = cannot run.
#
# Needs root (debootstrap, chroot, mounts), apt (Debian/Ubuntu host) and binfmt_misc in the kernel.
# Environment:
#   PI_CHECK_MODEL   int8 .tflite with a model card (default runs/demo/model_int8.tflite, made by `make demo`)
#   PI_CHECK_CLIPS   space-separated audio files (default: one evaluation clip per scene, up to 10, of the demo
#                    dataset next to the model, runs/demo/data)
#   PI_CHECK_TOL     max |probability difference| host vs aarch64 (default 1e-3)
#   PI_CHECK_MIRROR  Debian mirror for debootstrap (default: the bookworm mirror in this host's apt sources)
#   PI_CHECK_BUILD   cache folder (default build; rootfs in $PI_CHECK_BUILD/pi-rootfs, wheels in .../pi-wheels)
# Known qemu quirks handled here: QEMU_CPU=cortex-a72 (qemu's default CPU made ai-edge-litert 2.3 compute wrong
# outputs) and a Raspberry Pi 4 /proc/cpuinfo (scripts/pi_cpuinfo.txt) bind-mounted in the chroot (qemu 7.2 shows the
# guest the host's x86 /proc/cpuinfo, and ai-edge-litert 2.3 segfaults on it).
set -euo pipefail

# Run in a private mount namespace when possible, so no mount outlives the script even if it is killed.
if [ -z "${PI_CHECK_NS:-}" ] && [ "$(id -u)" = 0 ] && unshare --mount --propagation private true 2>/dev/null; then
    exec env PI_CHECK_NS=1 unshare --mount --propagation private bash "${BASH_SOURCE[0]}" "$@"
fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
BUILD=${PI_CHECK_BUILD:-build}
ROOTFS=$REPO/$BUILD/pi-rootfs
WHEELS=$REPO/$BUILD/pi-wheels
WORK=$REPO/$BUILD/pi-check
HOSTPY=$REPO/.venv/bin/python
TOL=${PI_CHECK_TOL:-1e-3}
PIVENV=/opt/edge-asc            # the venv inside the chroot, as a Pi user would make it
export QEMU_CPU=cortex-a72
SECONDS=0

say() { printf '\n== pi-check: %s\n' "$*"; }
die() { printf 'pi-check: error: %s\n' "$1" >&2; exit "${2:-2}"; }

[ "$(id -u)" = 0 ] || die "needs root for debootstrap, chroot and mounts: run 'sudo make pi-check'"
[ -x "$HOSTPY" ] || die "no .venv: run 'make install' (or 'make pi-check', which creates it) first"
[ "$(uname -m)" = x86_64 ] || [ "$(uname -m)" = aarch64 ] || die "host must be x86_64 (or aarch64), not $(uname -m)"

# --- what to classify ---------------------------------------------------------------------------------------------
MODEL=${PI_CHECK_MODEL:-runs/demo/model_int8.tflite}
[ -f "$MODEL" ] || die "no model at $MODEL: run 'make demo' first (it writes runs/demo/model_int8.tflite),
or point PI_CHECK_MODEL at an int8 .tflite exported by 'edge-asc export' (and PI_CHECK_CLIPS at audio files)"
if [ -n "${PI_CHECK_CLIPS:-}" ]; then
    read -r -a CLIPS <<< "$PI_CHECK_CLIPS"
else
    DATA=$(dirname "$MODEL")/data     # the demo's synthetic dataset lies next to its model
    [ -d "$DATA" ] || die "no clips in $DATA: run 'make demo' first, or set PI_CHECK_CLIPS='a.wav b.wav ...'"
    mapfile -t CLIPS < <(python3 scripts/pi_compare.py clips "$DATA" 10)
fi
[ "${#CLIPS[@]}" -gt 0 ] || die "no clips found (PI_CHECK_CLIPS or runs/demo/data)"
for c in "${CLIPS[@]}"; do [ -f "$c" ] || die "clip not found: $c"; done

# --- 1. host tools and binfmt --------------------------------------------------------------------------------------
say "host tools (qemu-user-static, debootstrap, binfmt-support)"
if ! command -v qemu-aarch64-static >/dev/null || ! command -v debootstrap >/dev/null \
        || ! command -v update-binfmts >/dev/null; then
    command -v apt-get >/dev/null || die "install qemu-user-static, debootstrap and binfmt-support (no apt-get here)"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q qemu-user-static debootstrap binfmt-support
fi
BINFMT=/proc/sys/fs/binfmt_misc
if [ "$(uname -m)" != aarch64 ]; then
    if [ ! -e "$BINFMT/register" ]; then
        mount -t binfmt_misc binfmt_misc "$BINFMT" 2>/dev/null \
            || die "binfmt_misc is not mounted and cannot be (a container without privileges?): qemu-user needs it"
    fi
    if ! grep -qx enabled "$BINFMT/qemu-aarch64" 2>/dev/null; then
        update-binfmts --enable qemu-aarch64 \
            || die "cannot register qemu-aarch64 with binfmt_misc (update-binfmts --enable qemu-aarch64 failed)"
    fi
    grep -qx enabled "$BINFMT/qemu-aarch64" || die "qemu-aarch64 binfmt entry is not enabled"
    INTERP=$(sed -n 's/^interpreter //p' "$BINFMT/qemu-aarch64")
    FLAGS=$(sed -n 's/^flags: //p' "$BINFMT/qemu-aarch64")
    echo "binfmt: qemu-aarch64 enabled, interpreter $INTERP, flags $FLAGS; $(qemu-aarch64-static --version | head -1)"
fi

# --- mounts: private namespace where possible, and always undone by the trap ------------------------------------
MOUNTS=()
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null || true
    done
    MOUNTS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM
bind() {  # bind SRC DEST [ro]
    mkdir -p "$2"
    mount --bind "$1" "$2"
    MOUNTS+=("$2")
    if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}

# --- 2. the arm64 userland (cached) ------------------------------------------------------------------------------
MIRROR=${PI_CHECK_MIRROR:-$(python3 scripts/pi_compare.py mirror)}
if [ ! -f "$ROOTFS/.pi-check-debootstrap" ]; then
    say "debootstrap bookworm arm64 from $MIRROR into $BUILD/pi-rootfs (once; a few minutes)"
    for m in proc sys dev/pts dev; do
        mountpoint -q "$ROOTFS.partial/$m" 2>/dev/null && umount -l "$ROOTFS.partial/$m"
    done
    rm -rf "$ROOTFS.partial" "$ROOTFS"
    mkdir -p "$(dirname "$ROOTFS")"
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates,libsndfile1,libportaudio2 \
        bookworm "$ROOTFS.partial" "$MIRROR" > "$BUILD/pi-debootstrap.log" 2>&1 \
        || { tail -20 "$BUILD/pi-debootstrap.log"; die "debootstrap failed: see $BUILD/pi-debootstrap.log" 1; }
    if [ -n "${FLAGS:-}" ] && [[ "$FLAGS" != *F* ]]; then   # interpreter not preloaded: must exist in the chroot
        mkdir -p "$ROOTFS.partial$(dirname "$INTERP")" && cp "$INTERP" "$ROOTFS.partial$INTERP"
    fi
    rm -rf "$ROOTFS.partial/var/cache/apt/archives/"*.deb
    date -u +%FT%TZ > "$ROOTFS.partial/.pi-check-debootstrap"
    mv "$ROOTFS.partial" "$ROOTFS"
else
    say "arm64 userland: cached in $BUILD/pi-rootfs ($(cat "$ROOTFS/.pi-check-debootstrap"))"
fi
echo "chroot: $(chroot "$ROOTFS" python3 -c 'import platform as p
print(p.machine(), "Python", p.python_version(), "glibc", p.libc_ver()[1], p.freedesktop_os_release()["PRETTY_NAME"])')"

# --- 3. wheels on the host (cached), offline install of the pi extra in the chroot ---------------------------------
say "aarch64 wheels of the pi extra (cached in $BUILD/pi-wheels)"
PYV=$(chroot "$ROOTFS" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PIPDL=("$HOSTPY" -m pip --disable-pip-version-check -q)
mkdir -p "$WHEELS/deps" "$WHEELS/edge-asc" "$WORK"
# The pi extra's requirements, read from pyproject.toml, pinned by constraints.txt like the host venv.
mapfile -t REQS < <("$HOSTPY" - <<'EOF'
import tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
for r in p["dependencies"] + p["optional-dependencies"]["pi"]:
    print(r.split(";")[0].strip())
EOF
)
REQ_KEY=$(printf '%s\n' "$PYV" "${REQS[@]}" | cat - constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$WHEELS/deps/.key-$REQ_KEY" ]; then
    rm -rf "$WHEELS/deps" && mkdir -p "$WHEELS/deps"
    "${PIPDL[@]}" download --only-binary=:all: --python-version "$PYV" --implementation cp --abi "cp${PYV/./}" \
        --abi abi3 --abi none --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 \
        --platform manylinux_2_26_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 \
        --platform linux_aarch64 -c constraints.txt -d "$WHEELS/deps" "${REQS[@]}" 2> >(grep -v 'is ignored' >&2)
    touch "$WHEELS/deps/.key-$REQ_KEY"
fi
ls "$WHEELS/deps" | grep -v '^\.' | sed 's/^/  /'

# edge-asc itself: a wheel of the working tree (tracked + untracked, not ignored), rebuilt when the source changes.
SRC_KEY=$(git ls-files -co --exclude-standard -- edge_asc pyproject.toml README.md | sort \
    | xargs -d '\n' sha256sum 2>/dev/null | sha256sum | cut -c1-16)
if [ ! -f "$WHEELS/edge-asc/.key-$SRC_KEY" ]; then
    rm -rf "$WORK/src" "$WHEELS/edge-asc" && mkdir -p "$WORK/src" "$WHEELS/edge-asc"
    git ls-files -co --exclude-standard -z -- edge_asc pyproject.toml README.md | xargs -0 cp --parents -t "$WORK/src"
    "${PIPDL[@]}" wheel --no-deps --no-build-isolation "$WORK/src" -w "$WHEELS/edge-asc" > /dev/null
    rm -rf "$WORK/src"
    touch "$WHEELS/edge-asc/.key-$SRC_KEY"
fi
WHL=$(basename "$(ls "$WHEELS"/edge-asc/edge_asc-*.whl)")
echo "  $WHL (working tree $SRC_KEY)"

say "install edge-asc[pi] into $PIVENV in the chroot (offline, --no-index)"
# /sys lets LiteRT's cpuinfo see the CPUs, so it uses the XNNPACK delegate as on a real Pi (without /sys it silently
# falls back to the built-in kernels); /sys + the host's x86 /proc/cpuinfo segfaults, hence the Pi 4 cpuinfo.
mount -t proc proc "$ROOTFS/proc"; MOUNTS+=("$ROOTFS/proc")
mount --bind "$REPO/scripts/pi_cpuinfo.txt" "$ROOTFS/proc/cpuinfo"; MOUNTS+=("$ROOTFS/proc/cpuinfo")
mount -t sysfs -o ro sysfs "$ROOTFS/sys"; MOUNTS+=("$ROOTFS/sys")
bind "$WHEELS" "$ROOTFS/mnt/pi-wheels" ro
INCHROOT=(env -i PATH=$PIVENV/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 QEMU_CPU=$QEMU_CPU
          PIP_DISABLE_PIP_VERSION_CHECK=1 chroot "$ROOTFS")
if [ ! -x "$ROOTFS$PIVENV/bin/python" ]; then
    "${INCHROOT[@]}" python3 -m venv "$PIVENV"
fi
if [ "$(cat "$ROOTFS$PIVENV/.pi-check-key" 2>/dev/null)" != "$REQ_KEY-$SRC_KEY" ]; then
    "${INCHROOT[@]}" pip install -q --no-index --find-links /mnt/pi-wheels/deps --force-reinstall --no-deps \
        "/mnt/pi-wheels/edge-asc/$WHL"
    "${INCHROOT[@]}" pip install -q --no-index --find-links /mnt/pi-wheels/deps "/mnt/pi-wheels/edge-asc/$WHL[pi]"
    echo "$REQ_KEY-$SRC_KEY" > "$ROOTFS$PIVENV/.pi-check-key"
else
    echo "up to date ($REQ_KEY-$SRC_KEY)"
fi
"${INCHROOT[@]}" pip list --format=freeze | sed 's/^/  /'
HEAVY=$("${INCHROOT[@]}" python -c '
import importlib.util as u
print(" ".join(m for m in ("torch", "tensorflow", "onnx", "onnx2tf", "librosa", "keras") if u.find_spec(m)))')
[ -z "$HEAVY" ] || die "the pi extra pulled in $HEAVY: it must stay numpy + soundfile + soxr + sounddevice + LiteRT" 1
VENV_SIZE=$(du -sh "$ROOTFS$PIVENV" | cut -f1)
SITE=$(ls -d "$ROOTFS$PIVENV"/lib/python3*/site-packages)
BARE_KB=$(du -sck "$SITE"/pip "$SITE"/pip-* "$SITE"/setuptools "$SITE"/setuptools-* "$SITE"/_distutils_hack \
    "$SITE"/pkg_resources 2>/dev/null | tail -1 | cut -f1)
PKG_SIZE=$(( ($(du -sk "$SITE" | cut -f1) - BARE_KB + 512) / 1024 ))M
echo "no torch/tensorflow/onnx/librosa/keras in the Pi venv; venv $VENV_SIZE on disk, $PKG_SIZE of it the pi extra"
echo "largest: $(du -sk "$SITE"/* | sort -rn | head -6 | awk '{n = $2; sub(".*/", "", n); printf "%s%s %.0fM", \
    (NR > 1 ? ", " : ""), n, $1 / 1024}')"

# --- 5. classify on both sides and compare -------------------------------------------------------------------------
say "classify ${#CLIPS[@]} clips with $MODEL on the host and in the aarch64 chroot (QEMU_CPU=$QEMU_CPU)"
rm -rf "$WORK/in" && mkdir -p "$WORK/in"
cp "$MODEL" "$WORK/in/model.tflite"
cp scripts/pi_invoke.py "$WORK/in/"
NAMES=()
for c in "${CLIPS[@]}"; do cp "$c" "$WORK/in/"; NAMES+=("$(basename "$c")"); done
bind "$WORK" "$ROOTFS/mnt/pi-check"

t0=${EPOCHREALTIME/,/.}
"$REPO/.venv/bin/edge-asc" classify "${NAMES[@]/#/$WORK/in/}" --model "$WORK/in/model.tflite" --json \
    > "$WORK/host.json" 2> "$WORK/host.err" || { cat "$WORK/host.err"; die "classify failed on the host" 1; }
"$HOSTPY" "$WORK/in/pi_invoke.py" "$WORK/in/model.tflite" > "$WORK/host_invoke.json" 2> "$WORK/host_invoke.err" \
    || { cat "$WORK/host_invoke.err"; die "LiteRT invoke failed on the host" 1; }
t1=${EPOCHREALTIME/,/.}
"${INCHROOT[@]}" edge-asc classify "${NAMES[@]/#//mnt/pi-check/in/}" --model /mnt/pi-check/in/model.tflite --json \
    > "$WORK/pi.json" 2> "$WORK/pi.err" \
    || { cat "$WORK/pi.err"; die "classify failed in the aarch64 chroot" 1; }
"${INCHROOT[@]}" python /mnt/pi-check/in/pi_invoke.py /mnt/pi-check/in/model.tflite > "$WORK/pi_invoke.json" \
    2> "$WORK/pi_invoke.err" || { cat "$WORK/pi_invoke.err"; die "LiteRT invoke failed in the aarch64 chroot" 1; }
t2=${EPOCHREALTIME/,/.}
xnn() { if grep -q 'XNNPACK delegate' "$@"; then echo "XNNPACK"; else echo "built-in kernels (no XNNPACK)"; fi; }
echo "host $(awk "BEGIN {printf \"%.1f\", $t1 - $t0}") s with $(xnn "$WORK/host.err" "$WORK/host_invoke.err"), \
aarch64 under qemu $(awk "BEGIN {printf \"%.1f\", $t2 - $t1}") s with $(xnn "$WORK/pi.err" "$WORK/pi_invoke.err")"
echo "outputs in $BUILD/pi-check/{host,pi}.json"

say "compare (tolerance $TOL)"
rc=0
python3 scripts/pi_compare.py compare "$WORK/host.json" "$WORK/pi.json" --tol "$TOL" || rc=1
python3 scripts/pi_compare.py invoke "$WORK/host_invoke.json" "$WORK/pi_invoke.json" || rc=1
echo
if [ $rc = 0 ]; then
    echo "pi-check PASS: edge-asc[pi] on Debian bookworm arm64 (Python $PYV, cortex-a72 under qemu) agrees with the host;"
else
    echo "pi-check FAIL: the aarch64 results differ from the host's (see above);"
fi
echo "  model $MODEL ($(stat -c %s "$MODEL") bytes), Pi venv $VENV_SIZE ($PKG_SIZE for the pi extra), ${SECONDS} s in all"
exit $rc
