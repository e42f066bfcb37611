#!/usr/bin/env bash
# Real agents the tests run unchanged against the gateway, from the npm registry, pinned: Claude Code
# (Anthropic Messages), Codex CLI (OpenAI Responses) and OpenClaw (all three wire APIs). Test-only:
# `clawline up` needs none of it.
# Installs into ${CLAWLINE_CACHE:-~/.cache/clawline}/agents; a repeat run with the same pins does nothing.
set -euo pipefail
DIR="${CLAWLINE_CACHE:-$HOME/.cache/clawline}/agents"

# install DIR PACKAGE... : npm-installs the pinned packages into DIR, one after another (each may
# need the one before: `node` first), with DIR's own Node first on the PATH once it has one.
# A stamp in DIR skips it all when the pins are unchanged.
install() {
    local dir=$1
    shift
    local stamp="$dir/.clawline-agents"
    [ "$(cat "$stamp" 2>/dev/null)" != "$*" ] || return 0
    echo "[install-agents] installing $* into $dir"
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] || echo '{"private": true}' >"$dir/package.json"
    local pkg
    for pkg in "$@"; do
        (cd "$dir" && PATH="$dir/node_modules/node/bin:$PATH" \
            npm install --save-exact --no-audit --no-fund --loglevel=error "$pkg")
    done
    echo "$*" >"$stamp"
}

install "$DIR" @anthropic-ai/claude-code@2.1.332 @openai/codex@0.171.0
# OpenClaw needs Node >= 24.16, which the npm registry has as the package `node`; its own install
# script checks the version, so Node 24 is installed first and put on the PATH for it.
install "$DIR/openclaw" node@24.21.0 openclaw@2026.9.6
