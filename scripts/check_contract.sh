#!/usr/bin/env bash
# Guard the gRPC contract: `buf lint`, then `buf breaking` against the released contract and
# against a git ref (default: main).
#
#   scripts/check_contract.sh                    # lint; compare with the released contract and main
#   scripts/check_contract.sh v0.3.0             # ... and with another branch, tag or commit
#   scripts/check_contract.sh --record-release   # the contract as it is becomes the released one
#
# The released contract (protos/released_contract.binpb, a buf image) is what clients in the
# field were generated from. Every clone has it, so a breaking change is caught once committed
# too: on main itself, comparing with main compares the contract with itself. Record a release
# when a version ships; additions never need one, since they break nothing.
#
# The git ref's side is its protos/videodag read with the working tree's buf.yaml and vendored
# imports, so a ref that has neither still builds. With no such ref or no contract there yet,
# that comparison is skipped with a note.
set -euo pipefail
cd "$(dirname "$0")/.."

buf="tools/buf/node_modules/.bin/buf"
if [ ! -x "$buf" ]; then
  bash scripts/ensure_node_deps.sh
fi
released="released_contract.binpb"  # in protos/

if [ "${1:-}" = "--record-release" ]; then
  (cd protos && "../$buf" lint && "../$buf" build --exclude-source-info -o "$released")
  echo "recorded protos/$released: breaking changes are now checked against the contract as it is"
  exit 0
fi
against_ref="${1:-main}"

echo "==> buf lint"
(cd protos && "../$buf" lint)

echo "==> buf breaking against the released contract (protos/$released)"
if [ ! -f "protos/$released" ]; then
  echo "protos/$released is missing: restore it from git, or record one with --record-release" >&2
  exit 1
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
(cd protos && "../$buf" build --exclude-source-info -o "$scratch/contract.binpb" \
  && "../$buf" breaking "$scratch/contract.binpb" --against "$released")

if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "==> buf breaking against a git ref skipped: not a git checkout"
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
  echo "==> buf breaking against $against_ref skipped: no git ref '$against_ref'"
  exit 0
fi
if [ -z "$(git ls-tree -r --name-only "$commit" -- protos/videodag)" ]; then
  echo "==> buf breaking against $against_ref skipped: '$against_ref' has no contract under protos/videodag yet"
  exit 0
fi

old_contract="$scratch/at_ref"
mkdir "$old_contract"
git archive "$commit" protos/videodag | tar -x -C "$old_contract"
cp protos/buf.yaml "$old_contract/protos/"
cp -R protos/third_party "$old_contract/protos/"
echo "==> buf breaking against $against_ref ($(git rev-parse --short "$commit"))"
(cd protos && "../$buf" breaking --against "$old_contract/protos")
echo "contract ok: lint clean, nothing breaking against the released contract or $against_ref"
