#!/usr/bin/env bash
# The package as users get it: build the wheel and the sdist, check what they hold, install the
# wheel into a fresh virtual environment and run framecast from it in a folder outside the
# checkout. A file missing from the package (the Moving MNIST digits, py.typed, a module) fails
# here, where the tests, run from the checkout, would still pass.
#
#   scripts/check_wheel.sh      (make wheel-check; .ci/run after make test)
#
# BUILD_PYTHON: an interpreter with `build` (default .venv/bin/python: the dev extra has it);
# PYTHON: the interpreter of the fresh venv (default python3); TORCH_SPEC: the PyTorch installed
# before the wheel (default: the Makefile's).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD_PYTHON=${BUILD_PYTHON:-.venv/bin/python}
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
unset PYTHONPATH  # framecast must come from the installed wheel, not from src/

TMP=$(mktemp -d "${TMPDIR:-/tmp}/framecast-wheel-check.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
START=$SECONDS

step() { printf '\n== wheel-check [%d s]: %s\n' $((SECONDS - START)) "$*"; }
ok() { printf 'ok: %s\n' "$*"; }
fail() {
    printf 'wheel-check: FAIL: %s\n' "$*" >&2
    exit 1
}

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)
[ -n "$version" ] || fail "no version in pyproject.toml"

step "python -m build (wheel and sdist of framecast $version)"
if ! "$BUILD_PYTHON" -m build --outdir "$TMP/dist" . >"$TMP/build.log" 2>&1; then
    tail -40 "$TMP/build.log" >&2
    fail "python -m build failed"
fi
wheel=$(ls "$TMP"/dist/framecast-"$version"-*.whl 2>/dev/null) || fail "no framecast-$version wheel in $TMP/dist"
sdist=$(ls "$TMP"/dist/framecast-"$version".tar.gz 2>/dev/null) || fail "no framecast-$version.tar.gz in $TMP/dist"
ok "built $(basename "$wheel") and $(basename "$sdist")"
if grep -i "deprecat" "$TMP/build.log"; then
    fail "the build printed the deprecation warnings above"
fi
ok "the build printed no deprecation warning"

step "what the wheel and the sdist hold"
"$BUILD_PYTHON" - "$wheel" "$sdist" <<'EOF'
import sys, tarfile, zipfile
from email.parser import Parser
from pathlib import Path

wheel, sdist = sys.argv[1:]
names = set(zipfile.ZipFile(wheel).namelist())
# every module of the checkout, and the package data: the digits and py.typed
src = Path("src")
modules = sorted(str(p.relative_to(src)) for p in (src / "framecast").rglob("*.py") if "__pycache__" not in p.parts)
need = ["framecast/py.typed", "framecast/data/assets/mnist_digits_20px.npz"]
missing = [n for n in need + modules if n not in names]
licenses = [n for n in names if n.endswith(".dist-info/licenses/LICENSE")]
meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
meta = Parser().parsestr(zipfile.ZipFile(wheel).read(meta_name).decode())
sdist_names = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
sdist_need = ["LICENSE", "CHANGELOG.md", "src/framecast/py.typed", "src/framecast/data/assets/mnist_digits_20px.npz"]
sdist_missing = [n for n in sdist_need if n not in sdist_names]
errors = []
if missing:
    errors.append(f"the wheel lacks {', '.join(missing)}")
if not licenses:
    errors.append("the wheel carries no LICENSE")
if meta.get("License-Expression") != "MIT":
    errors.append(f"the wheel's License-Expression is {meta.get('License-Expression')!r}, not 'MIT'")
if sdist_missing:
    errors.append(f"the sdist lacks {', '.join(sdist_missing)}")
if errors:
    sys.exit("wheel-check: FAIL: " + "; ".join(errors))
print(f"ok: the wheel holds {', '.join(need)}, all {len(modules)} modules of src/framecast, {licenses[0]}; "
      f"License-Expression: {meta['License-Expression']}")
print(f"ok: the sdist holds {', '.join(sdist_need)}")
EOF

step "a fresh virtual environment: $TORCH_SPEC, then the wheel"
"$PYTHON" -m venv "$TMP/venv"
VPY=$TMP/venv/bin/python
# shellcheck disable=SC2086  # TORCH_SPEC is a list of requirements
"$VPY" -m pip install --quiet $TORCH_SPEC
"$VPY" -m pip install --quiet "$wheel"
"$VPY" -m pip check
ok "installed $(basename "$wheel") into $TMP/venv"

mkdir "$TMP/work"
cd "$TMP/work"  # outside the checkout: nothing of src/ is importable from here

step "framecast imports from the venv, at version $version"
where=$("$VPY" -c 'import framecast; print(framecast.__file__, framecast.__version__)')
echo "$where"
case "$where" in
    "$TMP/venv/"*" $version") ok "framecast $version from the installed wheel" ;;
    *) fail "framecast did not import from $TMP/venv at version $version" ;;
esac
case "$where" in
    "$ROOT"/*) fail "framecast imported from the checkout" ;;
esac

step "framecast models"
"$TMP/venv/bin/framecast" models | tee "$TMP/models.txt"
grep -q "^convlstm " "$TMP/models.txt" || fail "framecast models does not list convlstm"
ok "framecast models lists $(($(wc -l <"$TMP/models.txt") - 2)) models"

step "framecast fit: one step of convlstm at size test on the packaged Moving MNIST digits"
fit=(fit --model.name convlstm --model.size test --trainer.max_steps 1
    --data.train_size 4 --data.val_size 2 --data.batch_size 2 --data.num_workers 0
    --trainer.precision 32 --trainer.channels_last false --trainer.enable_progress_bar false
    --out_dir "$TMP/run")
echo "framecast ${fit[*]}"
"$TMP/venv/bin/framecast" "${fit[@]}" >"$TMP/fit.log" 2>&1 || {
    tail -40 "$TMP/fit.log" >&2
    fail "framecast fit failed"
}
ckpt=$TMP/run/checkpoints/last.ckpt
[ -s "$ckpt" ] || fail "framecast fit wrote no $ckpt"
steps=$("$VPY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["steps"])' "$TMP/run/train_stats.json")
[ "$steps" = 1 ] || fail "framecast fit trained $steps steps, not 1"
ok "trained $steps step, wrote checkpoints/last.ckpt ($(wc -c <"$ckpt") bytes)"

printf '\nwheel-check: PASS in %d s\n' $((SECONDS - START))
