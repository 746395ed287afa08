#!/bin/sh
# ucnb contract flake stand-in for the product's run-publishable-kvm-suite.sh (see ../../README.md).
exec /bin/sh "$(dirname "$0")/contract.sh" publishable "$@"
