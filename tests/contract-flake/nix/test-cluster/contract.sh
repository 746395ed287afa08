#!/bin/sh
# ucnb contract flake: every program of the stand-in product, dispatched by its first argument.
# It exists only to test ucnb's side of the UltraCloud validation contract (see ../../README.md):
# it boots nothing, prints the contract's markers and writes proof roots shaped like the product's.
#
#   contract.sh cluster <lane|operation> [ARG]    nix run ./nix/test-cluster#cluster -- ...
#   contract.sh hardware-smoke preflight|run|capture
#   contract.sh quickstart                        nix run .#single-node-quickstart
#   contract.sh baremetal-iso-e2e DIR             ./result/bin/baremetal-iso-e2e DIR
#   contract.sh publishable DIR                   run-publishable-kvm-suite.sh DIR
#   contract.sh final-proof DIR                   run-supported-surface-final-proof.sh DIR
#   contract.sh core-ops DIR                      run-core-control-plane-ops-proof.sh DIR
#   contract.sh budget status|enforce|cleanup-advice|prune-proof-logs N
#
# Test knobs (comma-separated names, or `all`): UCNB_CONTRACT_FAIL, UCNB_CONTRACT_SUCCESS_FALSE,
# UCNB_CONTRACT_NO_RESULT, UCNB_CONTRACT_FAIL_MARKER, UCNB_CONTRACT_HANG; UCNB_CONTRACT_HW_TRANSPORT.
set -u
PATH=${PATH:-/usr/bin:/bin}

BAREMETAL_MARKERS="pre-install.boot pre-install.phone-home.complete install.bundle-downloaded \
install.disko.complete install.nixos-install.complete reboot post-install.boot desired-system-active"

work_root() { printf '%s\n' "${ULTRACLOUD_WORK_ROOT:-$PWD/work}"; }
stamp() { date -u +%Y%m%dT%H%M%S.%N | cut -c1-22; }
say() { printf 'contract-flake: %s\n' "$*"; }

# knob VAR NAME: is NAME listed in $VAR (comma-separated, or "all")?
knob() {
  eval "value=\${$1:-}"
  case ",$value," in *",$2,"*|*",all,"*) return 0 ;; esac
  return 1
}

# steer NAME: the program's first marker, then the knobs that act before any work (hang,
# failure marker). `contract-flake.*` markers are this test double's own, not the product's: they
# let tests see markers recorded for programs whose contract names no marker sequence.
steer() {
  echo "ULTRACLOUD_MARKER contract-flake.start.$1"
  if knob UCNB_CONTRACT_HANG "$1"; then
    say "$1: hanging (UCNB_CONTRACT_HANG)"
    sleep 300
    exit 0
  fi
  if knob UCNB_CONTRACT_FAIL_MARKER "$1"; then
    say "$1: about to fail (UCNB_CONTRACT_FAIL_MARKER)"
    echo "ULTRACLOUD_MARKER pre-install.boot.contract"
    echo "ULTRACLOUD_MARKER install.disko.failed.contract injected by UCNB_CONTRACT_FAIL_MARKER"
    sleep 300
    exit 0
  fi
}

# new_root FOLDER [DATED_SUFFIX]: make <work root>/FOLDER/<dated>, print its path.
new_root() {
  dir="$(work_root)/$1/$(stamp)${2:-}"
  mkdir -p "$dir" && printf '%s\n' "$dir"
}

# refresh_latest DIR [LINK]: point LINK (default DIR/../latest) at DIR, relatively.
refresh_latest() {
  link=${2:-$(dirname "$1")/latest}
  if [ -d "$link" ] && [ ! -L "$link" ]; then rm -rf "$link"; fi
  ln -sfn "$(basename "$1")" "$link"
}

write_environment() {  # DIR EXECUTION_MODEL
  {
    echo "execution_model=$2"
    echo "vm_accelerator_mode=${UCNB_CONTRACT_ACCELERATOR:-kvm}"
    echo "ultracloud_work_root=$(work_root)"
    echo "local_nix_max_jobs=${ULTRACLOUD_LOCAL_NIX_MAX_JOBS:-}"
    echo "local_nix_build_cores=${ULTRACLOUD_LOCAL_NIX_BUILD_CORES:-}"
    echo "cluster_nix_max_jobs=${PHOTON_CLUSTER_NIX_MAX_JOBS:-}"
    echo "cluster_nix_build_cores=${PHOTON_CLUSTER_NIX_BUILD_CORES:-}"
    echo "kvm_device=$([ -e /dev/kvm ] && echo present || echo absent)"
    echo "system_under_test=ucnb contract flake (a test double: nothing boots)"
  } > "$1/environment.txt"
}

