#!/usr/bin/env bash
# Samples a .frt model on a microcontroller in QEMU and writes the samples as .npy.
#
#   targets/run-qemu.sh <cortex-m4|riscv32> MODEL.frt NOISE.npy OUT.npy [--method M] [--steps N]
#                       [--labels LABELS.npy]   (int64 class labels, one per noise row)
#
# Builds the firmware under targets/<target>/ with the model and noise embedded (their paths,
# the method and the step count reach build.rs through FLOWRT_* environment variables; build.rs
# sizes the static arena from the model's memory plan; the cargo features `f16` / `int8` are
# on when the model stores such weights), runs it in QEMU (which exits by itself
# through semihosting / the virt test device; a timeout guards it), and converts the hex f32
# words the firmware prints into OUT.npy (float32, the noise's shape; a decoder's output shape
# for a multi-network file with a decoder). No Python needed.
#
# Environment: FLOWRT_QEMU_TIMEOUT (seconds, default 120); FLOWRT_QEMU_LOG=FILE keeps the
# firmware's full output (statistics line `FLOWRT-STATS ...`); FLOWRT_DEFMT_LOG=FILE (cortex-m4)
# decodes the firmware's defmt log (written over semihosting to defmt.bin) with `defmt-print`
# into FILE; FLOWRT_MEMORY=FILE links against another memory map in targets/<target>/
# (default memory-qemu.x; memory-2m-256k.x: 2 MiB flash, 256 KiB RAM, 16 KiB stack reserve).
set -euo pipefail
usage() {
    echo "usage: $0 <cortex-m4|riscv32> MODEL.frt NOISE.npy OUT.npy [--method M] [--steps N] [--labels L.npy]" >&2
    exit 2
}
[ $# -ge 4 ] || usage
target=$1 model=$2 noise=$3 out=$4
shift 4
method=euler steps=1 labels=
while [ $# -gt 0 ]; do
    case $1 in
    --method) method=${2:?}; shift 2 ;;
    --steps) steps=${2:?}; shift 2 ;;
    --labels) labels=${2:?}; shift 2 ;;
    *) usage ;;
    esac
done
here="$(cd "$(dirname "$0")" && pwd)"
case $target in
cortex-m4)
    triple=thumbv7em-none-eabihf
    qemu=(qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic -icount shift=0
          -semihosting-config enable=on,target=native -kernel) ;;
riscv32)
    triple=riscv32imac-unknown-none-elf
    qemu=(qemu-system-riscv32 -machine virt -bios none -nographic -icount shift=0 -kernel) ;;
