# Shared by the installer and the installed system (sourced; busybox sh).
# Markers go to the console and, once MARKER_LOG names a file, to that log too (the installed
# host keeps its markers on disk: hardware-smoke capture reads them over SSH).
marker() {
  echo "ULTRACLOUD_MARKER $1" > /dev/ttyS0
  [ -z "$MARKER_LOG" ] || echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) ULTRACLOUD_MARKER $1" >> "$MARKER_LOG"
}

early_mounts() {
  /bin/busybox --install -s /bin
  mount -t proc proc /proc
  mount -t sysfs sysfs /sys
  mount -t devtmpfs devtmpfs /dev
  mkdir -p /dev/pts /run /tmp
  mount -t devpts devpts /dev/pts
  mount -t tmpfs tmpfs /run
  mount -t tmpfs tmpfs /tmp
  # vfat + code pages: an ESP (no kernel module autoloading here: there is no /sbin/modprobe).
  for m in virtio_pci virtio_blk virtio_net virtio_rng vfat nls_cp437 nls_ascii; do modprobe "$m" 2>/dev/null; done
}

# No udev: stable selectors from the virtio serials, named as udev names them (disks and partitions).
disk_links() {
  mkdir -p /dev/disk/by-id
  for tries in 1 2 3 4 5 6 7 8 9 10; do ls /sys/block/vd* >/dev/null 2>&1 && break; sleep 0.1; done
  for dev in /sys/block/vd*; do
    [ -r "$dev/serial" ] || continue
    serial=$(cat "$dev/serial")
    [ -n "$serial" ] || continue
    ln -sf "../../${dev##*/}" "/dev/disk/by-id/virtio-$serial"
    for part in "$dev"/"${dev##*/}"[0-9]*; do
      [ -e "$part" ] || continue
      n=${part##*/}; ln -sf "../../$n" "/dev/disk/by-id/virtio-$serial-part${n#${dev##*/}}"
    done
  done
}

# json_get KEY FILE: the value of KEY (string unquoted, number, or empty for null) in the deployer's
# JSON, which puts one key per line (json.dumps with indent).
json_get() {
  line=$(grep -m 1 "^ *\"$1\": " "$2") || return 0
  v=${line#*\": }; v=${v%,}
  case "$v" in
    null) v= ;;
    \"*\") v=${v#\"}; v=${v%\"}; v=$(printf '%s' "$v" | sed 's/\\"/"/g; s/\\\\/\\/g') ;;
  esac
  printf '%s\n' "$v"
}

# fetch OUT URL [wget options]: one request. HTTPS through GNU wget (busybox wget cannot verify a
# certificate), verifying against $CA_FILE when set and against nothing otherwise (the guest has
# no trust store); plain HTTP (the CA's publication, the binary cache: integrity by checksum)
# through busybox wget, static and so much cheaper to start under TCG. Messages go to OUT.err for
# http_reason; FETCH_TIMEOUT bounds it (busybox wget's own -T segfaults: LAB-NOTES).
fetch() {
  out=$1 url=$2; shift 2
  case "$url" in
    https://*) ;;
    *) timeout "${FETCH_TIMEOUT:-60}" /bin/wget -q -S -O "$out" "$@" "$url" 2>"$out.err"; return ;;
  esac
  # ChaCha20 first: no AES instructions under TCG (nor on many small boards), where AES-GCM in
  # software is several times slower; the deployer honours the client's ChaCha preference.
  set -- --no-hsts --no-config -nv -S --tries=1 --timeout=10 -O "$out" \
    --ciphers=NORMAL:-CIPHER-ALL:+CHACHA20-POLY1305:+AES-256-GCM:+AES-128-GCM "$@"
  [ -z "$CA_FILE" ] || set -- "--ca-certificate=$CA_FILE" "$@"
  timeout "${FETCH_TIMEOUT:-60}" /usr/bin/wget "$@" "$url" 2>"$out.err"
}

# http_reason STDERR_FILE: a marker-safe word for why a fetch failed.
http_reason() {
  if grep -qi "certificate" "$1"; then echo certificate-verification; return; fi
  code=$(sed -n 's/.*HTTP\/1\.[01] \([0-9][0-9][0-9]\).*/\1/p' "$1" | tail -n 1)
  case "$code" in
    401) echo unauthorized ;; 403) echo forbidden ;; 404) echo not-found ;; 409) echo conflict ;;
    "") if grep -qiE "GnuTLS|SSL|TLS" "$1"; then echo tls-handshake
        elif grep -qi refused "$1"; then echo connection-refused; else echo unreachable; fi ;;
    *) echo "http-$code" ;;
  esac
}

# tls_detail STDERR_FILE: the TLS client's own words (one line), for the console next to the marker.
tls_detail() {
  grep -iE "certificate|GnuTLS|SSL|TLS|ERROR" "$1" | head -n 3 | tr '\n' ' ' | tr -s ' '
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
