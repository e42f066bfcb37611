#!/usr/bin/env bash
# Real agents the tests run unchanged against the gateway, from the npm registry, pinned: Claude Code
# (Anthropic Messages) and Codex CLI (OpenAI Responses). Test-only: `clawline up` needs none of it.
# Installs into ${CLAWLINE_CACHE:-~/.cache/clawline}/agents; a repeat run with the same pins does nothing.
set -euo pipefail
DIR="${CLAWLINE_CACHE:-$HOME/.cache/clawline}/agents"
PKGS="@anthropic-ai/claude-code@2.1.332 @openai/codex@0.171.0"
STAMP="$DIR/.clawline-agents"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$PKGS" ]; then
    echo "[install-agents] installing $PKGS into $DIR"
    mkdir -p "$DIR"
    [ -f "$DIR/package.json" ] || echo '{"private": true}' >"$DIR/package.json"
    # shellcheck disable=SC2086
    (cd "$DIR" && npm install --no-audit --no-fund --loglevel=error $PKGS)
    echo "$PKGS" >"$STAMP"
fi