*) usage ;;
esac
abs() { echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
[ -f "$model" ] || { echo "$model: no such file" >&2; exit 1; }
[ -f "$noise" ] || { echo "$noise: no such file" >&2; exit 1; }
command -v "${qemu[0]}" >/dev/null || {
    echo "${qemu[0]} not found: run targets/install-qemu.sh" >&2
    exit 1
}
model="$(abs "$model")" noise="$(abs "$noise")" out="$(abs "$out")"
[ -z "$labels" ] || labels="$(abs "$labels")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
elf="$work/firmware.elf"

# The firmware features for the stored weight types the model uses besides f32 (`f16` for
# f16 / bf16, `int8`), read from the dtype bits of its tensor records and those of a
# multi-network file's stages: an f32 model's firmware then links no dequantizing code;
# `fixed-records` when it (or a stage) is a version-1/2 file, so that the firmware for a
# version-3 file links only the compact-record reader.
# Versions 1 and 2: 24-byte section entries, 64-byte tensor records; version 3: 12-byte
# entries with implied offsets, compact records behind an index (docs/frt-format.md).
features="$(perl -e '
    open my $f, "<:raw", $ARGV[0] or die "$ARGV[0]: $!"; local $/; my $all = <$f>;
    my %used;
    sub dtype {
        my ($d) = @_;
        $used{f16} = 1 if $d == 1 || $d == 2;
        $used{int8} = 1 if $d == 3 || $d == 4 || $d == 5;
    }
    sub scan {
        my ($b) = @_;
        return if length($b) < 32;
        my $version = unpack("v", substr($b, 4, 2));
        $used{"fixed-records"} = 1 if $version < 3;
        my $sections = unpack("V", substr($b, 20, 4));
        my $next = (32 + 12 * $sections + 3) & ~3;
        for my $i (0 .. $sections - 1) {
            my ($kind, $off, $len);
            if ($version >= 3) {
                ($kind, undef, $len) = unpack("v v Q<", substr($b, 32 + 12 * $i, 12));
                $off = $next;
                $next = ($off + $len + 3) & ~3;
            } else {
                ($kind, undef, undef, $off, $len) = unpack("v v V Q< Q<", substr($b, 32 + 24 * $i, 24));
            }
            my $s = substr($b, $off, $len);
            if ($kind == 1 && $version >= 3) {       # TENSORS: count, index width, index, records
                my ($count, $width) = unpack("V C", $s);
                my $records = (8 + $width * $count + 3) & ~3;
                my $fmt = { 1 => "C", 2 => "v", 4 => "V" }->{$width};
                for my $t (0 .. $count - 1) {
                    my $start = unpack($fmt, substr($s, 8 + $width * $t, $width));
                    dtype((ord(substr($s, $records + $start, 1)) >> 2) & 7);
                }
            } elsif ($kind == 1) {                   # TENSORS: count, reserved, 64-byte records
                for my $t (0 .. unpack("V", $s) - 1) {
                    dtype(ord(substr($s, 8 + 64 * $t + 1, 1)));
                }
            } elsif ($kind == 11) {                  # PIPELINE: stage records with nested files
                for my $j (0 .. unpack("V", $s) - 1) {
                    my ($o, $l) = unpack("Q< Q<", substr($s, 8 + 32 * $j + 16, 16));
                    scan(substr($s, $o, $l));
                }
            }
        }
    }
    scan($all);
    print join(",", sort keys %used);
' "$model")"

# Build and copy the ELF under a lock: parallel callers share the firmware's target dir.
crate="$here/$target"
(
    flock 9
    cd "$crate"
    # The firmware's own target dir, whatever the caller's CARGO_TARGET_DIR says.
    CARGO_TARGET_DIR="$crate/target" FLOWRT_FRT="$model" FLOWRT_NOISE="$noise" \
        FLOWRT_METHOD="$method" FLOWRT_STEPS="$steps" FLOWRT_LABELS="$labels" \
        cargo build --release --quiet --features "$features"
    cp "target/$triple/release/flowrt-$target" "$elf"
) 9>"$crate/.build.lock"

log="$work/qemu.log"
status=0
# QEMU runs in $work: semihosting file writes (the defmt log, defmt.bin) land there.
(cd "$work" && timeout "${FLOWRT_QEMU_TIMEOUT:-120}" "${qemu[@]}" "$elf" </dev/null >"$log" 2>&1) || status=$?
[ -n "${FLOWRT_QEMU_LOG:-}" ] && cp "$log" "$FLOWRT_QEMU_LOG"
if [ "$status" -ne 0 ] || ! grep -q '^FLOWRT-STATS' "$log"; then
    echo "firmware failed in QEMU (exit $status):" >&2
    tail -n 20 "$log" >&2
    exit 1
fi
grep '^FLOWRT-STATS' "$log" >&2
if [ -n "${FLOWRT_DEFMT_LOG:-}" ]; then
    [ -f "$work/defmt.bin" ] || { echo "the firmware wrote no defmt log" >&2; exit 1; }
    defmt-print -e "$elf" <"$work/defmt.bin" >"$FLOWRT_DEFMT_LOG"
fi

# Hex f32 words -> OUT.npy (npy v1.0, '<f4', C order, header padded to 64 bytes), byte for byte
# the file `flowrt sample` writes for the same values.
shape="$(sed -n 's/^FLOWRT-SHAPE \([0-9,]*\).*/\1/p' "$log" | head -n 1)"
grep '^FLOWRT-OUT' "$log" | perl -e '
    my $shape = shift;
    my @dims = split /,/, $shape;
    my $tuple = "(" . join("", map { "$_, " } @dims) . ")";    # as flowrt sample (npyz) writes it
    my $dict = "{\x27descr\x27: \x27<f4\x27, \x27fortran_order\x27: False, \x27shape\x27: $tuple, }";
    my $total = 10 + length($dict) + 1;
    my $pad = (64 - $total % 64) % 64;
    $dict .= " " x $pad . "\n";
    my $n = 1; $n *= $_ for @dims;
    my @words;
    while (<STDIN>) { s/^FLOWRT-OUT//; push @words, map { hex } split; }
    die "expected $n values, got " . scalar(@words) . "\n" unless @words == $n;
    binmode STDOUT;
    print "\x93NUMPY\x01\x00", pack("v", length $dict), $dict, pack("V*", @words);
' "$shape" >"$out"
