#!/usr/bin/env bash
# Before a GPU call, from the project root: write the commit (and +dirty) to .code-version (git-ignored; carry it
# with the last part), so result files made on the box name the code they ran (its copy has no .git of its own).
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
dirty=$(git status --porcelain --untracked-files=no)
echo "$(git rev-parse --short HEAD)${dirty:++dirty}" > .code-version
cat .code-version
