#!/usr/bin/env bash
# Idempotent setup of a Debian 12 host (root, no systemd needed): Debian packages, the virtualenv
# with pinned Python packages, the `ucnb` Jupyter kernel, and the lab host (namespace + libvirtd).
# Quick when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-system-x86 qemu-utils                       # the hypervisor (KVM or TCG)
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
  dnsmasq-base iproute2 procps                     # libvirt, the lab namespace, its bridges and sysctl
  busybox-static dropbear-bin cpio gzip kmod e2fsprogs dmsetup  # the guest image
  etcd-server etcd-client sqlite3                  # real software standing in for product services
  openssh-client                                   # `ucnb lab ssh`
  fio                                              # fresh-bench-storage: the host reference (ucnb.storage)
  isolinux syslinux-common extlinux xorriso        # the reference installer ISO and installed boot loader
  fdisk dosfstools wget                            # the installer's disk layouts and TLS client
  chromium                                         # headless screenshots of the evidence report
  python3-venv make
)

if [ "$(id -u)" -ne 0 ]; then echo "setup: run as root (apt-get, libvirtd, network namespaces)" >&2; exit 3; fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  [[ "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# The guest kernel is fetched with `apt-get download`: the package lists must know it.
if [ ${#missing[@]} -gt 0 ] || ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
  echo "setup: apt-get install ${missing[*]:-(lists only)}"
  apt-get update -qq
  [ ${#missing[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The ultracloud profile runs the product's own nix commands. Debian's nix-bin (12: nix 2.8, no
# daemon) without recommends: nix-setup-systemd would take over /etc/nix/nix.conf.
if ! command -v nix >/dev/null 2>&1; then
  echo "setup: apt-get install nix-bin (no nix on PATH)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nix-bin >/dev/null
fi
# Root builds. Debian's nix-bin is built with `build-users-group = nixbld`, but only
# nix-setup-systemd's postinst creates that group and its nixbld1..10 members (measured, Debian 12,
# nix 2.8.0: without them every `nix build` as root fails "the group 'nixbld' specified in
# 'build-users-group' does not exist"). Create them exactly as that postinst does, so that nix
# works as root with its own defaults, for the product's commands as for ucnb's tests, and builds
# run as unprivileged build users rather than as root. (No nix-users group: it only guards the
# daemon's socket, and there is no daemon here.)
if command -v nix >/dev/null 2>&1 && ! getent group nixbld >/dev/null; then
  echo "setup: nixbld group and build users (as Debian's nix-setup-systemd would)"
  groupadd --force --system nixbld
  for n in $(seq 1 10); do
    id "nixbld$n" >/dev/null 2>&1 || useradd --system --comment "Nix build user $n" --home-dir /var/empty \
      --gid nixbld --groups nixbld --no-user-group --shell "$(command -v nologin || echo /usr/sbin/nologin)" \
      "nixbld$n"
  done
fi

# A fresh nix-bin has no store until its first build; create it now, so that the tests (and a
# first `ucnb run --profile ultracloud`) find the writable /nix/store they check for.
if command -v nix >/dev/null 2>&1 && [ ! -d /nix/store ]; then
  echo "setup: nix store (/nix/store)"
  nix-store --init
fi

PYTHON=${PYTHON:-python3}
stamp=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.ucnb-setup 2>/dev/null)" != "$stamp" ]; then
  echo "setup: virtualenv (.venv) with requirements.lock"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.lock
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  .venv/bin/python -m ipykernel install --sys-prefix --name ucnb --display-name "Python (ucnb)" >/dev/null
  echo "$stamp" > .venv/.ucnb-setup
fi

# ucnb's own bytecode, as pip writes it for the packages it installs: the editable install leaves
# the tree's modules to be compiled again at every import where PYTHONDONTWRITEBYTECODE is set,
# about 0.05 s of every `ucnb` start here. Files already compiled and unchanged are skipped.
.venv/bin/python -m compileall -q ucnb

.venv/bin/ucnb host up >/dev/null
