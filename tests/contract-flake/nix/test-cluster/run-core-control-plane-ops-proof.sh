#!/bin/sh
# ucnb contract flake stand-in for the product's run-core-control-plane-ops-proof.sh (see ../../README.md).
exec /bin/sh "$(dirname "$0")/contract.sh" core-ops "$@"
