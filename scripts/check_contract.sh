#!/usr/bin/env bash
# Guard the gRPC contract: `buf lint`, then `buf breaking` against a git ref (default: main).
#
#   scripts/check_contract.sh            # lint, and compare protos/ with the main branch
#   scripts/check_contract.sh v0.3.0     # compare with another branch, tag or commit
#
# The old side is that ref's protos/videodag read with the working tree's buf.yaml and vendored
# imports, so a ref that has neither still builds. With no such ref or no contract there yet,
# there is nothing to break: the comparison is skipped with a note and lint alone decides.
set -euo pipefail
cd "$(dirname "$0")/.."

against_ref="${1:-main}"
buf="tools/buf/node_modules/.bin/buf"
if [ ! -x "$buf" ]; then
  bash scripts/ensure_node_deps.sh
fi

echo "==> buf lint"
(cd protos && "../$buf" lint)

if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "==> buf breaking skipped: not a git checkout"
  exit 0
fi
commit=""
for candidate in "$against_ref" "origin/$against_ref"; do
  if commit="$(git rev-parse --verify --quiet "$candidate^{commit}")"; then
    break
  fi
  commit=""
done
if [ -z "$commit" ]; then
  echo "==> buf breaking skipped: no git ref '$against_ref'"
  exit 0
fi
if [ -z "$(git ls-tree -r --name-only "$commit" -- protos/videodag)" ]; then
  echo "==> buf breaking skipped: '$against_ref' has no contract under protos/videodag yet"
  exit 0
fi

old_contract="$(mktemp -d)"
trap 'rm -rf "$old_contract"' EXIT
git archive "$commit" protos/videodag | tar -x -C "$old_contract"
cp protos/buf.yaml "$old_contract/protos/"
cp -R protos/third_party "$old_contract/protos/"
echo "==> buf breaking against $against_ref ($(git rev-parse --short "$commit"))"
(cd protos && "../$buf" breaking --against "$old_contract/protos")
echo "contract ok: lint clean, nothing breaking against $against_ref"
