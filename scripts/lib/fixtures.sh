# Sourced by the make-*-fixtures.sh scripts: regenerates a committed fixture dir with a Python
# reference (transformers & co.) in a venv of its own, pinned by a requirements file.
#   make_fixtures VENV_VAR VENV_NAME REQUIREMENTS OUT SCRIPT
# VENV_VAR names the environment variable that overrides the venv's path.
make_fixtures() {
    local venv_var=$1 venv_name=$2 requirements=$3 out=$4 script=$5
    cd "$(dirname "${BASH_SOURCE[0]}")/../.."
    local venv="${!venv_var:-${CLAWLINE_CACHE:-$HOME/.cache/clawline}/$venv_name}"
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r "$requirements"
    rm -rf "$out"
    "$venv/bin/python" "$script" "$out"
    du -sh "$out"
}
