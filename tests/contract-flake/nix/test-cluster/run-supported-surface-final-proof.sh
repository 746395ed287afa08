#!/bin/sh
# ucnb contract flake stand-in for the product's run-supported-surface-final-proof.sh (see ../../README.md).
exec /bin/sh "$(dirname "$0")/contract.sh" final-proof "$@"