# finish NAME DIR [LINK]: result.json (unless UCNB_CONTRACT_NO_RESULT), point LINK (default
# DIR/../latest) at DIR, exit per the knobs.
finish() {
  success=true
  if knob UCNB_CONTRACT_SUCCESS_FALSE "$1" || knob UCNB_CONTRACT_FAIL "$1"; then success=false; fi
  if ! knob UCNB_CONTRACT_NO_RESULT "$1"; then
    printf '{"success": %s, "lane": "%s", "producer": "ucnb-contract-flake"}\n' "$success" "$1" \
      > "$2/result.json"
  fi
  refresh_latest "$2" "${3:-}"
  fail_unless_ok "$1"
}

fail_unless_ok() {
  if knob UCNB_CONTRACT_FAIL "$1"; then
    say "$1: failing (UCNB_CONTRACT_FAIL)" >&2
    exit 1
  fi
  say "$1: done"
  echo "ULTRACLOUD_MARKER contract-flake.done.$1"
  exit 0
}

markers() {  # NODE: the bare-metal marker sequence for one node
  for m in $BAREMETAL_MARKERS; do echo "ULTRACLOUD_MARKER $m.$1"; done
}

# --- the cluster app ---------------------------------------------------------------------------
cluster() {
  what=${1:-}
  [ $# -gt 0 ] && shift
  case "$what" in
    baremetal-iso)
      steer "$what"
      for node in baremetal-qemu-control-plane baremetal-qemu-worker; do
        say "booting ultracloud-iso as $node (QEMU-as-bare-metal)"
        markers "$node"
      done
      fail_unless_ok "$what" ;;
    fresh-smoke|fresh-demo-vm-webapp|fresh-matrix|chainfire-live-membership-proof|fresh-bench-storage)
      steer "$what"
      say "$what: six-node cluster node01..node06"
      fail_unless_ok "$what" ;;
    provider-vm-reality-proof|rollout-soak|durability-proof)
      steer "$what"
      dir=$(new_root "$what")
      write_environment "$dir" nested-kvm-cluster
      case "$what" in
        rollout-soak)
          echo '{"scope": "fixed", "lane": "rollout-soak"}' > "$dir/scope-fixed-contract.json"
          echo "deployer: one active writer plus optional cold-standby restore" > "$dir/deployer-scope-fixed.txt"
          echo "fleet-scheduler: one drain cycle, one fail-stop cycle" > "$dir/fleet-scheduler-scope-fixed.txt" ;;
        durability-proof)
          echo '[]' > "$dir/deployer-post-restart-list.json"
          echo '{}' > "$dir/coronafs-node04-local-state.json"
          echo '{}' > "$dir/lightningstor-head-during-node05-outage.json" ;;
        provider-vm-reality-proof)
          echo '{}' > "$dir/flashdns-answers.json" ;;
      esac
      finish "$what" "$dir" ;;
    status) say "cluster status: no cluster running (contract flake)"; exit 0 ;;
    logs|ssh)
      [ $# -ge 1 ] || { echo "usage: cluster $what NODE" >&2; exit 2; }
      say "$what $1 (contract flake: nothing to reach)"; exit 0 ;;
    stop|clean) say "cluster $what"; exit 0 ;;
    demo-vm-webapp|serve-vm-webapp|matrix|bench-storage) say "cluster $what"; exit 0 ;;
    *) echo "contract-flake: unknown cluster command '$what'" >&2; exit 2 ;;
  esac
}

hardware_smoke() {
  mode=${1:-}
  case "$mode" in preflight|run|capture) ;; *) echo "usage: hardware-smoke preflight|run|capture" >&2; exit 2 ;; esac
  steer hardware-smoke
  dir=$(new_root hardware-smoke "-$mode")
  transport=${UCNB_CONTRACT_HW_TRANSPORT:-}
  case "$mode" in
    preflight)
      echo "ultracloud.deployer_url=http://10.0.2.2:8088 ultracloud.bootstrap_token=REDACTED" > "$dir/kernel-params.txt"
      for m in $BAREMETAL_MARKERS; do echo "$m"; done > "$dir/expected-markers.txt"
      echo "failed" > "$dir/failure-markers.txt"
      echo "# Operator handoff (contract flake)" > "$dir/operator-handoff.md"
      if [ -z "$transport" ]; then
        printf 'usb_device\nbmc_redfish_endpoint\nbmc_redfish_credentials\n' > "$dir/missing-requirements.txt"
        echo "status=blocked" > "$dir/status.env"
      else
        echo "status=ready" > "$dir/status.env"
      fi
      echo "transport=${transport:-none}" >> "$dir/status.env" ;;
    run)
      if [ -z "$transport" ]; then
        echo "status=blocked" > "$dir/status.env"; refresh_latest "$dir"
        echo "contract-flake: hardware-smoke run: no USB device or BMC (set UCNB_CONTRACT_HW_TRANSPORT)" >&2
        exit 1
      fi
      say "presenting the ISO through $transport"
      printf 'status=booted\ntransport=%s\n' "$transport" > "$dir/status.env" ;;
    capture)
      markers hardware-node | tee "$dir/serial.log"
      printf 'status=captured\ndesired_system=active\n' > "$dir/status.env" ;;
  esac
  refresh_latest "$dir"
  fail_unless_ok hardware-smoke
}

