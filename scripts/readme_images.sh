#!/usr/bin/env bash
# The README's images, from the committed reference results: the first screen of the HTML
# leaderboard (headless Chromium, Debian's `chromium`) and a copy of the size figure.
#   bash scripts/readme_images.sh        # after scripts/results.sh (or its `reports` part)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/images
chrome=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chrome" ]; then
  echo "readme_images: needs chromium (apt-get install chromium)" >&2
  exit 2
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
"$chrome" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --user-data-dir="$profile" \
  --window-size=1440,380 --screenshot="$PWD/docs/images/leaderboard.png" "file://$PWD/results/leaderboard.html" \
  >/dev/null 2>&1
cp results/plots/size.png docs/images/size.png
echo "docs/images/leaderboard.png docs/images/size.png"
