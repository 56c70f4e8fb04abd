#!/usr/bin/env bash
# Runs a focused part of hako's tests on a pure cgroup-v2 kernel: a QEMU (TCG) VM booting
# Debian's own kernel with `cgroup_no_v1=all`, the built tree shared read-only by virtio-9p
# at the same path as on the host (the test binaries name the hako binary by its path).
#
# The suite: the jail's memory and pids limits in spawn and zygote mode, the per-run peak
# memory in zygote mode, the zygote's leak tests, the server in zygote mode with the Node
# pool, a server shaped like a container (read-only cgroup2, own cgroup namespace, no
# CAP_SYS_ADMIN) that mounts its own cgroup2, and a check that no run cgroup or process is
# left behind. The guest prints one
# `hako-vm: RESULT pass|fail` line on its serial console, which this script parses.
#
# The kernel, a debootstrap root filesystem and a small initramfs are cached in
# /var/cache/hako-ci/vm (made once per machine). Every step has a bound. Runs as root.
# Needs a built workspace (`cargo build --workspace`): the test binaries are built here.
#
#   HAKO_VM_KERNEL_SUITE   Debian suite of the kernel (default bookworm-backports: 6.12,
#                          which resets memory.peak per open file; bookworm gives 6.1)
#   HAKO_VM_TIMEOUT        seconds the guest may run (default 1800)
#   HAKO_VM_TESTS          tests to run instead of the suite, "binary:exact-name" words
#   HAKO_VM_CONTAINER      1: instead of the suite, the image HAKO_TEST_IMAGE (built on the
#                          host, e.g. by scripts/container-test.sh) under podman and Docker in
#                          the guest with the documented options and no cgroup bind (hako
#                          mounts its own cgroup2), checked by scripts/vm-container-checks.py:
#                          Dify templates, attacks, SSRF, `hako doctor`
#                          (scripts/vm-container-job.sh)
#   HAKO_VM_CONTAINER_PARTS  what the container job runs (default "podman setfcap docker
#                          bench pod": the checks under podman, `hako doctor` without
#                          CAP_SETFCAP, which must fall back to the memory guard, the checks
#                          under Docker; "bench" adds, per engine, `hako bench` against the
#                          container and against the image's binary run on the guest itself;
#                          "pod" runs the rendered Kubernetes pod spec's container with the
#                          pod's user namespace, scripts/kube-pod-to-podman.py); "kube" adds
#                          the pod spec under `podman kube play`, which does not pass with
#                          Debian 12's podman 4.3 (docs/deploy.md)
#
#   scripts/vm-cgroup2-test.sh --prepare   only fetches and builds the cached guest
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

CACHE=${HAKO_CI_CACHE:-/var/cache/hako-ci}/vm
KERNEL_SUITE=${HAKO_VM_KERNEL_SUITE:-bookworm-backports}
VM_TIMEOUT=${HAKO_VM_TIMEOUT:-1800}
# Bump when the root filesystem (ROOTFS_REV) or initramfs (INITRD_REV) recipe changes.
ROOTFS_REV=3
INITRD_REV=4

log() { printf 'vm-cgroup2-test: %s\n' "$*"; }
die() { log "FAILED: $*"; exit 1; }
bounded() { local secs=$1; shift; timeout --kill-after=10 "$secs" "$@"; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, mkfs, and the tests run as root in the guest)"

# The focused suite, as "test-binary:exact-test-name". TCG makes CPU-bound work 13-20x
# slower, so it covers the v2-specific paths: limits, accounting, clean-up, warm workers.
SUITE=(
  jail:cli_spawn::huge_allocation_fails_and_gradual_allocation_hits_the_memory_limit
  jail:cli_spawn::thread_bomb_stops_at_the_pids_limit
  jail:server_zygote::huge_allocation_fails_and_gradual_allocation_hits_the_memory_limit
  jail:server_zygote::thread_bomb_stops_at_the_pids_limit
  jail:server_zygote::python_and_node_print
  warm:a_run_leaves_nothing_running_for_the_next_one
  warm:a_run_holding_every_pid_does_not_cost_the_zygote
  warm:each_run_reports_its_own_peak_memory
  # The egress guard from a hako holding only a container's capabilities (no CAP_SYS_ADMIN):
  # CLI spawn, server zygote with the Node pool, server spawn.
  network:proxy_runs_need_no_cap_sys_admin_in_any_mode
  cgroup_private:a_read_only_cgroup2_gets_a_private_mount_and_per_run_cgroups
)
# shellcheck disable=SC2206
[ -n "${HAKO_VM_TESTS:-}" ] && SUITE=(${HAKO_VM_TESTS})

