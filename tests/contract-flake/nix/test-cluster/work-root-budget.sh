#!/bin/sh
# ucnb contract flake stand-in for the product's work-root-budget.sh (see ../../README.md).
exec /bin/sh "$(dirname "$0")/contract.sh" budget "$@"
