#!/usr/bin/env bash
# render_report.sh - draws the comparison's page (report/index.html) to a PNG with headless
# Chromium, so the page is checked in a real browser and the README can show the picture.
#
# Usage: bench/render_report.sh [REPORT_DIR]     (default: report; writes REPORT_DIR/index.png)
# Installs Debian's chromium with apt-get when run as root; otherwise prints the command.
set -euo pipefail
dir=${1:-report}
[[ -f $dir/index.html ]] || { echo "render_report: no $dir/index.html; run make demo (or loadtest compare) first" >&2; exit 2; }
browser=$(command -v chromium || command -v chromium-browser || true)
if [[ -z $browser ]]; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "installing chromium"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
        browser=$(command -v chromium)
    else
        echo "render_report: Chromium is missing. Run: sudo apt-get install -y chromium" >&2
        exit 2
    fi
fi
page=$(realpath "$dir/index.html")
# A tall window: the screenshot is of the window, and the page is one long column.
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1040,5800 \
    --screenshot="$dir/index.png" "file://$page" 2>/dev/null
echo "wrote $dir/index.png"