backports_source() {
  if ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding bookworm-backports to apt's sources"
    cat >/etc/apt/sources.list.d/hako-ci-backports.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    APT_UPDATED=""
  fi
}

apt_update() {
  [ -n "${APT_UPDATED:-}" ] && return 0
  bounded 600 apt-get update -qq
  APT_UPDATED=1
}

install_tools() {
  export DEBIAN_FRONTEND=noninteractive
  local qemu_release=()
  # qemu-system-x86 must match qemu-utils' version where qemu-utils comes from backports.
  if dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo; then
    qemu_release=(-t bookworm-backports)
  fi
  [ "$KERNEL_SUITE" = bookworm-backports ] || [ "${#qemu_release[@]}" -gt 0 ] && backports_source
  local missing=()
  command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v depmod >/dev/null || missing+=(kmod)
  command -v cpio >/dev/null || missing+=(cpio)
  [ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx modprobe || missing+=(busybox-static)
  command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "installing ${missing[*]}"
  apt_update
  bounded 900 apt-get install -y -qq --no-install-recommends "${qemu_release[@]}" "${missing[@]}" >/dev/null
}

# Debian's kernel from $KERNEL_SUITE: vmlinuz and modules, extracted from the .deb.
fetch_kernel() {
  apt_update
  local pkg
  pkg=$(apt-cache depends -t "$KERNEL_SUITE" linux-image-amd64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$pkg" ] || die "no linux-image-amd64 in $KERNEL_SUITE"
  KDIR=$CACHE/$pkg
  if [ ! -f "$KDIR/done" ]; then
    log "downloading $pkg ($KERNEL_SUITE)"
    rm -rf "$KDIR" && mkdir -p "$KDIR/deb"
    (cd "$KDIR/deb" && bounded 600 apt-get download -t "$KERNEL_SUITE" "$pkg" 2>/dev/null)
    dpkg-deb -x "$KDIR"/deb/*.deb "$KDIR/root"
    rm -rf "$KDIR/deb"
    touch "$KDIR/done"
  fi
  KVER=$(ls "$KDIR/root/lib/modules")
  VMLINUZ=$(echo "$KDIR"/root/boot/vmlinuz-*)
}

# A Debian root filesystem (ext4 image; QEMU writes go to a throw-away overlay) holding
# python3, the kernel's modules, the host's Node.js binary and the guest's init.
make_rootfs() {
  ROOTFS=$CACHE/rootfs-$KVER-r$ROOTFS_REV.img
  [ -s "$ROOTFS" ] && return 0
  local dir=$CACHE/rootfs.tmp
  rm -rf "$dir"
  log "debootstrap bookworm for the guest (once per machine)"
  bounded 1200 debootstrap --variant=minbase \
    --include=python3,kmod,libstdc++6,ca-certificates,iproute2,procps \
    bookworm "$dir" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log"; die "debootstrap failed"; }
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  mkdir -p "$dir/lib/modules"
  cp -a "$KDIR/root/lib/modules/$KVER" "$dir/lib/modules/"
  chroot "$dir" depmod "$KVER"
  # Node.js as the tests use it on the host (a self-contained build at /usr/bin/node).
  if [ -x /usr/bin/node ]; then install -m 0755 /usr/bin/node "$dir/usr/bin/node"; fi
  printf '127.0.0.1 localhost\n::1 localhost\n' >"$dir/etc/hosts"
  echo hako-vm >"$dir/etc/hostname"
  install -m 0755 /dev/stdin "$dir/sbin/hako-vm-init" <<'EOF'
#!/bin/bash
# Guest init: mounts, the shared trees, then the job; prints the result on the console.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
ip link set lo up
for m in 9pnet_virtio 9p overlay; do modprobe "$m"; done
repo=$(sed -n 's/.*hako.repo=\([^ ]*\).*/\1/p' /proc/cmdline)
mkdir -p "$repo" /job
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 repo "$repo"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 job /job
cd "$repo"
bash /job/job.sh </dev/null 2>&1 | tee /job/guest.log
echo "hako-vm: RESULT $(cat /job/result 2>/dev/null || echo fail)"
sync
echo o >/proc/sysrq-trigger
sleep 5
EOF
  log "making the guest's disk image"
  bounded 600 mkfs.ext4 -q -F -L hako-vm -d "$dir" "$ROOTFS.tmp" 3G
  mv "$ROOTFS.tmp" "$ROOTFS"
  rm -rf "$dir"
}

# The initramfs: busybox and the modules that mount the ext4 root on virtio-blk.
make_initramfs() {
  INITRD=$CACHE/initrd-$KVER-r$INITRD_REV.gz
  [ -s "$INITRD" ] && return 0
  local dir=$CACHE/initrd.tmp ko
  rm -rf "$dir"
  mkdir -p "$dir"/{bin,dev,proc,sys,newroot,lib/modules/"$KVER"}
  cp /bin/busybox "$dir/bin/busybox"
  # The modules (and what they need, which differs between kernels) that are not built in.
  depmod -b "$KDIR/root" "$KVER"
  local modules
  modules=$(for m in virtio_pci virtio_blk ext4 crc32c_generic; do
    modprobe -d "$KDIR/root" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
  done | sort -u)
  for ko in $modules; do
    local rel=${ko#"$KDIR/root/lib/modules/$KVER/"}
    mkdir -p "$dir/lib/modules/$KVER/$(dirname "$rel")"
    case "$ko" in
      *.xz) xz -dc "$ko" >"$dir/lib/modules/$KVER/${rel%.xz}" ;;
      *.zst) zstd -qdc "$ko" >"$dir/lib/modules/$KVER/${rel%.zst}" ;;
      *) cp "$ko" "$dir/lib/modules/$KVER/$rel" ;;
    esac
  done
  cp "$KDIR/root/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$dir/lib/modules/$KVER/"
  depmod -b "$dir" "$KVER"
  cat >"$dir/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev
for m in virtio_pci crc32c_generic virtio_blk ext4; do modprobe "$m" 2>/dev/null || grep -q "/$m.ko" "/lib/modules/$(uname -r)/modules.builtin"; done
for _ in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 0.2; done
mount -t ext4 /dev/vda /newroot || { echo "hako-vm: RESULT fail (no root)"; poweroff -f; }
umount /proc
exec switch_root /newroot /sbin/hako-vm-init
EOF
  chmod 0755 "$dir/init"
  (cd "$dir" && find . | cpio -o -H newc --quiet | gzip -1 >"$INITRD.tmp")
  mv "$INITRD.tmp" "$INITRD"
  rm -rf "$dir"
}

