#!/usr/bin/env bash
# Real agents the tests run unchanged against the gateway, from the npm registry, pinned: Claude Code
# (Anthropic Messages), Codex CLI (OpenAI Responses) and OpenClaw (all three wire APIs). Test-only:
# `clawline up` needs none of it.
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

# OpenClaw needs Node >= 24.16, which the npm registry has as the package `node`; its own install
# script checks the version, so Node 24 is installed first and put on the PATH for it.
OC_DIR="$DIR/openclaw"
OC_PKGS="node@24.21.0 openclaw@2026.9.6"
OC_STAMP="$OC_DIR/.clawline-agents"
if [ "$(cat "$OC_STAMP" 2>/dev/null)" != "$OC_PKGS" ]; then
    echo "[install-agents] installing $OC_PKGS into $OC_DIR"
    mkdir -p "$OC_DIR"
    [ -f "$OC_DIR/package.json" ] || echo '{"private": true}' >"$OC_DIR/package.json"
    (cd "$OC_DIR" && npm install --save-exact --no-audit --no-fund --loglevel=error node@24.21.0)
    (cd "$OC_DIR" && PATH="$OC_DIR/node_modules/node/bin:$PATH" \
        npm install --save-exact --no-audit --no-fund --loglevel=error openclaw@2026.9.6)
    echo "$OC_PKGS" >"$OC_STAMP"
fi
