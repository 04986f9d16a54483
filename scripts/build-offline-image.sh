#!/usr/bin/env bash
# Build the offline sandbox image (no registry): the script codetape ships in its
# package, the same one `codetape image build --offline` runs.
#   scripts/build-offline-image.sh [--force] [--include PKG,PKG...] [NAME]
# See src/codetape/sandbox/offline-image.sh (or --help) for what it does.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../src/codetape/sandbox/offline-image.sh" "$@"