# Test binaries (built on the host) and the job the guest runs.
make_job() {
  log "building hako, its zygote library and the test binaries"
  bounded 1800 cargo build --locked -p hako -p hako-zygote 2>&1 | tail -3
  local json
  json=$(bounded 1800 cargo test --no-run --locked -p hako --test jail --test warm --test network --test cgroup_private \
    --message-format=json 2>/dev/null)
  JOB=$(mktemp -d /tmp/hako-vm-job.XXXXXX)
  local binaries
  binaries=$(printf '%s\n' "$json" | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')
  {
    echo 'set -u'
    # TCG runs Python 13-20x slower: runs without an explicit timeout get a minute.
    echo 'export WORKER_TIMEOUT=60'
    # The guest has no network: pip fails at once instead of retrying an index it cannot
    # reach, so runs do not wait for a package set that cannot be built.
    echo 'export PIP_NO_INDEX=1'
    echo 'export HAKO_TEST_DEADLINE_SCALE=5'
    echo 'passed=0; failed=0'
    echo 'say() { echo "hako-vm: $*"; }'
    echo 'say "kernel $(uname -r), cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"'
    echo '[ -d /sys/fs/cgroup/memory ] && say "cgroup v1 memory hierarchy present" && failed=$((failed + 1))'
    echo "target/debug/hako doctor 2>&1 | sed 's/^/hako-vm: doctor: /'"
    local entry name test bin
    for entry in "${SUITE[@]}"; do
      name=${entry%%:*}; test=${entry#*:}
      bin=$(printf '%s\n' "$binaries" | awk -v n="$name" '$1 == n {print $2; exit}')
      [ -n "$bin" ] || die "no test binary $name"
      cat <<EOF
t0=\$(date +%s)
if timeout 600 $bin --exact '$test' --test-threads 1 >/tmp/test.log 2>&1 && grep -q '^test result: ok. 1 passed' /tmp/test.log; then
  passed=\$((passed + 1)); say "ok     $name $test (\$((\$(date +%s) - t0)) s)"
else
  failed=\$((failed + 1)); say "FAILED $name $test (\$((\$(date +%s) - t0)) s)"; sed 's/^/    /' /tmp/test.log | tail -40
fi
EOF
    done
    # Nothing left behind: no run cgroup under the servers' parents, no process but ours.
    cat <<'EOF'
left=$(find /sys/fs/cgroup -mindepth 1 -type d -name 'run-*' | wc -l)
if [ "$left" -eq 0 ]; then passed=$((passed + 1)); say "ok     no run cgroup left"; else
  failed=$((failed + 1)); say "FAILED $left run cgroups left:"; find /sys/fs/cgroup -type d -name 'run-*'; fi
stray=$(ps -eo comm= | grep -cE '^(hako|python3|node)$' || true)
if [ "$stray" -eq 0 ]; then passed=$((passed + 1)); say "ok     no hako, python3 or node process left"; else
  failed=$((failed + 1)); say "FAILED processes left:"; ps -eo pid,comm,args | grep -E 'hako|python3|node'; fi
say "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && echo pass >/job/result || echo fail >/job/result
EOF
  } >"$JOB/job.sh"
}

boot() {
  local console=$JOB/console.log
  log "booting $KVER under QEMU TCG (guest bound: $VM_TIMEOUT s)"
  local t0=$SECONDS
  bounded "$VM_TIMEOUT" qemu-system-x86_64 \
    -machine q35 -accel tcg,thread=multi -cpu max -smp 2 -m 3072 \
    -kernel "$VMLINUZ" -initrd "$INITRD" \
    -append "console=ttyS0 loglevel=3 cgroup_no_v1=all panic=-1 hako.repo=$REPO" \
    -drive "file=$ROOTFS,format=raw,if=virtio,snapshot=on" \
    -virtfs "local,path=$REPO,mount_tag=repo,security_model=none,readonly=on" \
    -virtfs "local,path=$JOB,mount_tag=job,security_model=none" \
    -nic none -display none -monitor none -serial "file:$console" -no-reboot \
    || log "qemu exited with $? (a bounded guest is killed at $VM_TIMEOUT s)"
  grep -a '^hako-vm: ' "$console" || true
  log "guest wall time: $((SECONDS - t0)) s"
  if ! grep -aq '^hako-vm: RESULT pass' "$console"; then
    log "console (last 60 lines):"; tail -60 "$console"
    die "the cgroup-v2 suite did not pass"
  fi
}

cleanup() { [ -n "${JOB:-}" ] && rm -rf "$JOB"; return 0; }

# The guest's disk plus Debian's podman, Docker and runc (HAKO_VM_CONTAINER=1), made once
# from the base disk with the host's apt (the guest has no network).
PODMAN_REV=2
make_container_rootfs() {
  local base=$ROOTFS mnt
  ROOTFS=$CACHE/rootfs-$KVER-r$ROOTFS_REV-podman-r$PODMAN_REV.img
  [ -s "$ROOTFS" ] && return 0
  log "adding podman and Docker to a copy of the guest's disk (once per machine)"
  cp --sparse=always "$base" "$ROOTFS.tmp"
  truncate -s 6G "$ROOTFS.tmp"
  e2fsck -pf "$ROOTFS.tmp" >/dev/null || true
  resize2fs -f "$ROOTFS.tmp" >/dev/null
  mnt=$(mktemp -d /tmp/hako-vm-rootfs.XXXXXX)
  mount -o loop "$ROOTFS.tmp" "$mnt"
  mount --bind /proc "$mnt/proc" && mount --bind /dev "$mnt/dev"
  cp /etc/resolv.conf "$mnt/etc/resolv.conf"
  local ok=0
  chroot "$mnt" bash -c 'export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends podman runc conmon \
      uidmap golang-github-containers-common containernetworking-plugins catatonit iptables \
      docker.io containerd tini >/dev/null
    apt-get clean; rm -rf /var/lib/apt/lists/*' && ok=1
  umount "$mnt/proc" "$mnt/dev" "$mnt"
  rmdir "$mnt"
  [ "$ok" = 1 ] || { rm -f "$ROOTFS.tmp"; die "installing podman and Docker into the guest's disk failed"; }
  mv "$ROOTFS.tmp" "$ROOTFS"
}

# The image also in the guest's Docker data root: a dockerd of the host's (the same Debian
# docker.io) with only that data root, its own socket and exec root, no bridge, no iptables.
load_into_guest_docker() {
  local mnt=$1 tar=$2 run=$JOB/dockerd pid ok=0
  command -v dockerd >/dev/null || { log "no dockerd on the host (Debian's docker.io)"; return 1; }
  local docker=(docker -H "unix://$run/docker.sock")
  mkdir -p "$run"
  dockerd -H "unix://$run/docker.sock" --pidfile "$run/dockerd.pid" --exec-root "$run/exec" \
    --data-root "$mnt/var/lib/docker" --bridge none --iptables=false --ip-forward=false \
    --exec-opt native.cgroupdriver=cgroupfs >"$run/dockerd.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    bounded 10 "${docker[@]}" version >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  bounded 600 "${docker[@]}" load -q -i "$tar" >/dev/null && ok=1
  kill -TERM "$pid" 2>/dev/null || true
  (sleep 30; kill -KILL "$pid" 2>/dev/null) &
  wait "$pid" || true
  [ "$ok" = 1 ] || { tail -20 "$run/dockerd.log"; log "docker load into the guest's disk failed"; return 1; }
}

# The image (saved from the host's podman) and the guest's container job.
make_container_job() {
  local image=${HAKO_TEST_IMAGE:-localhost/hako:container-test}
  JOB=$(mktemp -d /tmp/hako-vm-job.XXXXXX)
  # The image goes into a copy of the guest's disk at the host's speed (a `podman load`
  # under TCG takes longer than the whole guest may run).
  log "loading $image into a copy of the guest's disk"
  bounded 600 podman save -q --format docker-archive -o "$JOB/image.tar" "$image" \
    || die "podman save $image failed (build it with scripts/container-test.sh)"
  cp --sparse=always "$ROOTFS" "$JOB/disk.img"
  local mnt ok=0
  mnt=$(mktemp -d /tmp/hako-vm-rootfs.XXXXXX)
  mount -o loop "$JOB/disk.img" "$mnt"
  mount --bind /proc "$mnt/proc" && mount --bind /dev "$mnt/dev" && mount --bind /sys "$mnt/sys" &&
    mount -t tmpfs tmpfs "$mnt/run"
  local parts=${HAKO_VM_CONTAINER_PARTS:-podman setfcap docker bench pod}
  cp "$JOB/image.tar" "$mnt/var/tmp/image.tar"
  chroot "$mnt" podman --events-backend file load -q -i /var/tmp/image.tar >/dev/null && ok=1
  rm -f "$mnt/var/tmp/image.tar"
  case " $parts " in *" docker "*) [ "$ok" = 1 ] && { load_into_guest_docker "$mnt" "$JOB/image.tar" || ok=0; } ;; esac
  rm -f "$JOB/image.tar"
  umount "$mnt/run" "$mnt/sys" "$mnt/proc" "$mnt/dev" "$mnt"
  rmdir "$mnt"
  [ "$ok" = 1 ] || die "loading the image into the guest's disk failed"
  ROOTFS=$JOB/disk.img
  case " $parts " in
    *" kube "* | *" pod "*)
      local kubectl=kubectl python=python3
      command -v kubectl >/dev/null || kubectl=${HAKO_CI_CACHE:-/var/cache/hako-ci}/lint-venv/bin/kubectl
      "$kubectl" kustomize deploy/kubernetes >"$JOB/rendered.yaml" || die "kubectl kustomize failed"
      # The pod's container as a podman command line (PyYAML: the lint venv's, or the host's).
      [ -x "${HAKO_CI_CACHE:-/var/cache/hako-ci}/lint-venv/bin/python3" ] &&
        python=${HAKO_CI_CACHE:-/var/cache/hako-ci}/lint-venv/bin/python3
      "$python" scripts/kube-pod-to-podman.py "$JOB/rendered.yaml" "$JOB/pod" --repo "$REPO" \
        --seen-as /job/pod || die "translating the pod spec failed"
      # The guest has no Dify ssrf_proxy to chain to: the guard connects itself.
      sed -i '/^proxy:$/,/^[^ ]/{/^proxy:$/d;/^  /d}' "$JOB/pod/volumes/conf/config.yaml"
      ;;
  esac
  {
    printf 'IMAGE=%q\n' "$image"
    printf 'PARTS=%q\n' "$parts"
    cat scripts/vm-container-job.sh
  } >"$JOB/job.sh"
}

main() {
  local started=$SECONDS
  trap cleanup EXIT
  install_tools
  mkdir -p "$CACHE"
  fetch_kernel
  make_rootfs
  make_initramfs
  if [ "${1:-}" = --prepare ]; then
    [ "${HAKO_VM_CONTAINER:-0}" = 1 ] && make_container_rootfs
    log "prepared in $((SECONDS - started)) s"
    return 0
  fi
  if [ "${HAKO_VM_CONTAINER:-0}" = 1 ]; then
    make_container_rootfs
    make_container_job
  else
    make_job
  fi
  boot
  log "passed in $((SECONDS - started)) s"
}

main "$@"