quickstart() {
  steer single-node-quickstart
  for svc in chainfire flaredb iam prismnet plasmavmc; do say "$svc healthy (from inside the guest)"; done
  say "product-surface manifest: profile=single-node dev"
  if [ "${ULTRACLOUD_QUICKSTART_KEEP_VM:-}" = 1 ]; then say "keeping the VM alive (ULTRACLOUD_QUICKSTART_KEEP_VM=1)"; fi
  fail_unless_ok single-node-quickstart
}

baremetal_iso_e2e() {
  target=${1:-$(work_root)/baremetal-iso-e2e/latest}
  steer baremetal-iso-e2e
  mkdir -p "$(dirname "$target")"
  dir="$(dirname "$target")/$(stamp)"
  mkdir -p "$dir/state"
  write_environment "$dir" materialized-check-runner
  echo "vm_accelerator_mode=${UCNB_CONTRACT_ACCELERATOR:-kvm}" > "$dir/state/environment.txt"
  for node in baremetal-qemu-control-plane baremetal-qemu-worker; do
    markers "$node" | tee "$dir/$node-serial.log"
  done
  finish baremetal-iso-e2e "$dir" "$target"
}

# wrapper ROOT NAME: the dated root of a wrapper script (its argument is ROOT or ROOT/latest).
publishable() {
  root=${1:-$(work_root)/publishable-kvm-suite}
  steer publishable-kvm-suite
  dir="$root/$(stamp)"; mkdir -p "$dir"
  write_environment "$dir" publishable-kvm-suite
  for lane in fresh-smoke fresh-demo-vm-webapp fresh-matrix chainfire-live-membership-proof; do
    (cluster "$lane") > "$dir/$lane.log" 2>&1 || UCNB_CONTRACT_FAIL=publishable-kvm-suite
    cat "$dir/$lane.log"
  done
  finish publishable-kvm-suite "$dir"
}

final_proof() {
  target=${1:-$(work_root)/final-proofs/latest}
  steer final-proofs
  dir="$(dirname "$target")/$(stamp)-final"; mkdir -p "$dir"
  write_environment "$dir" supported-surface-final-proof
  say "builders kept local; single-node-trial-vm built"
  say "supported-surface-guard: passed" | tee "$dir/supported-surface-guard.log"
  (quickstart) > "$dir/single-node-quickstart.log" 2>&1 || UCNB_CONTRACT_FAIL=final-proofs
  (publishable "$dir/publishable-kvm-suite") > "$dir/publishable-kvm-suite.log" 2>&1 \
    || UCNB_CONTRACT_FAIL=final-proofs
  cat "$dir/single-node-quickstart.log" "$dir/publishable-kvm-suite.log"
  finish final-proofs "$dir" "$target"
}

core_ops() {
  target=${1:-$(work_root)/core-control-plane-ops-proof/latest}
  steer core-control-plane-ops-proof
  dir="$(dirname "$target")/$(stamp)"; mkdir -p "$dir"
  write_environment "$dir" core-control-plane-ops-proof
  for t in key credential mtls; do say "iam $t rotation: ok" > "$dir/iam-$t-rotation-tests.log"; done
  echo '{"scope": "fixed", "lane": "core-control-plane-ops-proof"}' > "$dir/scope-fixed-contract.json"
  finish core-control-plane-ops-proof "$dir" "$target"
}

budget() {
  root=$(work_root)
  steer work-root-budget
  case "${1:-}" in
    status) say "work root $root: $(du -sk "$root" 2>/dev/null | cut -f1 || echo 0) KiB" ;;
    enforce) say "work root within budget" ;;
    cleanup-advice) say "nothing to clean under $root" ;;
    prune-proof-logs)
      case "${2:-}" in ''|*[!0-9]*) echo "usage: prune-proof-logs N" >&2; exit 2 ;; esac
      say "dry run: would keep the $2 newest dated proof roots per lane" ;;
    *) echo "usage: work-root-budget.sh status|enforce|cleanup-advice|prune-proof-logs N" >&2; exit 2 ;;
  esac
  fail_unless_ok work-root-budget
}

# Every program ends in `exit` (fail_unless_ok) with the status the knobs ask for.
case "${1:-}" in
  cluster) shift; cluster "$@" ;;
  hardware-smoke) shift; hardware_smoke "$@" ;;
  quickstart) shift; quickstart "$@" ;;
  baremetal-iso-e2e) shift; baremetal_iso_e2e "$@" ;;
  publishable) shift; publishable "$@" ;;
  final-proof) shift; final_proof "$@" ;;
  core-ops) shift; core_ops "$@" ;;
  budget) shift; budget "$@" ;;
  *) echo "contract.sh: unknown program '${1:-}'" >&2; exit 2 ;;
esac
